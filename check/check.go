// Package check is `exo-sendmail check`: it walks each account from its
// configuration to an authenticated session with Exchange Online, the way
// the flusher will, and says at every step what is wrong and which
// administrator's step fixes it (exchange-online.md §2, §4, §8).
//
// Per account: the credential files (readable, private, certificate and key
// matching and in date) and ca_file; a token fetched for the transport's
// scope and its decoded claims (tenant, app, audience, roles, expiry) with
// the known mismatches; a connection that authenticates (SMTP: STARTTLS and
// AUTH XOAUTH2; Graph: a request that cannot send); with SendTo, a test
// message through the account's transport.
//
// The report never holds a secret or a token: only the token's claims.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Options say what to check.
type Options struct {
	Account string    // check only the account of this name; "" checks all
	SendTo  string    // also send a test message to this address; "" sends none
	Out     io.Writer // where the report goes
}

// Outcome sums up a check.
type Outcome int

const (
	// Passed: every step of every account passed (warnings allowed).
	Passed Outcome = iota
	// TempFailed: only failures that may pass by themselves (network,
	// server busy, throttling): run the check again later.
	TempFailed
	// Failed: at least one failure an administrator must fix.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Passed:
		return "passed"
	case TempFailed:
		return "failed temporarily"
	}
	return "failed"
}

// Run checks the accounts of cfg and writes one line per step to opt.Out.
// It returns an error only for options it cannot use (an unknown account, a
// malformed address), before checking anything: every problem found in the
// configuration or at Microsoft is in the report and the Outcome.
func Run(ctx context.Context, cfg *conf.Config, opt Options) (Outcome, error) {
	accounts := cfg.Accounts
	if opt.Account != "" {
		a := cfg.Account(opt.Account)
		if a == nil {
			names := make([]string, len(cfg.Accounts))
			for i := range cfg.Accounts {
				names[i] = cfg.Accounts[i].Name
			}
			return Failed, fmt.Errorf("no account named %q in %s (accounts: %s)", opt.Account, configName(cfg), strings.Join(names, ", "))
		}
		accounts = []conf.Account{*a}
	}
	if opt.SendTo != "" {
		if addr, err := mail.ParseAddress(opt.SendTo); err != nil || addr.Address != opt.SendTo {
			return Failed, fmt.Errorf("--send-to %q is not a plain address such as admin@example.com", opt.SendTo)
		}
	}
	out := opt.Out
	if out == nil {
		out = io.Discard
	}
	r := &report{w: out}
	fmt.Fprintf(out, "exo-sendmail check as %s, configuration %s\n", whoami(), configName(cfg))
	if len(accounts) == 0 {
		r.fail(failure.Config, "config", "no [[account]] is configured",
			"add one (tenant, client_id, client_secret_file or certificate_file, mailbox) to "+configName(cfg))
	}
	for i := range accounts {
		if ctx.Err() != nil {
			r.fail(failure.Temporary, "check", "interrupted", "run it again")
			break
		}
		c := &checker{cfg: cfg, a: &accounts[i], sendTo: opt.SendTo, r: r}
		c.run(ctx)
	}
	outcome := r.outcome()
	fmt.Fprintf(out, "result: %s", outcome)
	if r.warnings > 0 {
		fmt.Fprintf(out, " (%d warning%s)", r.warnings, plural(r.warnings))
	}
	fmt.Fprintln(out)
	return outcome, nil
}

func configName(cfg *conf.Config) string {
	if cfg.Path == "" {
		return "(none: built-in defaults)"
	}
	return cfg.Path
}

// whoami names the user the check runs as: what it may read is what this
// user may read.
func whoami() string {
	uid := os.Geteuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// report prints the steps and remembers the worst outcome. Whatever it
// prints passes through redact: a token or secret that reached a message
// by some path is cut out there.
type report struct {
	w        io.Writer
	hide     []string // tokens and secrets seen during the check
	failed   bool     // a failure an administrator must fix
	temp     bool     // a failure that may pass by itself
	warnings int
}

// indent continues a step's text on the next lines, under its text.
const indent = "\n       "

func (r *report) ok(step, format string, a ...any) {
	r.line("ok", step, fmt.Sprintf(format, a...))
}

// warn reports a step that passed with something the reader must know.
func (r *report) warn(step, what, fix string) {
	r.warnings++
	r.line("warn", step, join(what, fix))
}

// fail reports a failed step of the given class: what happened, what to do.
func (r *report) fail(class failure.Class, step, what, fix string) {
	if class == failure.Temporary || class == failure.Throttled {
		r.temp = true
	} else {
		r.failed = true
	}
	r.line("FAIL", step, join(what, fix))
}

// failure reports a classified error from another package: its reply and
// remedy as they are.
func (r *report) failure(step string, err error) {
	var fe *failure.Error
	if !errors.As(err, &fe) {
		r.fail(failure.ClassOf(err), step, err.Error(), "")
		return
	}
	what := fe.Reply
	if what == "" && fe.Err != nil {
		what = fe.Err.Error()
	}
	r.fail(fe.Class, step, what, fe.Remedy)
}

func join(what, fix string) string {
	if fix == "" {
		return what
	}
	return what + " — " + fix
}

func (r *report) line(tag, step, text string) {
	text = strings.ReplaceAll(r.redact(strings.TrimSpace(text)), "\n", indent)
	fmt.Fprintf(r.w, "  %-4s %s: %s\n", tag, step, text)
}

func (r *report) redact(s string) string {
	for _, h := range r.hide {
		if h != "" {
			s = strings.ReplaceAll(s, h, "[hidden]")
		}
	}
	return s
}

// secret adds s to what is never printed.
func (r *report) secret(s string) {
	if len(s) >= 4 { // shorter strings would cut ordinary words
		r.hide = append(r.hide, s)
	}
}

func (r *report) outcome() Outcome {
	switch {
	case r.failed:
		return Failed
	case r.temp:
		return TempFailed
	}
	return Passed
}
