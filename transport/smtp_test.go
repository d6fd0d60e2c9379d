package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

const mailbox = "app@contoso.test"

func newClient(t *testing.T, addr string, toks TokenSource, cfg SMTPConfig) *SMTP {
	t.Helper()
	cfg.Server, cfg.Tokens = addr, toks
	if cfg.Mailbox == "" {
		cfg.Mailbox = mailbox
	}
	if cfg.HeloName == "" {
		cfg.HeloName = "host.example.test"
	}
	c := NewSMTP(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

func wantClass(t *testing.T, err error, want failure.Class) *failure.Error {
	t.Helper()
	var fe *failure.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *failure.Error", err, err)
	}
	if fe.Class != want {
		t.Fatalf("class %v, want %v: %v", fe.Class, want, err)
	}
	return fe
}

// The exact dialogue, as the server receives it: EHLO with our name before
// and after STARTTLS, the XOAUTH2 initial response on the AUTH line, and
// nothing superfluous (no RSET, no second EHLO) for the second message.
func TestSMTPTranscript(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{})
	c := newClient(t, s.addr, newTokens("tok-1"), SMTPConfig{RootCAs: pool})
	body := "From: app@contoso.test\nTo: bob@fabrikam.test\n\n.hidden dot\nend\n"
	for range 2 {
		res, err := c.Send(context.Background(), textMessage(mailbox, body, "bob@fabrikam.test"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Reply != scriptDefaults["."] || res.Rejected != nil {
			t.Fatalf("result %+v", res)
		}
	}
	c.Close()
	conv := s.conv(0)
	if len(conv) < 4 {
		t.Fatalf("conversation %q", conv)
	}
	payload, err := authPayload(conv[3])
	if err != nil {
		t.Fatal(err)
	}
	if want := "user=app@contoso.test\x01auth=Bearer tok-1\x01\x01"; payload != want {
		t.Errorf("XOAUTH2 payload %q, want %q", payload, want)
	}
	conv[3] = "AUTH XOAUTH2 <payload>"
	mail := "MAIL FROM:<app@contoso.test> SIZE=" + strconv.Itoa(len(body))
	want := []string{
		"EHLO host.example.test", "STARTTLS", "EHLO host.example.test", "AUTH XOAUTH2 <payload>",
		mail, "RCPT TO:<bob@fabrikam.test>", "DATA", ".",
		mail, "RCPT TO:<bob@fabrikam.test>", "DATA", ".",
		"QUIT",
	}
	if strings.Join(conv, "\n") != strings.Join(want, "\n") {
		t.Errorf("dialogue\n%s\nwant\n%s", strings.Join(conv, "\n"), strings.Join(want, "\n"))
	}
	if n := s.nconns(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// Exchange may answer the XOAUTH2 response with a 334 carrying a JSON error:
// the client answers with an empty line and reports the JSON.
func TestSMTPAuthChallengeJSON(t *testing.T) {
	srvTLS, pool := testPKI(t)
	js := `{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}`
	refuse := "535 5.7.3 Authentication unsuccessful [PR0501.namprd05.prod.outlook.com]"
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"AUTH": {"334 " + base64.StdEncoding.EncodeToString([]byte(js)), "334 " + base64.StdEncoding.EncodeToString([]byte(js))},
		"":     {refuse, refuse},
	}})
	toks := newTokens("tok-1", "tok-2")
	c := newClient(t, s.addr, toks, SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "Subject: x\n\nx\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Reply, refuse) || !strings.Contains(fe.Reply, js) {
		t.Errorf("reply %q lacks the 535 or the JSON", fe.Reply)
	}
	conv := s.conv(0)
	if len(conv) != 5 || conv[4] != "" {
		t.Errorf("after the 334 the client must send an empty line: %q", conv)
	}
	if _, renew := toks.counts(); renew != 1 {
		t.Errorf("%d renewals, want 1", renew)
	}
}

// N messages over one connection with one AUTH and one token.
func TestSMTPReuse(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	toks := newTokens("tok-1")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	for i := range 5 {
		body := "Subject: " + strconv.Itoa(i) + "\r\n\r\nbody\r\n"
		if _, err := c.Send(context.Background(), textMessage(mailbox, body, "bob@fabrikam.test")); err != nil {
			t.Fatal(err)
		}
	}
	conns, auths, msgs := x.snapshot()
	if conns != 1 || len(auths) != 1 || len(msgs) != 5 {
		t.Errorf("%d connections, %d AUTH, %d messages; want 1, 1, 5", conns, len(auths), len(msgs))
	}
	if tok, _ := toks.counts(); tok != 1 {
		t.Errorf("%d token calls, want 1", tok)
	}
	if got := string(msgs[4].data); got != "Subject: 4\r\n\r\nbody\r\n" {
		t.Errorf("message bytes %q", got)
	}
}

// A token refused with 535 5.7.3 is renewed once, on a new connection.
func TestSMTPAuthRenew(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	x.accept = map[string]bool{"fresh": true}
	toks := newTokens("stale", "fresh")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	if _, err := c.Send(context.Background(), textMessage(mailbox, "Subject: x\r\n\r\nx\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	conns, auths, msgs := x.snapshot()
	if conns != 2 || len(auths) != 2 || len(msgs) != 1 {
		t.Errorf("%d connections, %d AUTH, %d messages; want 2, 2, 1", conns, len(auths), len(msgs))
	}
	if len(toks.staleSeen) != 1 || toks.staleSeen[0] != "stale" {
		t.Errorf("Renew got %q, want the refused token", toks.staleSeen)
	}
	if auths[1] != mailbox+"|fresh" {
		t.Errorf("second AUTH %q", auths[1])
	}
}

// Refused twice: a configuration error naming the likely causes.
func TestSMTPAuthRefusedTwice(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	x.accept = map[string]bool{}
	toks := newTokens("a", "b", "c")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "Subject: x\r\n\r\nx\r\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.HasPrefix(fe.Reply, "535 5.7.3 Authentication unsuccessful") {
		t.Errorf("reply %q", fe.Reply)
	}
	for _, w := range []string{"SMTP.SendAsApp", "New-ServicePrincipal", "https://outlook.office365.com", mailbox} {
		if !strings.Contains(fe.Remedy, w) {
			t.Errorf("remedy lacks %q: %s", w, fe.Remedy)
		}
	}
	if tok, renew := toks.counts(); tok != 1 || renew != 1 {
		t.Errorf("%d token, %d renew calls; want 1, 1", tok, renew)
	}
	if _, auths, _ := x.snapshot(); len(auths) != 2 {
		t.Errorf("%d AUTH attempts, want 2", len(auths))
	}
}

func TestSMTPAuthDisabled(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	x.authErr = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139},
		Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."}
	toks := newTokens("a", "b")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Remedy, "Set-CASMailbox -Identity "+mailbox+" -SmtpClientAuthenticationDisabled $false") {
		t.Errorf("remedy %q", fe.Remedy)
	}
	if _, renew := toks.counts(); renew != 0 {
		t.Errorf("renewed %d times for 5.7.139, want 0", renew)
	}
}

