// Package conf reads exo-sendmail's TOML configuration: types, defaults,
// validation with file and line, sender routing and aliases.
//
// The main file holds no secret and may be world-readable: credentials are
// referenced by path (client_secret_file, private_key_file) and read only by
// the flusher.
package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the packaged configuration lives.
const DefaultPath = "/etc/exo-sendmail/sendmail.toml"

// Config is the whole configuration, defaults applied and validated.
type Config struct {
	Path           string // the file read; "" when the built-in defaults apply
	SpoolDir       string
	StateDir       string
	Hostname       string
	MaxMessageSize int64
	Queue          Queue
	AliasesFile    string
	Accounts       []Account
	Flusher        Flusher

	aliases     map[string][]string // [aliases], keys lower case
	fileAliases map[string][]string // aliases_file, read on first use
	fileLines   map[string]int      // where each of them starts
	fileErr     error
	fileRead    bool
}

// Queue holds the retry schedule.
type Queue struct {
	RetryMin time.Duration // first retry delay
	RetryMax time.Duration // the backoff never waits longer than this
	Lifetime time.Duration // after this the sender gets a DSN
}

// Flusher holds how the queue runner is started.
type Flusher struct {
	// AutoStart: after enqueueing, sendmail starts a detached flusher when
	// none runs. It takes effect only for a caller who owns the spool
	// (single-user mode); an installed system runs the systemd service.
	AutoStart bool
}

// Account is one Entra application and the mailbox it sends as.
type Account struct {
	Name                    string
	Tenant                  string
	ClientID                string
	ClientSecretFile        string
	CertificateFile         string
	PrivateKeyFile          string
	CertificatePasswordFile string
	Mailbox                 string
	Transport               string // "smtp" or "graph"
	Senders                 []string
	SendAs                  []string
	Cloud                   string
	TokenURL                string
	SMTPServer              string
	GraphURL                string
	CAFile                  string
	SMTPFallback            bool
	MaxConnections          int
	MessagesPerMinute       int
	RecipientsPerDay        int
	RecipientsPerMessage    int
}

// Error is a configuration error, with the file and line it was found on.
type Error struct {
	File string
	Line int // 0 when the problem has no single line
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.File == "":
		return e.Msg
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// file mirrors the TOML document; pointers tell "absent" from "zero".
type file struct {
	SpoolDir       string                    `toml:"spool_dir"`
	StateDir       string                    `toml:"state_dir"`
	Hostname       string                    `toml:"hostname"`
	MaxMessageSize string                    `toml:"max_message_size"`
	AliasesFile    string                    `toml:"aliases_file"`
	Queue          fileQueue                 `toml:"queue"`
	Flusher        fileFlusher               `toml:"flusher"`
	Aliases        map[string]toml.Primitive `toml:"aliases"`
	Account        []fileAccount             `toml:"account"`
}

type fileQueue struct {
	RetryMin string `toml:"retry_min"`
	RetryMax string `toml:"retry_max"`
	Lifetime string `toml:"lifetime"`
}

type fileFlusher struct {
	AutoStart *bool `toml:"auto_start"`
}

type fileAccount struct {
	Name                    string   `toml:"name"`
	Tenant                  string   `toml:"tenant"`
	ClientID                string   `toml:"client_id"`
	ClientSecretFile        string   `toml:"client_secret_file"`
	CertificateFile         string   `toml:"certificate_file"`
	PrivateKeyFile          string   `toml:"private_key_file"`
	CertificatePasswordFile string   `toml:"certificate_password_file"`
	Mailbox                 string   `toml:"mailbox"`
	Transport               string   `toml:"transport"`
	Senders                 []string `toml:"senders"`
	SendAs                  []string `toml:"send_as"`
	Cloud                   string   `toml:"cloud"`
	TokenURL                string   `toml:"token_url"`
	SMTPServer              string   `toml:"smtp_server"`
	GraphURL                string   `toml:"graph_url"`
	CAFile                  string   `toml:"ca_file"`
	SMTPFallback            bool     `toml:"smtp_fallback"`
	MaxConnections          *int     `toml:"max_connections"`
	MessagesPerMinute       *int     `toml:"messages_per_minute"`
	RecipientsPerDay        *int     `toml:"recipients_per_day"`
	RecipientsPerMessage    *int     `toml:"recipients_per_message"`
}

// Load reads the configuration. explicit is the -C argument ("" if none);
// without it $EXO_SENDMAIL_CONFIG is used, else DefaultPath. When the
// default file does not exist, the built-in per-user defaults apply. An
// explicitly named file must exist.
func Load(explicit string) (*Config, error) {
	path, named := explicit, explicit != ""
	if !named {
		if env := os.Getenv("EXO_SENDMAIL_CONFIG"); env != "" {
			path, named = env, true
		} else {
			path = DefaultPath
		}
	}
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !named {
		return userDefaults()
	}
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot read the configuration: " + errText(err)}
	}
	return Parse(path, src)
}

// userDefaults is the configuration of a user without a config file: a
// spool of their own under $XDG_STATE_HOME, no account.
func userDefaults() (*Config, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, &Error{Msg: "no configuration file (" + DefaultPath + ") and no home directory for a per-user spool: set EXO_SENDMAIL_CONFIG or HOME"}
		}
		base = filepath.Join(home, ".local", "state")
	}
	dir := filepath.Join(base, "exo-sendmail")
	c := defaults()
	c.Hostname = fqdn()
	c.SpoolDir = filepath.Join(dir, "spool")
	c.StateDir = filepath.Join(dir, "state")
	return c, nil
}

