package main

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/exo-sendmail/exo-sendmail/queue"
)

// pipeConn is the client's side of sendmail -bs: its stdin to write, its
// stdout to read.
type pipeConn struct{ r, w *os.File }

func (c pipeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c pipeConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c pipeConn) Close() error {
	c.w.Close()
	return c.r.Close()
}
func (c pipeConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c pipeConn) RemoteAddr() net.Addr { return stdioAddr{} }
func (c pipeConn) SetDeadline(t time.Time) error {
	c.r.SetDeadline(t)
	return c.w.SetDeadline(t)
}
func (c pipeConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c pipeConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// startBS starts sendmail -bs and returns a go-smtp client talking to it.
func startBS(t *testing.T, s *site, cred *syscall.Credential) (*smtp.Client, *exec.Cmd, pipeConn) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "sendmail"), "-bs")
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config)
	cmd.Stdin, cmd.Stdout = inR, outW
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	conn := pipeConn{r: outR, w: inW}
	t.Cleanup(func() {
		conn.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	return c, cmd, conn
}

func sendOne(c *smtp.Client, from string, mopts *smtp.MailOptions, to []string, ropts *smtp.RcptOptions, msg string) (string, error) {
	if err := c.Mail(from, mopts); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, ropts); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

func TestSMTPOnStdin(t *testing.T) {
	s := newSite(t, `max_message_size = "20KB"`)
	c, cmd, _ := startBS(t, s, nil)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered")
	}
	if ok, _ := c.Extension("DSN"); !ok {
		t.Error("DSN not offered")
	}

	msg := "To: r1@example.com\r\nBcc: r2@example.com\r\nSubject: one\r\n\r\nbody\r\n.\r\n..two dots\r\n"
	status, err := sendOne(c, "s@example.com",
		&smtp.MailOptions{Body: smtp.Body8BitMIME, Return: smtp.DSNReturnHeaders, EnvelopeID: "env-1"},
		[]string{"r1@example.com", "r2@example.com"},
		&smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}},
		msg)
	if err != nil {
		t.Fatal(err)
	}
	e := s.only(t)
	first := e.id
	if status != "2.0.0 Ok: queued as "+e.id {
		t.Errorf("250 text %q, entry %s", status, e.id)
	}
	checkStored(t, e)
	want := queue.Envelope{Sender: "s@example.com", Ret: "HDRS", EnvID: "env-1", Body8Bit: true,
		Recipients: []queue.Recipient{{Addr: "r1@example.com", Notify: "FAILURE,DELAY"}, {Addr: "r2@example.com", Notify: "FAILURE,DELAY"}}}
	got := e.env
	got.Submitted, got.UID, got.User = time.Time{}, 0, ""
	if !equalEnvelope(got, want) {
		t.Errorf("envelope %+v, want %+v", got, want)
	}
	if e.body() != "body\n.\n..two dots\n" {
		t.Errorf("body %q", e.body())
	}

	// A second transaction in the same session, after RSET.
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := sendOne(c, "", nil, []string{"r3@example.com"}, nil, "Subject: two\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	// Too big: refused with 552, nothing queued.
	_, err = sendOne(c, "s@example.com", nil, []string{"r4@example.com"}, nil, "Subject: big\r\n\r\n"+strings.Repeat("0123456789\r\n", 3000))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 {
		t.Errorf("oversized message: %v, want 552", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("sendmail -bs after QUIT: %v", err)
	}
	es := s.entries(t)
	if len(es) != 2 {
		t.Fatalf("%d entries, want 2", len(es))
	}
	for _, e := range es {
		if e.id != first && (e.env.Sender != "" || e.recipients()[0] != "r3@example.com") {
			t.Errorf("second message: envelope %+v", e.env)
		}
	}
}

func equalEnvelope(a, b queue.Envelope) bool {
	if len(a.Recipients) != len(b.Recipients) {
		return false
	}
	for i := range a.Recipients {
		if a.Recipients[i] != b.Recipients[i] {
			return false
		}
	}
	a.Recipients, b.Recipients = nil, nil
	return a.Sender == b.Sender && a.Ret == b.Ret && a.EnvID == b.EnvID && a.Body8Bit == b.Body8Bit && a.SMTPUTF8 == b.SMTPUTF8
}

// TestSMTPEndsWithStdin: a client that just goes away ends the session.
func TestSMTPEndsWithStdin(t *testing.T) {
	s := newSite(t, "")
	_, cmd, conn := startBS(t, s, nil)
	conn.w.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("sendmail -bs after EOF: %v", err)
	}
}

// TestSMTPNotDurableNo250: when the spool cannot take the message the
// client hears a 4xx, never 250.
func TestSMTPNotDurableNo250(t *testing.T) {
	s := newSite(t, "")
	if err := queue.Open(s.spool).Init(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.spool, 0o755)
	os.Chmod(filepath.Join(s.spool, "drop"), 0o555)
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	c, _, _ := startBS(t, s, cred)
	_, err := sendOne(c, "s@example.com", nil, []string{"r@example.com"}, nil, "Subject: s\r\n\r\nx\r\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code/100 != 4 || !strings.Contains(se.Message, "permission denied") {
		t.Errorf("DATA into an unwritable spool: %v, want 451", err)
	}
	s.noLeftovers(t, 0)
}