// Errors of the token source come back as they are.
func TestSMTPTokenError(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	toks := newTokens("a")
	toks.tokenErr = &failure.Error{Class: failure.Config, Reply: "AADSTS7000215: Invalid client secret provided."}
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	if err != toks.tokenErr {
		t.Errorf("error %v, want the token source's", err)
	}
	if conns, _, _ := x.snapshot(); conns != 0 {
		t.Errorf("connected without a token")
	}
}

// A real-size Entra token (2.5 KB) makes an AUTH line of 3.4 KB.
func TestSMTPLongToken(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	tok := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("x", 2500)
	c := newClient(t, x.addr, newTokens(tok), SMTPConfig{RootCAs: pool})
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if _, auths, _ := x.snapshot(); len(auths) != 1 || auths[0] != mailbox+"|"+tok {
		t.Errorf("server saw another token")
	}
}

// Each refused recipient gets its own class; the others are delivered.
func TestSMTPMixedRecipients(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	x.rcptErr = map[string]*smtp.SMTPError{
		"gone@fabrikam.test":  {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 10}, Message: "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"},
		"later@fabrikam.test": {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "Temporary server error"},
		"many@fabrikam.test":  {Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"},
	}
	c := newClient(t, x.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	msg := textMessage(mailbox, "x\r\n", "bob@fabrikam.test", "gone@fabrikam.test", "later@fabrikam.test", "many@fabrikam.test", "eve@fabrikam.test")
	res, err := c.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]failure.Class{"gone@fabrikam.test": failure.Permanent, "later@fabrikam.test": failure.Temporary, "many@fabrikam.test": failure.Throttled}
	if len(res.Rejected) != len(want) {
		t.Fatalf("rejected %v", res.Rejected)
	}
	for a, cl := range want {
		if fe := res.Rejected[a]; fe == nil || fe.Class != cl {
			t.Errorf("%s: %v, want %v", a, fe, cl)
		}
	}
	if r := res.Rejected["gone@fabrikam.test"].Reply; r != "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup" {
		t.Errorf("reply %q", r)
	}
	if !strings.HasPrefix(res.Reply, "250 ") {
		t.Errorf("final reply %q", res.Reply)
	}
	if _, _, msgs := x.snapshot(); len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != "bob@fabrikam.test,eve@fabrikam.test" {
		t.Errorf("server got %+v", msgs)
	}
}

