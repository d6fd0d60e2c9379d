package check

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

func testChecker() *checker {
	a := &conf.Account{Name: "t", ClientID: "5d3c2b1a-7e6f-4a8b-9c0d-e1f2a3b4c5d6", Mailbox: "alerts@contoso.com"}
	return &checker{cfg: &conf.Config{}, a: a, r: &report{w: &strings.Builder{}}}
}

func TestExplainReply(t *testing.T) {
	c := testChecker()
	withRole := &token.Claims{ObjectID: "sp-object-id", Roles: []string{roleSMTP}, Audience: "https://outlook.office365.com"}
	graphToken := &token.Claims{ObjectID: "sp-object-id", Roles: []string{roleGraph}, Audience: "https://graph.microsoft.com"}
	for _, tc := range []struct {
		reply  string
		claims *token.Claims
		class  failure.Class
		want   []string
		absent []string
	}{
		{"535 5.7.3 Authentication unsuccessful", withRole, failure.Config,
			[]string{"1. the service principal was registered with the App registration's object id", "-ObjectId sp-object-id", "remove SMTP.SendAsApp from the app"},
			[]string{"lacks SMTP.SendAsApp"}},
		{"535 5.7.3 Authentication unsuccessful", graphToken, failure.Config,
			[]string{"1. the token is for Microsoft Graph", "2. the app lacks SMTP.SendAsApp"}, nil},
		{"535 5.7.3 Authentication unsuccessful", nil, failure.Config,
			[]string{"<object id under Entra > Enterprise applications>"}, nil},
		{"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", nil, failure.Config,
			[]string{"Set-CASMailbox -Identity alerts@contoso.com -SmtpClientAuthenticationDisabled $false"}, nil},
		{"430 4.2.0 STOREDRV; mailbox logon failure", withRole, failure.Config,
			[]string{"Add-MailboxPermission -Identity alerts@contoso.com -User sp-object-id -AccessRights FullAccess"}, nil},
		{"554 5.2.252 SendAsDenied; alerts@contoso.com not allowed to send as x@contoso.com; STOREDRV.Submission.Exception", nil, failure.Config,
			[]string{"Add-RecipientPermission -Identity <that address> -AccessRights SendAs -Trustee alerts@contoso.com"}, nil},
		{"432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", nil, failure.Throttled, []string{"more than 3 connections"}, nil},
		{"550 5.2.252 Sender throttled due to continuous send as denied errors", nil, failure.Throttled, []string{"continuous errors"}, nil},
		{"421 4.7.0 Server busy", nil, failure.Temporary, []string{"busy"}, nil},
		{"550 5.7.708 Access denied, traffic not accepted from this IP", nil, failure.Permanent, []string{"delist"}, nil},
	} {
		r, ok := transport.ParseReply(tc.reply)
		if !ok {
			t.Fatalf("ParseReply(%q) failed", tc.reply)
		}
		class, meaning, fix := c.explainReply(r, tc.claims)
		text := meaning + " " + fix
		if class != tc.class {
			t.Errorf("%q: class %v, want %v", tc.reply, class, tc.class)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%q: explanation lacks %q:\n%s", tc.reply, w, text)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(text, a) {
				t.Errorf("%q: explanation holds %q", tc.reply, a)
			}
		}
	}
}

func TestExplainNetwork(t *testing.T) {
	c := testChecker()
	for _, tc := range []struct {
		err   error
		class failure.Class
		want  string
	}{
		{x509.UnknownAuthorityError{}, failure.Config, "set ca_file"},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "10.0.0.1"}, failure.Config, "DNS name"},
		{transport.ErrNoSTARTTLS, failure.Config, "smtp.office365.com:587"},
		{fmt.Errorf("%w (AUTH LOGIN)", transport.ErrNoXOAUTH2), failure.Config, "smtp.example:587 does not offer AUTH XOAUTH2 (AUTH LOGIN) smtp_server must be"},
		{&net.DNSError{Err: "no such host", Name: "smtp.example", IsNotFound: true}, failure.Config, "no such host"},
		{context.DeadlineExceeded, failure.Temporary, "no answer"},
		{errors.New("connection reset by peer"), failure.Temporary, "try again"},
	} {
		class, what, fix := c.explainNetwork("smtp.example:587", "TLS handshake", tc.err)
		if class != tc.class || !strings.Contains(what+" "+fix, tc.want) {
			t.Errorf("%v: %v %q — %q; want %v with %q", tc.err, class, what, fix, tc.class, tc.want)
		}
	}
}

