package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/queue"
	"github.com/exo-sendmail/exo-sendmail/submission"
)

// submit is sendmail -bm, the default: the message on stdin into the
// spool. It exits 0 only once the entry is durable.
func submit(cfg *conf.Config, c *cmdline) int {
	m, err := submission.Read(os.Stdin, &c.sub, siteOf(cfg))
	if err != nil {
		return failSubmit(err)
	}
	for _, w := range m.Warnings {
		fmt.Fprintf(os.Stderr, "sendmail: warning: %s\n", w)
	}
	if c.verbose {
		fmt.Fprintf(os.Stderr, "sendmail: from <%s> to %s\n", m.Envelope.Sender, recipientList(m.Envelope.Recipients))
	}
	id, err := m.Enqueue(queue.Open(cfg.SpoolDir))
	if err != nil {
		return failSubmit(err)
	}
	if c.verbose {
		fmt.Fprintf(os.Stderr, "sendmail: queued as %s in %s\n", id, cfg.SpoolDir)
	}
	ensureFlusher(cfg)
	return exOK
}

// siteOf is what this host and user contribute to a submission.
func siteOf(cfg *conf.Config) *submission.Site {
	uid := os.Getuid()
	name := "uid" + strconv.Itoa(uid) // a uid without a passwd entry (a container)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name = u.Username
	}
	return &submission.Site{Hostname: cfg.Hostname, MaxMessageSize: cfg.MaxMessageSize, UID: uid, User: name}
}

func recipientList(rs []queue.Recipient) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("<" + r.Addr + ">")
	}
	return b.String()
}

// failSubmit prints one line saying why nothing was queued and returns the
// sysexits code: 64/65 for what the caller must change, 75 for what may
// pass (a full disk, a broken pipe), 73/77 for what an administrator must
// fix.
func failSubmit(err error) int {
	var se *submission.Error
	var re *submission.ReadError
	switch {
	case errors.As(err, &se):
		fmt.Fprintf(os.Stderr, "sendmail: %s\n", se.Msg)
		if se.Kind == submission.BadUsage {
			return exUsage
		}
		return exDataErr
	case errors.As(err, &re):
		fmt.Fprintf(os.Stderr, "sendmail: nothing queued: cannot read the message from standard input: %s\n", errnoText(re.Err))
		return exTempFail
	}
	code, what, remedy := spoolFailure(err)
	line := "sendmail: cannot queue message: " + what
	if path := errPath(err); path != "" {
		line += " (" + path + ")"
	}
	fmt.Fprintln(os.Stderr, line+remedy)
	return code
}

// spoolFailure classifies a failed write into the spool by its system error.
func spoolFailure(err error) (code int, what, remedy string) {
	what = errnoText(err)
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return exTempFail, "spool is full: " + what, ""
	case errors.Is(err, syscall.EROFS):
		return exCantCreat, what, ""
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return exCantCreat, "spool directory missing: " + what, "; check spool_dir in the configuration"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return exNoPerm, what, "; sendmail must be setgid to the spool group, or spool_dir writable by you"
	}
	return exTempFail, what, ""
}

// errnoText is the system's words for err, without the path and operation
// that the wrapping errors repeat.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// errPath is the file a spool error happened to.
func errPath(err error) string {
	var qe *queue.Error
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &qe):
		return qe.Path
	case errors.As(err, &pe):
		return pe.Path
	case errors.As(err, &le):
		return le.Old
	}
	return ""
}

// verify is sendmail -bv: what becomes of each recipient (aliases) and
// which account would deliver mail from this sender. Nothing is sent.
func verify(cfg *conf.Config, c *cmdline) int {
	site := siteOf(cfg)
	sender := site.User + "@" + site.Hostname
	if c.sub.SenderGiven {
		sender = strings.Trim(strings.TrimSpace(c.sub.Sender), "<>")
	}
	var rcpts []string
	for _, a := range c.args {
		addrs, err := submission.Addresses(a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sendmail: %v\n", err)
			return exUsage
		}
		rcpts = append(rcpts, addrs...)
	}
	if len(rcpts) == 0 {
		fmt.Fprintln(os.Stderr, "sendmail: -bv: give the recipients to verify as arguments")
		return exUsage
	}
	acct := cfg.AccountFor(sender)
	status := "no account configured"
	if len(cfg.Accounts) > 0 {
		status = fmt.Sprintf("held: no account's senders pattern matches the sender <%s>", sender)
	}
	if acct != nil {
		status = fmt.Sprintf("deliverable through account %q (%s as %s)", acct.Name, acct.Transport, acct.Mailbox)
	}
	for _, r := range rcpts {
		fmt.Printf("%s -> %s: %s\n", r, strings.Join(cfg.Resolve(r), ", "), status)
	}
	if acct == nil {
		return exUnavailable
	}
	return exOK
}