// No recipient accepted: the transaction fails, each recipient is still
// listed, and the next message starts with RSET on the same connection.
func TestSMTPAllRecipientsRefused(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"RCPT": {"550 5.1.10 RESOLVER.ADR.RecipientNotFound", "451 4.4.0 try later"},
		"DATA": {"554 5.5.1 Error: no valid recipients"}, // DATA came in the same flight
	}})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	res, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test", "b@fabrikam.test"))
	wantClass(t, err, failure.Temporary) // one of them may still go through later
	if res.Rejected["a@fabrikam.test"].Class != failure.Permanent || res.Rejected["b@fabrikam.test"].Class != failure.Temporary {
		t.Errorf("rejected %v", res.Rejected)
	}
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "c@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	conv := strings.Join(s.conv(0)[4:], "|")
	want := "MAIL FROM:<app@contoso.test> SIZE=3|RCPT TO:<a@fabrikam.test>|RCPT TO:<b@fabrikam.test>|DATA|RSET|MAIL FROM:<app@contoso.test> SIZE=3|RCPT TO:<c@fabrikam.test>|DATA|."
	if conv != want {
		t.Errorf("dialogue %s\nwant     %s", conv, want)
	}

	// Without PIPELINING, DATA is not sent once every recipient is refused.
	s = startScript(t, srvTLS, &script{caps: []string{"AUTH XOAUTH2"}, replies: map[string][]string{
		"RCPT": {"550 5.1.10 RESOLVER.ADR.RecipientNotFound"},
	}})
	c = newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	_, err = c.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test"))
	wantClass(t, err, failure.Permanent)
	if conv := strings.Join(s.conv(0)[4:], "|"); conv != "MAIL FROM:<app@contoso.test>|RCPT TO:<a@fabrikam.test>" {
		t.Errorf("dialogue without PIPELINING %s", conv)
	}

	// No recipient that can be written as a command: no transaction at all.
	res, err = c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bad>addr@fabrikam.test"))
	wantClass(t, err, failure.Permanent)
	if res.Rejected["bad>addr@fabrikam.test"] == nil || len(s.conv(0)) != 6 {
		t.Errorf("rejected %v; dialogue %s", res.Rejected, strings.Join(s.conv(0), "|"))
	}
}