// scripted serves one SMTP connection on the loopback: for each line it
// reads, it writes the next reply of script.
func scripted(t *testing.T, greeting string, script ...string) (addr string, got chan []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan []string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Minute))
		var lines []string
		fmt.Fprint(conn, greeting)
		rd := bufio.NewReader(conn)
		for _, reply := range script {
			line, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			lines = append(lines, strings.TrimRight(line, "\r\n"))
			fmt.Fprint(conn, reply)
		}
		got <- lines
	}()
	return ln.Addr().String(), got
}

// fixedToken is a token source that always hands out the same token.
type fixedToken string

func (t fixedToken) Token(context.Context) (string, error)         { return string(t), nil }
func (t fixedToken) Renew(context.Context, string) (string, error) { return string(t), nil }

// authenticateAt runs the check's SMTP step against addr and returns the
// report.
func authenticateAt(t *testing.T, addr string) (*checker, string) {
	t.Helper()
	c := testChecker()
	c.cfg.Hostname = "host.example.com"
	c.ep.SMTPServer = addr
	s := c.newSMTP(fixedToken("tok"))
	defer s.Close()
	if c.authenticate(context.Background(), s, nil) {
		t.Fatal("authenticated")
	}
	return c, c.r.w.(*strings.Builder).String()
}

func TestSMTPWithoutSTARTTLS(t *testing.T) {
	addr, got := scripted(t, "220 mail.example ESMTP\r\n",
		"250-mail.example\r\n250-SIZE 1000\r\n250 AUTH LOGIN PLAIN\r\n")
	c, out := authenticateAt(t, addr)
	if !strings.Contains(out, "FAIL smtp: "+addr+" does not offer STARTTLS — smtp_server must be") || c.r.outcome() != Failed {
		t.Errorf("report %q, outcome %v", out, c.r.outcome())
	}
	if lines := <-got; len(lines) != 1 || lines[0] != "EHLO host.example.com" {
		t.Errorf("client said %q", lines)
	}
}

func TestSMTPGreetingRefused(t *testing.T) {
	addr, _ := scripted(t, "421-4.3.2 Service not available\r\n421 4.3.2 closing\r\n")
	c, out := authenticateAt(t, addr)
	if !strings.Contains(out, "answered greeting with 421 4.3.2 Service not available closing") || c.r.outcome() != TempFailed {
		t.Errorf("report %q, outcome %v", out, c.r.outcome())
	}
}

func TestReportRedacts(t *testing.T) {
	var out strings.Builder
	r := &report{w: &out}
	r.secret("eyJ0eXAiOiJKV1QifQ.payload.signature")
	r.fail(failure.Config, "token", "server echoed eyJ0eXAiOiJKV1QifQ.payload.signature back", "")
	if strings.Contains(out.String(), "payload.signature") || !strings.Contains(out.String(), "[hidden]") {
		t.Errorf("report %q", out.String())
	}
}

// A server certificate this host does not trust fails the TLS handshake
// step with the ca_file remedy.
func TestSMTPUntrustedCertificate(t *testing.T) {
	e, err := emulator.Start(emulator.Config{Dir: t.TempDir(), Tenant: "contoso.onmicrosoft.com", Mailboxes: []emulator.Mailbox{{Address: "alerts@contoso.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := testChecker()
	c.ep.SMTPServer, c.roots = e.SMTPAddr, x509.NewCertPool()
	s := c.newSMTP(fixedToken("tok"))
	defer s.Close()
	if c.authenticate(context.Background(), s, nil) {
		t.Fatal("authenticated with an untrusted certificate")
	}
	out := c.r.w.(*strings.Builder).String()
	if !strings.Contains(out, "FAIL smtp: "+e.SMTPAddr+": the server's TLS certificate is signed by a CA this host does not trust") ||
		!strings.Contains(out, "set ca_file") || c.r.outcome() != Failed {
		t.Errorf("report %q, outcome %v", out, c.r.outcome())
	}
}
