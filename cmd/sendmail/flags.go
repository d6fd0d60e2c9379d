package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/queue"
	"github.com/exo-sendmail/exo-sendmail/submission"
)

// mode is what this run of sendmail does.
type mode int

const (
	modeSubmit  mode = iota // -bm: queue the message on stdin (the default)
	modeMailq               // -bp, mailq: list the queue
	modeAliases             // -bi, -I, newaliases: check the aliases
	modeVerify              // -bv: say what would become of each recipient
	modeSMTP                // -bs: SMTP on stdin and stdout
	modeFlush               // -q[interval]: run the queue
	modeDaemon              // -bd: the flusher in the foreground
)

// cmdline is the command line, understood.
type cmdline struct {
	mode     mode
	config   string        // -C
	interval time.Duration // -q30m: flush every interval; 0: once
	verbose  bool          // -v
	sub      submission.Options
	notify   string   // -N, for every recipient
	args     []string // the recipient arguments, as given
	warnings []string // accepted but worth saying
}

// usageError is a command line that cannot be obeyed (sysexits EX_USAGE).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// argKind says where an option letter finds its value.
type argKind int

const (
	noValue       argKind = iota // a flag; letters group: -ti
	value                        // the rest of the word, else the next word: -fuser, -f user
	optionalValue                // the rest of the word only, maybe empty: -q, -q30m
)

type option struct {
	arg argKind
	set func(c *cmdline, v string) error
}

func ignore(*cmdline, string) error { return nil }

// options is the sendmail grammar as Postfix's sendmail accepts it. Letters
// that mean nothing to a queue-and-relay sendmail are accepted and ignored:
// callers (cron, mailx, PHP) pass them and must never fail because of them.
var options = [128]option{
	'A': {value, ignore},      // -Am, -Ac: which config file sendmail 8 would use
	'B': {value, setBodyType}, // -B 7BIT | 8BITMIME
	'C': {value, setConfig},   // -C file
	'F': {value, setFullName}, // -F name
	'G': {noValue, ignore},    // gateway submission
	'I': {noValue, setMode(modeAliases)},
	'L': {value, ignore},         // -L label (syslog)
	'N': {value, setNotify},      // -N never | success,failure,delay
	'O': {value, setLongOption},  // -O option=value
	'R': {value, setRet},         // -R full | hdrs
	'U': {noValue, ignore},       // initial user submission
	'V': {value, setEnvID},       // -V envid
	'X': {value, ignore},         // -X logfile: never written
	'b': {value, setBMode},       // -bm -bp -bi -bv -bs -bd
	'c': {noValue, ignore},       // sendmail 8: do not connect to expensive mailers
	'd': {optionalValue, ignore}, // -d0.1: debugging
	'e': {value, ignore},         // -em -ep -eq -ew -ee: how errors are reported
	'f': {value, setSender},      // -f sender
	'h': {value, ignore},         // -h hops
	'i': {noValue, setDotIsData}, // a lone "." is not the end
	'm': {noValue, ignore},       // me too
	'n': {noValue, ignore},       // no aliasing (aliases apply at delivery)
	'o': {value, setShortOption}, // -oi, -o i, -oem, -odi ...
	'p': {value, ignore},         // -p protocol:host
	'q': {optionalValue, setQueueRun},
	'r': {value, setSender}, // obsolete -f
	's': {noValue, ignore},  // sendmail 8: save From lines
	't': {noValue, setFromHeaders},
	'v': {noValue, setVerbose},
	'x': {noValue, ignore},
}

// parseArgs reads the arguments after the program name. Options come first
// (grouped or not, values glued or separate); the first word that is not an
// option, or "--", starts the recipients, as with Postfix. An unknown
// letter is a warning, never a failure.
func parseArgs(args []string, start mode) (*cmdline, error) {
	c := &cmdline{mode: start}
	i := 0
words:
	for ; i < len(args); i++ {
		w := args[i]
		switch {
		case w == "--" || w == "-":
			i++
			break words
		case len(w) < 2 || w[0] != '-':
			break words
		}
		for j := 1; j < len(w); j++ {
			letter := w[j]
			opt := option{}
			if letter < 128 {
				opt = options[letter]
			}
			if opt.set == nil {
				// The rest of the word is most likely its value (-M, -Y...).
				c.warnings = append(c.warnings, fmt.Sprintf("ignoring unknown option %s", strconv.Quote(w[j:])))
				break
			}
			v := ""
			switch opt.arg {
			case optionalValue:
				v, j = w[j+1:], len(w)
			case value:
				v, j = w[j+1:], len(w)
				if v == "" {
					if i+1 == len(args) {
						return c, usagef("option -%c needs a value", letter)
					}
					i++
					v = args[i]
				}
			}
			if err := opt.set(c, v); err != nil {
				return c, err
			}
		}
	}
	c.args = args[i:]
	c.sub.Notify = c.notify
	for _, a := range c.args {
		c.sub.Recipients = append(c.sub.Recipients, queue.Recipient{Addr: a, Notify: c.notify})
	}
	return c, nil
}