// PIPELINING: MAIL, every RCPT and DATA reach the server in one flight,
// the body in a second; a server without PIPELINING gets one command per
// round trip. The script counts the times it waited for the client.
func TestSMTPPipelining(t *testing.T) {
	srvTLS, pool := testPKI(t)
	for _, c := range []struct {
		name    string
		caps    []string
		flights int // after two messages of two recipients on one connection
	}{
		// EHLO, STARTTLS, EHLO, AUTH: 4 flights; then 2 a message; QUIT
		{"offered", exchangeCaps, 4 + 2 + 2 + 1},
		// 4, then MAIL, RCPT, RCPT, DATA and the body: 5 a message; QUIT
		{"not offered", []string{"SIZE 157286400", "AUTH LOGIN XOAUTH2", "8BITMIME"}, 4 + 5 + 5 + 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startScript(t, srvTLS, &script{caps: c.caps})
			cl := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
			for range 2 {
				if _, err := cl.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test", "b@fabrikam.test")); err != nil {
					t.Fatal(err)
				}
			}
			// Once QUIT is answered, the server has counted every wait.
			cl.Close()
			if s.nconns() != 1 || s.nflights(0) != c.flights {
				t.Errorf("%d connections, %d flights; want 1 and %d\n%s", s.nconns(), s.nflights(0), c.flights, strings.Join(s.conv(0), "|"))
			}
		})
	}
}

// A MAIL refused inside a flight: the RCPT and DATA sent with it get their
// 503s, the error is MAIL's, no further flight is sent, and the connection
// stays in step for the next message (which starts with RSET).
func TestSMTPPipelinedMailRefused(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"MAIL": {"550 5.7.60 SMTP; Client does not have permissions to send as this sender"},
		"RCPT": slices.Repeat([]string{"503 5.5.1 Bad sequence of commands"}, 300),
		"DATA": {"503 5.5.1 Bad sequence of commands"},
	}})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	var many []string
	for i := range 300 {
		many = append(many, fmt.Sprintf("user%03d@fabrikam.test", i))
	}
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", many...))
	if fe := wantClass(t, err, failure.Permanent); fe != nil && !strings.Contains(fe.Reply, "5.7.60") { // Send-As denied: the message's fault
		t.Errorf("error %v: want MAIL's 5.7.60", err)
	}
	// 300 RCPT lines make three flights; MAIL's refusal is known when the
	// first has been answered.
	first := slices.Clone(s.conv(0)[4:])
	if n := len(first); n < 10 || n > 200 || first[n-1] == "DATA" {
		t.Errorf("%d commands sent after a refused MAIL, ending with %q: want the first flight only", n, first[n-1])
	}
	s.mu.Lock()
	s.replies["RCPT"], s.replies["DATA"] = nil, nil // the 503s not used up
	s.mu.Unlock()
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "c@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	want := "RSET|MAIL FROM:<app@contoso.test> SIZE=3|RCPT TO:<c@fabrikam.test>|DATA|."
	if conv := strings.Join(s.conv(0)[4+len(first):], "|"); conv != want || s.nconns() != 1 {
		t.Errorf("%d connections, then %s\nwant %s", s.nconns(), conv, want)
	}
}

// The verdict on a message stands when the server then drops the
// connection: a MAIL throttled (451 4.7.500) inside a flight whose RCPT
// gets 421 is throttling, not a mere temporary failure.
func TestSMTPPipelinedVerdictBefore421(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"MAIL": {"451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (S77719)"},
		"RCPT": {"421 4.7.0 Too many errors on this connection, closing transmission channel"},
	}})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test", "b@fabrikam.test"))
	wantClass(t, err, failure.Throttled)
}

// A server that answers DATA with 354 after refusing MAIL may have taken
// the recipients: the message is not ended (it could go out empty); the
// connection is dropped and the next message gets a new one.
func TestSMTPPipelinedDataAfterMailRefused(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"MAIL": {"550 5.7.60 SMTP; Client does not have permissions to send as this sender"},
	}})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test"))
	wantClass(t, err, failure.Permanent)
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "a@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if conv := strings.Join(s.conv(0)[4:], "|"); conv != "MAIL FROM:<app@contoso.test> SIZE=3|RCPT TO:<a@fabrikam.test>|DATA" || s.nconns() != 2 {
		t.Errorf("%d connections; the first saw %s", s.nconns(), conv)
	}
}

