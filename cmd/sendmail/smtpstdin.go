package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/queue"
	"github.com/exo-sendmail/exo-sendmail/submission"
)

// smtpTimeout bounds the wait for each command and each piece of DATA, as
// an SMTP server would (Postfix's smtpd_timeout is 300 s).
const smtpTimeout = 5 * time.Minute

// serveSMTP is sendmail -bs: one SMTP session on stdin and stdout (Symfony
// Mailer's default transport). Each message is queued through the same
// submission path as the command line; 250 comes only once it is durable.
// Nothing is relayed anywhere but the local queue, and AUTH is not offered:
// the caller is the local user who started us.
func serveSMTP(cfg *conf.Config, c *cmdline) int {
	conn := newStdioConn(os.Stdin, os.Stdout)
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{cfg: cfg, site: siteOf(cfg), spool: queue.Open(cfg.SpoolDir), verbose: c.verbose}, nil
	}))
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageSize
	srv.MaxLineLength = submission.MaxHeaderSize // long lines pass, as on the command line
	srv.EnableDSN = true
	srv.EnableSMTPUTF8 = true
	srv.ReadTimeout, srv.WriteTimeout = smtpTimeout, smtpTimeout
	srv.ErrorLog = log.New(os.Stderr, "sendmail -bs: ", 0)
	err := srv.Serve(&oneConnListener{conn: conn})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintf(os.Stderr, "sendmail -bs: %v\n", err)
		return exIOErr
	}
	return exOK
}

// smtpSession collects one transaction at a time.
type smtpSession struct {
	cfg     *conf.Config
	site    *submission.Site
	spool   *queue.Spool
	verbose bool
	opts    submission.Options
}

func (s *smtpSession) Mail(from string, o *smtp.MailOptions) error {
	s.opts = submission.Options{
		Sender:       from,
		SenderGiven:  true,
		DotIsData:    true, // SMTP has its own end marker, already removed
		Body8BitMIME: o.Body == smtp.Body8BitMIME,
		Ret:          string(o.Return),
		EnvID:        o.EnvelopeID,
	}
	return nil
}

func (s *smtpSession) Rcpt(to string, o *smtp.RcptOptions) error {
	rc := queue.Recipient{Addr: to}
	for i, n := range o.Notify {
		if i > 0 {
			rc.Notify += ","
		}
		rc.Notify += string(n)
	}
	if o.OriginalRecipient != "" {
		rc.ORcpt = string(o.OriginalRecipientType) + ";" + o.OriginalRecipient
	}
	s.opts.Recipients = append(s.opts.Recipients, rc)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	m, err := submission.Read(r, &s.opts, s.site)
	id := ""
	if err == nil {
		id, err = m.Enqueue(s.spool)
	}
	if err != nil {
		return smtpReply(err)
	}
	if s.verbose {
		fmt.Fprintf(os.Stderr, "sendmail: queued as %s\n", id)
	}
	ensureFlusher(s.cfg)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

func (s *smtpSession) Reset()        { s.opts = submission.Options{} }
func (s *smtpSession) Logout() error { return nil }

// smtpReply turns a failed submission into the reply the client sees.
func smtpReply(err error) error {
	var se *submission.Error
	var re *submission.ReadError
	var reply *smtp.SMTPError
	switch {
	case errors.As(err, &reply): // from go-smtp's reader: message too big, aborted
		return reply
	case errors.As(err, &se) && se.Kind == submission.TooBig:
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: se.Msg}
	case errors.As(err, &se):
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: se.Msg}
	case errors.As(err, &re):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: re.Error()}
	}
	code, what, _ := spoolFailure(err)
	msg := "cannot queue message: " + what
	if code == exTempFail && strings.HasPrefix(what, "spool is full") {
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: msg}
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: msg}
}

// stdioConn is the SMTP connection: stdin to read, stdout to write.
type stdioConn struct {
	in, out   *os.File
	closeOnce sync.Once
	closed    chan struct{}
}

func newStdioConn(in, out *os.File) *stdioConn {
	return &stdioConn{in: in, out: out, closed: make(chan struct{})}
}

func (c *stdioConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.in.Read(p)
}

func (c *stdioConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// Close ends the session (QUIT, EOF); the descriptors close when we exit.
func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

func (c *stdioConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Deadlines work on pipes and terminals; a regular file as stdin never
// waits, so it needs none.
func (c *stdioConn) SetReadDeadline(t time.Time) error  { return deadline(c.in.SetReadDeadline(t)) }
func (c *stdioConn) SetWriteDeadline(t time.Time) error { return deadline(c.out.SetWriteDeadline(t)) }

func deadline(err error) error {
	if errors.Is(err, os.ErrNoDeadline) || errors.Is(err, syscall.EBADF) {
		return nil
	}
	return err
}

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdin" }

// oneConnListener hands out the stdio connection once, then reports itself
// closed when that connection ends, which ends Serve.
type oneConnListener struct {
	conn   *stdioConn
	handed bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.handed {
		l.handed = true
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return stdioAddr{} }