func setMode(m mode) func(*cmdline, string) error {
	return func(c *cmdline, _ string) error {
		c.mode = m
		return nil
	}
}

func setBMode(c *cmdline, v string) error {
	switch v {
	case "m":
		c.mode = modeSubmit
	case "p":
		c.mode = modeMailq
	case "i":
		c.mode = modeAliases
	case "v":
		c.mode = modeVerify
	case "s":
		c.mode = modeSMTP
	case "d", "D", "l":
		c.mode = modeDaemon
	default:
		return usagef("unsupported mode -b%s (supported: -bm -bp -bi -bv -bs -bd)", v)
	}
	return nil
}

func setBodyType(c *cmdline, v string) error {
	switch strings.ToUpper(v) {
	case "8BITMIME":
		c.sub.Body8BitMIME = true
	case "7BIT":
		c.sub.Body8BitMIME = false
	default:
		return usagef("-B %s: the body type is 7BIT or 8BITMIME", v)
	}
	return nil
}

func setConfig(c *cmdline, v string) error {
	c.config = v
	return nil
}

func setFullName(c *cmdline, v string) error {
	c.sub.FullName = v
	return nil
}

func setSender(c *cmdline, v string) error {
	c.sub.Sender, c.sub.SenderGiven = v, true
	return nil
}

func setDotIsData(c *cmdline, _ string) error {
	c.sub.DotIsData = true
	return nil
}

func setFromHeaders(c *cmdline, _ string) error {
	c.sub.FromHeaders = true
	return nil
}

func setVerbose(c *cmdline, _ string) error {
	c.verbose = true
	return nil
}

// setShortOption takes sendmail's -o<letter><value>: only -oi means
// something here; -oem, -odi, -odb, -odq, -om, -oQ... are accepted.
func setShortOption(c *cmdline, v string) error {
	if v == "i" {
		c.sub.DotIsData = true
	}
	return nil
}

// setLongOption takes -O Name=value: only IgnoreDots means something here.
func setLongOption(c *cmdline, v string) error {
	name, val, hasVal := strings.Cut(v, "=")
	if strings.EqualFold(strings.TrimSpace(name), "IgnoreDots") {
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		c.sub.DotIsData = !hasVal || err != nil || b
	}
	return nil
}

func setNotify(c *cmdline, v string) error {
	var list []string
	for _, n := range strings.Split(strings.ToUpper(v), ",") {
		switch n = strings.TrimSpace(n); n {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
			list = append(list, n)
		default:
			c.warnings = append(c.warnings, fmt.Sprintf("ignoring -N %s: want never, or one or more of success,failure,delay", strconv.Quote(v)))
			return nil
		}
	}
	for _, n := range list {
		if n == "NEVER" && len(list) > 1 {
			c.warnings = append(c.warnings, fmt.Sprintf("ignoring -N %s: never cannot be combined", strconv.Quote(v)))
			return nil
		}
	}
	c.notify = strings.Join(list, ",")
	return nil
}

func setRet(c *cmdline, v string) error {
	switch r := strings.ToUpper(v); r {
	case "FULL", "HDRS":
		c.sub.Ret = r
	default:
		c.warnings = append(c.warnings, fmt.Sprintf("ignoring -R %s: want full or hdrs", strconv.Quote(v)))
	}
	return nil
}

// setEnvID takes the DSN envelope ID: printable ASCII, at most 100
// characters (RFC 3461).
func setEnvID(c *cmdline, v string) error {
	if len(v) > 100 {
		return usagef("-V: the envelope ID is longer than 100 characters")
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return usagef("-V %s: the envelope ID must be printable ASCII without spaces or line breaks", strconv.Quote(v))
		}
	}
	c.sub.EnvID = v
	return nil
}

// setQueueRun takes -q (run the queue once), -q30m or -q1h30m (every
// interval; a bare number is minutes, as in sendmail 8) and the selection
// forms -qR, -qS, -qI, -q!..., which run the whole queue once.
func setQueueRun(c *cmdline, v string) error {
	c.mode, c.interval = modeFlush, 0
	if v == "" || strings.ContainsRune("RSIL!QfGp", rune(v[0])) {
		return nil
	}
	d, err := parseInterval(v)
	if err != nil {
		return usagef("-q%s: %v", v, err)
	}
	c.interval = d
	return nil
}

var errInterval = errors.New("want an interval such as 30m, 1h or 1h30m")

// parseInterval reads sendmail's time syntax: numbers with units s, m, h,
// d, w; a number without a unit is minutes.
func parseInterval(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	var total time.Duration
	for s != "" {
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		if n == 0 || n > 4 {
			return 0, errInterval
		}
		num, _ := strconv.Atoi(s[:n])
		unit := time.Minute
		if n < len(s) {
			u, ok := units[s[n]]
			if !ok {
				return 0, errInterval
			}
			unit, n = u, n+1
		}
		total += time.Duration(num) * unit
		if total > 366*24*time.Hour {
			return 0, errors.New("the interval is longer than a year")
		}
		s = s[n:]
	}
	return total, nil
}