// A transaction larger than a flight goes in several, each answered
// before the next is sent, and every recipient is accepted.
func TestSMTPPipelinedFlights(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	var many []string
	for i := range 300 {
		many = append(many, fmt.Sprintf("user%03d@fabrikam.test", i))
	}
	res, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", many...))
	if err != nil || len(res.Rejected) != 0 {
		t.Fatalf("%v, rejected %v", err, res.Rejected)
	}
	c.Close()
	rcpts := 0
	for _, l := range s.conv(0) {
		if strings.HasPrefix(l, "RCPT TO:") {
			rcpts++
		}
	}
	// 301 commands of about 30 bytes in 4 KB flights: 3; then the body and QUIT.
	if rcpts != 300 || s.nflights(0) != 4+3+1+1 {
		t.Errorf("%d RCPT sent, %d flights; want 300 and %d", rcpts, s.nflights(0), 4+3+1+1)
	}
}

// A server that answers DATA with 354 although it took no recipient gets
// an empty message, ended at once: the body is never sent to nobody.
func TestSMTPPipelinedDataWithoutRecipients(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{replies: map[string][]string{
		"RCPT": {"550 5.1.10 RESOLVER.ADR.RecipientNotFound"},
		".":    {"554 5.5.1 Error: no valid recipients"},
	}})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	res, err := c.Send(context.Background(), textMessage(mailbox, "secret body\r\n", "a@fabrikam.test"))
	wantClass(t, err, failure.Permanent)
	if res.Rejected["a@fabrikam.test"] == nil {
		t.Errorf("rejected %v", res.Rejected)
	}
	s.mu.Lock()
	bodies := s.bodies
	s.mu.Unlock()
	if len(bodies) != 1 || bodies[0] != "" {
		t.Errorf("bodies the server received: %q, want one empty", bodies)
	}
	want := "MAIL FROM:<app@contoso.test> SIZE=13|RCPT TO:<a@fabrikam.test>|DATA|."
	if conv := strings.Join(s.conv(0)[4:], "|"); conv != want {
		t.Errorf("dialogue %s\nwant     %s", conv, want)
	}
}

