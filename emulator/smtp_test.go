package emulator

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/golang-jwt/jwt/v5"
)

// wire is a raw SMTP client, to assert replies byte for byte.
type wire struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialWire(t *testing.T, e *Emulator) (*wire, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.SMTPAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wire{t: t, c: c, r: bufio.NewReader(c)}
	return w, w.read()
}

// read returns one reply, its lines joined by "\n".
func (w *wire) read() string {
	w.t.Helper()
	w.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var lines []string
	for {
		l, err := w.r.ReadString('\n')
		if err != nil {
			w.t.Fatalf("reading a reply: %v (so far %q)", err, lines)
		}
		if !strings.HasSuffix(l, "\r\n") {
			w.t.Fatalf("reply line %q does not end in CRLF", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] == ' ' {
			return strings.Join(lines, "\n")
		}
	}
}

func (w *wire) send(line string) {
	w.t.Helper()
	if _, err := io.WriteString(w.c, line+"\r\n"); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wire) cmd(line string) string {
	w.t.Helper()
	w.send(line)
	return w.read()
}

func (w *wire) startTLS(e *Emulator) {
	w.t.Helper()
	if got := w.cmd("STARTTLS"); got != "220 2.0.0 SMTP server ready" {
		w.t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(w.c, &tls.Config{RootCAs: e.RootCAs(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		w.t.Fatal(err)
	}
	w.c, w.r = tc, bufio.NewReader(tc)
}

func xoauth2(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// xoauth2Client is the few lines of SASL XOAUTH2 go-sasl no longer has.
type xoauth2Client struct{ user, token string }

func (x xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}
func (x xoauth2Client) Next([]byte) ([]byte, error) { return []byte{}, nil }

var _ sasl.Client = xoauth2Client{}

// dialSMTP connects with go-smtp's client: STARTTLS, then AUTH XOAUTH2.
func dialSMTP(t *testing.T, e *Emulator, user, token string) (*smtp.Client, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.SMTPAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{RootCAs: e.RootCAs(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.Auth(xoauth2Client{user, token})
}

// send submits one message on c and returns the final reply's error.
func send(c *smtp.Client, from string, rcpts []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

// wantReply checks an SMTP error's code, enhanced code and the start of its text.
func wantReply(t *testing.T, err error, code int, enhanced, text string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want %d %s %s", err, code, enhanced, text)
	}
	got := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	hasPrefix(t, "reply", got, fmt.Sprintf("%d %s %s", code, enhanced, text))
}

const testMessage = "From: Alerts <alerts@contoso.com>\r\nTo: ops@fabrikam.com\r\nSubject: disk\r\nMessage-ID: <m1@web1.contoso.com>\r\n\r\n.leading dot\r\nbody\r\n"

func TestSMTPWire(t *testing.T) {
	e := start(t, testConfig(t))
	w, greeting := dialWire(t, e)
	hasPrefix(t, "greeting", greeting, "220 emulator.outlook.office365.com Microsoft ESMTP MAIL Service ready at ")

	want := "250-emulator.outlook.office365.com Hello [127.0.0.1]\n250-SIZE 157286400\n250-PIPELINING\n250-DSN\n250-ENHANCEDSTATUSCODES\n250-STARTTLS\n250-8BITMIME\n250-BINARYMIME\n250-CHUNKING\n250 SMTPUTF8"
	if got := w.cmd("EHLO web1.contoso.com"); got != want {
		t.Errorf("EHLO before TLS:\n%s\nwant\n%s", got, want)
	}
	if got := w.cmd("AUTH XOAUTH2 " + xoauth2(mailbox, "x")); got != "504 5.7.4 Unrecognized authentication type" {
		t.Errorf("AUTH before STARTTLS: %q", got)
	}
	w.startTLS(e)
	if got := w.cmd("MAIL FROM:<alerts@contoso.com>"); got != "503 5.5.1 Send hello first" {
		t.Errorf("MAIL before EHLO after STARTTLS: %q", got)
	}
	want = strings.Replace(want, "STARTTLS", "AUTH LOGIN XOAUTH2", 1)
	if got := w.cmd("EHLO web1.contoso.com"); got != want {
		t.Errorf("EHLO after TLS:\n%s\nwant\n%s", got, want)
	}
	hasPrefix(t, "MAIL before AUTH", w.cmd("MAIL FROM:<alerts@contoso.com>"), "530 5.7.57 Client not authenticated to send mail")
	hasPrefix(t, "AUTH PLAIN", w.cmd("AUTH PLAIN AGFsZXJ0cwB4"), "504 5.7.4 Unrecognized authentication type")

	// A real-size token on one line (go-smtp's server would cut it at 2,000 bytes).
	line := "AUTH XOAUTH2 " + xoauth2(mailbox, token(t, e, clientID, smtpScope))
	if len(line) < 2000 {
		t.Fatalf("the AUTH line is only %d bytes", len(line))
	}
	if got := w.cmd(line); got != "235 2.7.0 Authentication successful" {
		t.Fatalf("AUTH XOAUTH2: %q", got)
	}
	if got := w.cmd("MAIL FROM:<alerts@contoso.com> SIZE=200"); got != "250 2.1.0 Sender OK" {
		t.Errorf("MAIL: %q", got)
	}
	if got := w.cmd("RCPT TO:<ops@fabrikam.com>"); got != "250 2.1.5 Recipient OK" {
		t.Errorf("RCPT: %q", got)
	}
	if got := w.cmd("DATA"); got != "354 Start mail input; end with <CRLF>.<CRLF>" {
		t.Errorf("DATA: %q", got)
	}
	w.send("Subject: hi\r\n\r\n..dot\r\n.")
	if got := w.read(); got != "250 2.0.0 OK "+e.Messages()[0].ID+" [Hostname=emulator]" {
		t.Errorf("end of DATA: %q", got)
	}
	if got := string(e.Messages()[0].Data); got != "Subject: hi\r\n\r\n.dot\r\n" {
		t.Errorf("stored %q: dot-stuffing not undone exactly", got)
	}

	// PIPELINING: a whole transaction in one write, replies in order; the
	// server counts two round trips, the commands and the body.
	trips := e.Stats().SMTPRoundTrips
	w.send("MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@fabrikam.com>\r\nRCPT TO:<b@fabrikam.com>\r\nDATA")
	for i, want := range []string{"250 2.1.0", "250 2.1.5", "250 2.1.5", "354 "} {
		hasPrefix(t, fmt.Sprint("pipelined reply ", i), w.read(), want)
	}
	w.send("From: noreply@contoso.com\r\n\r\nx\r\n.")
	hasPrefix(t, "pipelined message", w.read(), "250 2.0.0 OK <")
	if n := e.Stats().SMTPRoundTrips - trips; n != 2 {
		t.Errorf("a pipelined transaction counted as %d round trips, want 2", n)
	}

	// CHUNKING.
	w.cmd("MAIL FROM:<alerts@contoso.com> BODY=BINARYMIME")
	w.cmd("RCPT TO:<ops@fabrikam.com>")
	w.send("BDAT 12\r\nSubject: x") // send adds the CRLF that ends the chunk
	hasPrefix(t, "BDAT", w.read(), "250 2.0.0 12 bytes received")
	w.send("BDAT 7 LAST\r\n\r\nbin")
	hasPrefix(t, "BDAT LAST", w.read(), "250 2.0.0 OK <")
	if got := string(e.Messages()[2].Data); got != "Subject: x\r\n\r\nbin\r\n" {
		t.Errorf("BDAT stored %q", got)
	}

	hasPrefix(t, "unknown command", w.cmd("XYZZY"), "500 5.3.3 Unrecognized command 'XYZZY'")
	hasPrefix(t, "RCPT without MAIL", w.cmd("RCPT TO:<a@b.c>"), "503 5.5.1 Need mail command")
	if got := w.cmd("QUIT"); got != "221 2.0.0 Service closing transmission channel" {
		t.Errorf("QUIT: %q", got)
	}
	if s := e.Stats(); s.SMTPConnections != 1 || s.SMTPCommands < 20 {
		t.Errorf("stats %+v", s)
	}
}

func TestSMTPSendAndMaildir(t *testing.T) {
	e := start(t, testConfig(t))
	c, err := dialSMTP(t, e, mailbox, token(t, e, clientID, smtpScope))
	if err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"ops@fabrikam.com", "Dev@Fabrikam.com"}
	if err := send(c, mailbox, rcpts, testMessage); err != nil {
		t.Fatal(err)
	}
	// The connection is reused for a second message.
	if err := send(c, sendAs, rcpts[:1], strings.Replace(testMessage, "alerts@", "noreply@", 1)); err != nil {
		t.Fatal(err)
	}
	msgs := e.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages recorded, want 2", len(msgs))
	}
	m := msgs[0]
	if m.Via != "smtp" || m.Mailbox != mailbox || m.MailFrom != mailbox || m.ID != "<m1@web1.contoso.com>" ||
		strings.Join(m.Rcpts, ",") != strings.Join(rcpts, ",") || string(m.Data) != testMessage {
		t.Errorf("recorded %+v", m)
	}
	for _, r := range rcpts {
		files, err := filepath.Glob(filepath.Join(e.Maildir(r), "new", "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Maildir file for %s (%v)", r, err)
		}
		got, _ := os.ReadFile(files[0])
		want := "Return-Path: <alerts@contoso.com>\r\nDelivered-To: " + r + "\r\n" + testMessage
		if string(got) != want {
			t.Errorf("Maildir copy for %s:\n%q\nwant\n%q", r, got, want)
		}
	}
	if n, _ := filepath.Glob(filepath.Join(e.Maildir("ops@fabrikam.com"), "new", "*")); len(n) != 2 {
		t.Errorf("ops@fabrikam.com has %d messages, want 2", len(n))
	}
	if !strings.HasSuffix(e.Maildir("Dev@Fabrikam.com"), filepath.Join("maildir", "dev@fabrikam.com")) {
		t.Errorf("Maildir of Dev@Fabrikam.com is %s", e.Maildir("Dev@Fabrikam.com"))
	}
}

// expiredToken signs a token the emulator's own way whose exp has passed.
func expiredToken(t *testing.T, e *Emulator) string {
	k, _ := signingKey()
	c := jwt.MapClaims{
		"aud": resourceExchange, "iss": "https://sts.windows.net/" + e.TenantID + "/", "tid": e.TenantID,
		"appid": clientID, "roles": []string{roleSMTP},
		"nbf": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix(),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, c).SignedString(k.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSMTPAuthFailures(t *testing.T) {
	e := start(t, testConfig(t))
	good := token(t, e, clientID, smtpScope)
	tests := []struct {
		name, user, token, reply string
	}{
		{"Graph token", mailbox, token(t, e, clientID, graphScope), "535 5.7.3 Authentication unsuccessful"},
		{"no SMTP.SendAsApp role", mailbox, token(t, e, noRoleID, smtpScope), "535 5.7.3 Authentication unsuccessful"},
		{"expired token", mailbox, expiredToken(t, e), "535 5.7.3 Authentication unsuccessful"},
		{"forged token", mailbox, good[:len(good)-8] + "AAAAAAAA", "535 5.7.3 Authentication unsuccessful"},
		{"unknown mailbox", "nobody@contoso.com", good, "535 5.7.3 Authentication unsuccessful"},
		{"SMTP AUTH disabled", disabledMbox, good, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialSMTP(t, e, tc.user, tc.token)
			f := strings.SplitN(tc.reply, " ", 3)
			wantReply(t, err, map[string]int{"535": 535}[f[0]], f[1], f[2])
		})
	}
	if s := e.Stats(); s.AuthFailures != len(tests) {
		t.Errorf("AuthFailures = %d, want %d", s.AuthFailures, len(tests))
	}

	// Basic authentication is refused after Exchange's two prompts.
	w, _ := dialWire(t, e)
	w.cmd("EHLO x")
	w.startTLS(e)
	w.cmd("EHLO x")
	if got := w.cmd("AUTH LOGIN"); got != "334 VXNlcm5hbWU6" {
		t.Fatalf("AUTH LOGIN: %q", got)
	}
	if got := w.cmd(base64.StdEncoding.EncodeToString([]byte(mailbox))); got != "334 UGFzc3dvcmQ6" {
		t.Fatalf("after the user name: %q", got)
	}
	hasPrefix(t, "basic auth", w.cmd(base64.StdEncoding.EncodeToString([]byte("password"))), "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.")
}

func TestSMTPMailboxLogonFailure(t *testing.T) {
	e := start(t, testConfig(t))
	c, err := dialSMTP(t, e, mailbox, token(t, e, noAccessID, smtpScope))
	if err != nil {
		t.Fatalf("AUTH must succeed without mailbox permission, as Exchange's does: %v", err)
	}
	wantReply(t, send(c, mailbox, []string{"ops@fabrikam.com"}, testMessage), 430, "4.2.0", "STOREDRV; mailbox logon failure")
	if n := len(e.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
}

func TestSMTPSendAsDenied(t *testing.T) {
	e := start(t, testConfig(t))
	c, err := dialSMTP(t, e, mailbox, token(t, e, clientID, smtpScope))
	if err != nil {
		t.Fatal(err)
	}
	// MAIL FROM is accepted at MAIL; both it and From: are checked after DATA.
	err = send(c, "root@web1.contoso.com", []string{"ops@fabrikam.com"}, testMessage)
	wantReply(t, err, 554, "5.2.252", "SendAsDenied; alerts@contoso.com not allowed to send as root@web1.contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException")
	err = send(c, mailbox, []string{"ops@fabrikam.com"}, strings.Replace(testMessage, "alerts@contoso.com", "www-data@web1.contoso.com", 1))
	wantReply(t, err, 554, "5.2.252", "SendAsDenied; alerts@contoso.com not allowed to send as www-data@web1.contoso.com;")
	err = send(c, mailbox, []string{"ops@fabrikam.com"}, "From: <<<\r\n\r\nx\r\n")
	wantReply(t, err, 550, "5.7.512", "Access denied")
	if n := len(e.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
	// The session goes on after the refusals.
	if err := send(c, sendAs, []string{"ops@fabrikam.com"}, testMessage); err != nil {
		t.Fatal(err)
	}
}

// setLimits lowers the limits so that a test can reach them.
func setLimits(e *Emulator, edit func(*limits)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	edit(&e.limits)
}

func TestSMTPLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits = true
	e := start(t, cfg)
	tok := token(t, e, clientID, smtpScope)
	var clients []*smtp.Client
	for range 3 {
		c, err := dialSMTP(t, e, mailbox, tok)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	_, err := dialSMTP(t, e, mailbox, tok)
	wantReply(t, err, 432, "4.3.2", "STOREDRV.ClientSubmit; sender thread limit exceeded")
	if s := e.Stats(); s.ThrottleReplies != 1 {
		t.Errorf("ThrottleReplies = %d, want 1", s.ThrottleReplies)
	}
	// Another mailbox has its own slots.
	if _, err := dialSMTP(t, e, disabledMbox, tok); err == nil || strings.Contains(err.Error(), "4.3.2") {
		t.Errorf("another mailbox: %v, want its own 535 5.7.139", err)
	}

	// Messages per minute (lowered for the test): the next MAIL is refused.
	setLimits(e, func(l *limits) { l.perMinute = 2 })
	c := clients[0]
	for i := range 2 {
		if err := send(c, mailbox, []string{"ops@fabrikam.com"}, testMessage); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	wantReply(t, send(c, mailbox, []string{"ops@fabrikam.com"}, testMessage), 451, "4.7.500", "Server busy. Please try again later")
	c.Reset()

	// Recipients per day (lowered for the test): refused after DATA.
	setLimits(e, func(l *limits) { l.perMinute, l.perDay = 30, 3 })
	wantReply(t, send(clients[1], mailbox, []string{"a@fabrikam.com", "b@fabrikam.com"}, testMessage), 554, "5.2.0",
		"STOREDRV.Submission.Exception:SubmissionQuotaExceededException")
	if s := e.Stats(); s.ThrottleReplies != 3 {
		t.Errorf("ThrottleReplies = %d, want 3", s.ThrottleReplies)
	}

	// Recipients per message.
	setLimits(e, func(l *limits) { l.rcptsPerMessage = 2 })
	c = clients[2]
	c.Mail(mailbox, nil)
	c.Rcpt("a@fabrikam.com", nil)
	c.Rcpt("b@fabrikam.com", nil)
	wantReply(t, c.Rcpt("c@fabrikam.com", nil), 452, "4.5.3", "Too many recipients")
}

func TestSMTPFaults(t *testing.T) {
	e := start(t, testConfig(t))
	tok := token(t, e, clientID, smtpScope)
	c, err := dialSMTP(t, e, mailbox, tok)
	if err != nil {
		t.Fatal(err)
	}
	e.SetFaults(Faults{RcptTemp: []string{"busy@fabrikam.com"}, RcptPerm: []string{"gone@fabrikam.com"}})
	c.Mail(mailbox, nil)
	wantReply(t, c.Rcpt("busy@fabrikam.com", nil), 451, "4.4.0", "")
	wantReply(t, c.Rcpt("Gone@Fabrikam.com", nil), 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound")
	if err := c.Rcpt("ops@fabrikam.com", nil); err != nil {
		t.Fatal(err)
	}
	c.Reset()

	// DropAfterData: the message is recorded, the 250 never comes.
	e.SetFaults(Faults{DropAfterData: true})
	err = send(c, mailbox, []string{"ops@fabrikam.com"}, testMessage)
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("DropAfterData: got %v, want the connection closed without a reply", err)
	}
	if n := len(e.Messages()); n != 1 {
		t.Fatalf("DropAfterData recorded %d messages, want 1", n)
	}

	// DropRate 1: the connection dies at the first command.
	e.SetFaults(Faults{DropRate: 1})
	w, _ := dialWire(t, e)
	w.send("EHLO x")
	w.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := w.r.ReadString('\n'); err != io.EOF {
		t.Errorf("DropRate 1: read %v, want EOF", err)
	}
}

func TestSMTPRefusesOldTLS(t *testing.T) {
	e := start(t, testConfig(t))
	w, _ := dialWire(t, e)
	w.cmd("EHLO x")
	if got := w.cmd("STARTTLS"); got != "220 2.0.0 SMTP server ready" {
		t.Fatalf("STARTTLS: %q", got)
	}
	tc := tls.Client(w.c, &tls.Config{RootCAs: e.RootCAs(), ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11})
	if err := tc.Handshake(); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

func TestSMTPSurvivesGarbage(t *testing.T) {
	e := start(t, testConfig(t))
	w, _ := dialWire(t, e)
	hasPrefix(t, "long line", w.cmd("EHLO "+strings.Repeat("x", 100<<10)), "500 5.3.3 Line too long")
	hasPrefix(t, "binary junk", w.cmd("\x00\xff\xfe junk"), "500 5.3.3 Unrecognized command")
	hasPrefix(t, "empty", w.cmd(""), "500 5.3.3 Unrecognized command")
	hasPrefix(t, "bad MAIL", w.cmd("MAIL FROM:<"), "503 5.5.1 Send hello first")
	w.cmd("EHLO x")
	hasPrefix(t, "bad BDAT", w.cmd("BDAT -1"), "501 5.5.4")
	w.startTLS(e)
	w.cmd("EHLO x")
	hasPrefix(t, "bad base64", w.cmd("AUTH XOAUTH2 %%%"), "501 5.5.2 Cannot Base64-decode")
	hasPrefix(t, "not XOAUTH2", w.cmd("AUTH XOAUTH2 "+base64.StdEncoding.EncodeToString([]byte("\x01\x01junk"))), "535 5.7.3")
	hasPrefix(t, "cancelled", w.cmd("AUTH XOAUTH2"), "334 ")
	hasPrefix(t, "cancel", w.cmd("*"), "501 5.7.0 Authentication aborted")
	// Too many errors end the session: six so far, the tenth is the last.
	var last string
	for range maxErrors - 6 {
		w.send("NOPE")
		last = w.read()
	}
	hasPrefix(t, "too many errors", last, "500 5.3.3")
	hasPrefix(t, "closing", w.read(), "421 4.7.0 Too many errors")

	// Random bytes, then a client that hangs up mid-command: the server goes on.
	c, err := net.Dial("tcp", e.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(bytes.Repeat([]byte{0x16, 0x03, 0x01, 0xff, 0x00}, 1000))
	c.Close()
	if _, err := dialSMTP(t, e, mailbox, token(t, e, clientID, smtpScope)); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
}