func defaults() *Config {
	return &Config{
		SpoolDir: "/var/spool/exo-sendmail",
		StateDir: "/var/lib/exo-sendmail",

		MaxMessageSize: 35 * 1000 * 1000,
		Queue:          Queue{RetryMin: time.Minute, RetryMax: time.Hour, Lifetime: 5 * 24 * time.Hour},
		Flusher:        Flusher{AutoStart: true},
		aliases:        map[string][]string{},
	}
}

// Parse reads a configuration from src; path names it in errors and
// anchors relative paths.
func Parse(path string, src []byte) (*Config, error) {
	var f file
	md, err := toml.Decode(string(src), &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: path, Line: pe.Position.Line, Msg: pe.Message}
		}
		return nil, &Error{File: path, Msg: err.Error()}
	}
	v := validator{path: path, src: src}
	for _, k := range md.Undecoded() {
		if len(k) >= 2 && k[0] == "aliases" {
			continue // alias names are free; their values are decoded below
		}
		v.fail(k, fmt.Sprintf("unknown key %q", k.String()))
	}
	c := defaults()
	c.Path = path
	dir := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if f.SpoolDir != "" {
		c.SpoolDir = abs(f.SpoolDir)
	}
	if f.StateDir != "" {
		c.StateDir = abs(f.StateDir)
	}
	if f.Hostname == "" {
		c.Hostname = fqdn()
	} else {
		c.Hostname = f.Hostname
		if strings.ContainsAny(f.Hostname, " \t\r\n@<>") {
			v.fail(toml.Key{"hostname"}, "hostname must be a host name such as web1.contoso.com")
		}
	}
	if f.MaxMessageSize != "" {
		n, err := ParseSize(f.MaxMessageSize)
		if err != nil {
			v.fail(toml.Key{"max_message_size"}, "max_message_size: "+err.Error())
		}
		c.MaxMessageSize = n
	}
	c.AliasesFile = abs(f.AliasesFile)
	for _, d := range []struct {
		key string
		val string
		dst *time.Duration
	}{
		{"retry_min", f.Queue.RetryMin, &c.Queue.RetryMin},
		{"retry_max", f.Queue.RetryMax, &c.Queue.RetryMax},
		{"lifetime", f.Queue.Lifetime, &c.Queue.Lifetime},
	} {
		if d.val == "" {
			continue
		}
		dur, err := ParseDuration(d.val)
		if err != nil || dur <= 0 {
			v.fail(toml.Key{"queue", d.key}, fmt.Sprintf("%s = %q: want a positive duration such as 30s, 5m, 1h or 5d", d.key, d.val))
			continue
		}
		*d.dst = dur
	}
	if c.Queue.RetryMin > c.Queue.RetryMax {
		v.fail(toml.Key{"queue", "retry_min"}, "retry_min is longer than retry_max")
	}
	if f.Flusher.AutoStart != nil {
		c.Flusher.AutoStart = *f.Flusher.AutoStart
	}
	for name, prim := range f.Aliases {
		targets, err := aliasTargets(md, prim)
		key := toml.Key{"aliases", name}
		if err != nil {
			v.fail(key, fmt.Sprintf("alias %q: %v", name, err))
			continue
		}
		if bad := checkAlias(name, targets); bad != "" {
			v.fail(key, bad)
			continue
		}
		c.aliases[strings.ToLower(name)] = targets
	}
	names := map[string]bool{}
	for i, fa := range f.Account {
		a := v.account(i, fa, abs)
		if names[a.Name] {
			v.failAt(v.line(toml.Key{"account", "name"}, i), fmt.Sprintf("two accounts are named %q", a.Name))
		}
		names[a.Name] = true
		c.Accounts = append(c.Accounts, a)
	}
	if v.err != nil {
		return nil, v.err
	}
	return c, nil
}

func aliasTargets(md toml.MetaData, p toml.Primitive) ([]string, error) {
	var one string
	if err := md.PrimitiveDecode(p, &one); err == nil {
		return splitList(one), nil
	}
	var many []string
	if err := md.PrimitiveDecode(p, &many); err != nil {
		return nil, errors.New("want an address or a list of addresses")
	}
	var out []string
	for _, m := range many {
		out = append(out, splitList(m)...)
	}
	return out, nil
}

// splitList splits "a@x, b@y" into its addresses.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// validator collects the first error with its line.
type validator struct {
	path string
	src  []byte
	err  error
}

func (v *validator) fail(k toml.Key, msg string) { v.failAt(v.line(k, 0), msg) }

func (v *validator) failAt(line int, msg string) {
	if v.err == nil {
		v.err = &Error{File: v.path, Line: line, Msg: msg}
	}
}

// line finds the line where key k is set; index picks the n-th [[table]]
// of an array of tables. TOML's decoder keeps no positions for keys, so the
// source is scanned: table headers track where we are.
func (v *validator) line(k toml.Key, index int) int {
	if len(k) == 0 {
		return 0
	}
	table, name := strings.Join(k[:len(k)-1], "."), k[len(k)-1]
	current, seen := "", map[string]int{}
	for i, raw := range bytes.Split(v.src, []byte("\n")) {
		l := strings.TrimSpace(string(raw))
		switch {
		case strings.HasPrefix(l, "[["):
			current = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			seen[current]++
			if current == table && name == "" && seen[current] == index+1 {
				return i + 1
			}
		case strings.HasPrefix(l, "["):
			current = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
		default:
			eq := strings.IndexByte(l, '=')
			if eq < 0 || current != table || (seen[table] != 0 && seen[table] != index+1) {
				continue
			}
			if strings.Trim(strings.TrimSpace(l[:eq]), `"'`) == name {
				return i + 1
			}
		}
	}
	return 0
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