// Every reply of the reference table, at the stage Exchange sends it.
func TestSMTPReplyClasses(t *testing.T) {
	cases := []struct {
		verb, reply string
		class       failure.Class
		remedy      string // a word the remedy must contain
	}{
		{"AUTH", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", failure.Config, "Set-CASMailbox"},
		{".", "430 4.2.0 STOREDRV; mailbox logon failure", failure.Config, "Add-MailboxPermission"},
		{"AUTH", "550 5.7.30 Basic authentication is not supported for Client Submission.", failure.Config, "smtp.office365.com"},
		{"MAIL", "530 5.7.57 Client not authenticated to send mail. [PR0501]", failure.Config, "bug"},
		{".", "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException", failure.Config, "quota"},
		{"MAIL", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", failure.Throttled, ""},
		{".", "550 5.2.251 Sender throttled due to continuous invalid recipients errors", failure.Throttled, ""},
		{".", "550 5.2.255 Sender throttled due to continuous send as denied errors", failure.Throttled, ""},
		{".", "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message", failure.Throttled, ""},
		{"MAIL", "421 4.3.2 Service not available", failure.Throttled, ""},
		{".", "554 5.2.252 SendAsDenied; app@contoso.test not allowed to send as root@host.test", failure.Permanent, ""},
		{".", "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", failure.Permanent, ""},
		{".", "550 5.7.60 SMTP; Client does not have permissions to send as this sender", failure.Permanent, ""},
		{".", "552 5.3.4 Message size exceeds fixed maximum message size", failure.Permanent, ""},
		{".", "550 5.7.512 Access denied, message must contain only one valid From: address", failure.Permanent, ""},
		{"MAIL", "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", failure.Permanent, "IP"},
		{".", "554 5.6.0 Corrupt message content", failure.Permanent, ""},
		{"DATA", "451 4.7.500 Server busy. Please try again later", failure.Throttled, ""},
		{"MAIL", "421 4.4.2 Connection dropped due to SocketError", failure.Temporary, ""},
		{".", "452 4.3.1 Insufficient system resources", failure.Temporary, ""},
	}
	srvTLS, pool := testPKI(t)
	for _, tc := range cases {
		t.Run(tc.reply[:9], func(t *testing.T) {
			s := startScript(t, srvTLS, &script{replies: map[string][]string{tc.verb: {tc.reply}}})
			c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
			_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
			fe := wantClass(t, err, tc.class)
			if fe.Reply != tc.reply {
				t.Errorf("reply %q, want %q", fe.Reply, tc.reply)
			}
			if !strings.Contains(fe.Remedy, tc.remedy) {
				t.Errorf("remedy %q lacks %q", fe.Remedy, tc.remedy)
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || strconv.Itoa(se.Code) != tc.reply[:3] {
				t.Errorf("cause %v is not the SMTP reply", fe.Err)
			}
		})
	}
}

// BODY=8BITMIME, SMTPUTF8 and the DSN parameters only when offered.
func TestSMTPParametersOnlyWhenOffered(t *testing.T) {
	srvTLS, pool := testPKI(t)
	msg := textMessage(mailbox, "x\r\n", "bob@fabrikam.test")
	msg.Body8Bit, msg.Ret, msg.EnvID = true, "hdrs", "Q1+id"
	msg.Recipients[0].Notify, msg.Recipients[0].ORcpt = "failure,delay", "rfc822;Bob@fabrikam.test"

	bare := startScript(t, srvTLS, &script{caps: []string{"AUTH XOAUTH2", "ENHANCEDSTATUSCODES"}})
	c := newClient(t, bare.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(bare.conv(0)[4:6], "|"); got != "MAIL FROM:<app@contoso.test>|RCPT TO:<bob@fabrikam.test>" {
		t.Errorf("without extensions: %s", got)
	}

	full := startScript(t, srvTLS, &script{})
	c = newClient(t, full.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	want := "MAIL FROM:<app@contoso.test> SIZE=3 BODY=8BITMIME RET=HDRS ENVID=Q1+2Bid|RCPT TO:<bob@fabrikam.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;Bob@fabrikam.test"
	if got := strings.Join(full.conv(0)[4:6], "|"); got != want {
		t.Errorf("with extensions: %s\nwant %s", got, want)
	}

	// SMTPUTF8: asked for and offered, asked for and not offered.
	utf := textMessage("app@contoso.test", "x\r\n", "jörg@fabrikam.test")
	if _, err := c.Send(context.Background(), utf); err != nil {
		t.Fatal(err)
	}
	if got := full.conv(0)[8]; got != "MAIL FROM:<app@contoso.test> SIZE=3 SMTPUTF8" {
		t.Errorf("SMTPUTF8 offered: %s", got)
	}
	c = newClient(t, bare.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), utf)
	fe := wantClass(t, err, failure.Permanent)
	if !strings.Contains(fe.Error(), "lacks SMTPUTF8") {
		t.Errorf("error %v", fe)
	}
	if conv := bare.conv(1); len(conv) != 4 {
		t.Errorf("a MAIL was sent anyway: %q", conv)
	}
}

// The same parameters, as go-smtp's server parses them.
func TestSMTPParametersParsed(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, func(s *smtp.Server) { s.EnableDSN, s.EnableSMTPUTF8 = true, true })
	c := newClient(t, x.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	msg := textMessage("", "x\r\n", "bob@fabrikam.test")
	msg.Ret, msg.EnvID, msg.SMTPUTF8 = "FULL", "env 1", true
	msg.Recipients[0].Notify, msg.Recipients[0].ORcpt = "NEVER", "bob@fabrikam.test"
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	_, _, msgs := x.snapshot()
	m := msgs[0]
	if m.from != "" || m.opts.Return != smtp.DSNReturnFull || m.opts.EnvelopeID != "env 1" || !m.opts.UTF8 || m.opts.Size != 3 {
		t.Errorf("MAIL parsed as %+v from %q", m.opts, m.from)
	}
	if r := m.ropts[0]; len(r.Notify) != 1 || r.Notify[0] != smtp.DSNNotifyNever || r.OriginalRecipient != "bob@fabrikam.test" {
		t.Errorf("RCPT parsed as %+v", r)
	}
}

// The trace shows the dialogue but neither the token nor the message.
func TestSMTPTraceHidesToken(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	var trace bytes.Buffer
	tok := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part.signature"
	c := newClient(t, x.addr, newTokens(tok), SMTPConfig{RootCAs: pool, Trace: &trace})
	body := "Subject: confidential\r\n\r\nthe body text\r\n"
	if _, err := c.Send(context.Background(), textMessage(mailbox, body, "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	tr := trace.String()
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + mailbox + "\x01auth=Bearer " + tok + "\x01\x01"))
	for _, secret := range []string{tok, "secret-part", ir, ir[:40], "the body text"} {
		if strings.Contains(tr, secret) {
			t.Errorf("trace contains %q:\n%s", secret, tr)
		}
	}
	for _, line := range []string{"C: EHLO host.example.test", "C: STARTTLS", "C: AUTH XOAUTH2 [token hidden]", "S: 235 ",
		"C: RCPT TO:<bob@fabrikam.test>", "C: <" + strconv.Itoa(len(body)) + " bytes of message>", "C: QUIT", "S: 221 "} {
		if !strings.Contains(tr, "\n"+line) {
			t.Errorf("trace lacks %q:\n%s", line, tr)
		}
	}
}

// A server that stops reading the message fails the send within the data
// timeout: the body write has a deadline.
func TestSMTPBodyDeadline(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{stallData: make(chan struct{})})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool, DataTimeout: 200 * time.Millisecond})
	_, err := c.Send(context.Background(), bigMessage(64<<20, "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Temporary)
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v is not a timeout", fe)
	}
}

// Cancelling the context interrupts a send that waits on the network.
func TestSMTPContextCancel(t *testing.T) {
	srvTLS, pool := testPKI(t)
	stall := make(chan struct{})
	s := startScript(t, srvTLS, &script{stallData: stall})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stall; cancel() }()
	_, err := c.Send(ctx, bigMessage(64<<20, "bob@fabrikam.test"))
	wantClass(t, err, failure.Temporary)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not say it was cancelled", err)
	}
}

// bigMessage is a message of n bytes made on the fly (never all in memory).
func bigMessage(n int64, rcpts ...string) *Message {
	m := textMessage(mailbox, "", rcpts...)
	m.Size = n
	m.Open = func() (io.ReadCloser, error) {
		line := []byte(strings.Repeat("0123456789abcdef", 4) + "\r\n")
		return io.NopCloser(io.LimitReader(&repeatReader{line: line}, n)), nil
	}
	return m
}

type repeatReader struct {
	line []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.line[r.off:])
		n += c
		r.off = (r.off + c) % len(r.line)
	}
	return n, nil
}

// A reused connection the server closed while idle, or closes with 421 at
// the next command, is replaced without the caller noticing.
func TestSMTPStaleConnection(t *testing.T) {
	srvTLS, pool := testPKI(t)
	for _, tc := range []struct {
		name string
		s    *script
	}{
		{"closed", &script{closeAfter: map[string]bool{".": true}}},
		{"421", &script{replies: map[string][]string{"MAIL": {"", "421 4.4.2 Connection dropped due to ConnectionReset"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startScript(t, srvTLS, tc.s)
			toks := newTokens("t")
			c := newClient(t, s.addr, toks, SMTPConfig{RootCAs: pool})
			for i := range 2 {
				if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			if n := s.nconns(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
			if last := s.conv(1); len(last) < 8 || last[len(last)-1] != "." {
				t.Errorf("second connection: %q", last)
			}
		})
	}
}

// A connection idle longer than IdleTimeout is not used again.
func TestSMTPIdleTimeout(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool, IdleTimeout: time.Nanosecond})
	for range 2 {
		if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.nconns(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if first := s.conv(0); first[len(first)-1] != "." {
		t.Errorf("the idle connection was used again: %q", first)
	}
}

func TestSMTPUntrustedCertificate(t *testing.T) {
	srvTLS, _ := testPKI(t)
	_, otherPool := testPKI(t)
	s := startScript(t, srvTLS, &script{})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: otherPool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Remedy, "certificate of 127.0.0.1 not trusted") || !strings.Contains(fe.Remedy, "ca_file") {
		t.Errorf("remedy %q", fe.Remedy)
	}
	if conv := s.conv(0); len(conv) != 2 {
		t.Errorf("client went on after the failed handshake: %q", conv)
	}
}

func TestSMTPNoSTARTTLS(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{noStartTLS: true})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	wantClass(t, err, failure.Config)
	if !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("error %v", err)
	}
	if conv := s.conv(0); len(conv) != 1 {
		t.Errorf("client went on without TLS: %q", conv)
	}
}

// A message that cannot be read after DATA must not be ended with a dot
// (which would submit it truncated): the connection is dropped instead.
func TestSMTPBodyReadError(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	c := newClient(t, x.addr, newTokens("t"), SMTPConfig{RootCAs: pool})
	msg := textMessage(mailbox, "", "bob@fabrikam.test")
	msg.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), errReader{})), nil
	}
	_, err := c.Send(context.Background(), msg)
	wantClass(t, err, failure.Temporary)
	if !strings.Contains(err.Error(), "read queued message") {
		t.Errorf("error %v", err)
	}
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if _, _, msgs := x.snapshot(); len(msgs) != 1 || string(msgs[0].data) != "x\r\n" {
		t.Errorf("server stored %d messages", len(msgs))
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestSMTPBadEnvelope(t *testing.T) {
	c := NewSMTP(SMTPConfig{Server: "127.0.0.1:1", Tokens: newTokens("t")})
	for _, m := range []*Message{
		textMessage(mailbox, "x"),
		textMessage("a@b>\r\nRCPT TO:<evil@x>", "x", "bob@fabrikam.test"),
		{Recipients: []Recipient{{Addr: "bob@fabrikam.test"}}},
	} {
		_, err := c.Send(context.Background(), m)
		wantClass(t, err, failure.Permanent)
	}
}

// A configured EHLO name that would inject a command is not used.
func TestSMTPHeloNameInjection(t *testing.T) {
	srvTLS, pool := testPKI(t)
	s := startScript(t, srvTLS, &script{})
	c := newClient(t, s.addr, newTokens("t"), SMTPConfig{RootCAs: pool, HeloName: "evil\r\nMAIL FROM:<x@y>"})
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if first := s.conv(0)[0]; strings.Contains(first, "evil") || strings.Contains(first, "MAIL") {
		t.Errorf("first line %q", first)
	}
}

func BenchmarkSMTPReusedConnection(b *testing.B) {
	srvTLS, pool := testPKI(b)
	x := startExchange(b, srvTLS, nil)
	c := NewSMTP(SMTPConfig{Server: x.addr, Mailbox: mailbox, HeloName: "bench.test", RootCAs: pool, Tokens: newTokens("t")})
	defer c.Close()
	msg := textMessage(mailbox, "Subject: bench\r\n\r\n"+strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 160), "bob@fabrikam.test")
	b.SetBytes(msg.Size)
	for b.Loop() {
		if _, err := c.Send(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
	}
}
