package transport

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Connect authenticates as Send would, says what the server showed, and
// leaves the connection for the next Send.
func TestSMTPConnect(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	toks := newTokens("tok-1")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool})
	info, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.TLSVersion, "TLS 1.") || info.CipherSuite == "" || info.VerifiedHost != "127.0.0.1" {
		t.Errorf("TLS %q, cipher %q, verified for %q", info.TLSVersion, info.CipherSuite, info.VerifiedHost)
	}
	if !offersAuth(info.Extensions["AUTH"], "XOAUTH2") {
		t.Errorf("extensions %v lack AUTH XOAUTH2", info.Extensions)
	}
	if info.AuthReply.Code != 235 {
		t.Errorf("AUTH reply %v", info.AuthReply)
	}
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if conns, auths, msgs := x.snapshot(); conns != 1 || len(auths) != 1 || len(msgs) != 1 {
		t.Errorf("%d connections, %d AUTH, %d messages; want 1 each", conns, len(auths), len(msgs))
	}
}

// With NoRenew, the first 535 is the answer: no renewal, no second try.
func TestSMTPConnectNoRenew(t *testing.T) {
	srvTLS, pool := testPKI(t)
	x := startExchange(t, srvTLS, nil)
	x.accept = map[string]bool{"fresh": true}
	toks := newTokens("stale", "fresh")
	c := newClient(t, x.addr, toks, SMTPConfig{RootCAs: pool, NoRenew: true})
	_, err := c.Connect(context.Background())
	fe := wantClass(t, err, failure.Config)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "AUTH" || se.Reply == nil || se.Reply.Code != 535 || se.Reply.Enhanced != "5.7.3" {
		t.Fatalf("cause %#v", se)
	}
	if !strings.HasPrefix(fe.Reply, "535 5.7.3 Authentication unsuccessful") {
		t.Errorf("reply %q", fe.Reply)
	}
	if _, renew := toks.counts(); renew != 0 {
		t.Errorf("%d renewals, want 0", renew)
	}
	if conns, auths, _ := x.snapshot(); conns != 1 || len(auths) != 1 {
		t.Errorf("%d connections, %d AUTH; want 1, 1", conns, len(auths))
	}
}

// plain serves one connection in clear text: it writes greeting, then
// for each line it reads the next of replies, and closes.
func plain(t *testing.T, greeting string, replies ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, greeting)
		br := bufio.NewReader(c)
		for _, r := range replies {
			if _, err := br.ReadString('\n'); err != nil {
				return
			}
			io.WriteString(c, r)
		}
	}()
	return ln.Addr().String()
}

// Each failed step of connecting names itself and keeps its cause.
func TestSMTPConnectSteps(t *testing.T) {
	srvTLS, pool := testPKI(t)
	_, otherPool := testPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	var unknownCA x509.UnknownAuthorityError
	for _, tc := range []struct {
		name  string
		addr  string
		roots *x509.CertPool
		step  string
		class failure.Class
		reply string // the refusal, "" for none
		cause func(error) bool
	}{
		{"closed port", closed, pool, "connect", failure.Temporary, "", func(err error) bool {
			var op *net.OpError
			return errors.As(err, &op)
		}},
		{"greeting refused", plain(t, "554-5.3.2 Service unavailable\r\n554 5.3.2 closing\r\n"), pool, "greeting", failure.Config,
			"554 5.3.2 Service unavailable closing", nil},
		{"STARTTLS refused", plain(t, "220 ready\r\n", "250-hello\r\n250 STARTTLS\r\n", "454 4.7.0 TLS not available\r\n"), pool,
			"STARTTLS", failure.Temporary, "454 4.7.0 TLS not available", nil},
		{"data after the STARTTLS reply", plain(t, "220 ready\r\n", "250-hello\r\n250 STARTTLS\r\n", "220 go ahead\r\n250 injected\r\n"), pool,
			"STARTTLS", failure.Temporary, "", func(err error) bool { return strings.Contains(err.Error(), "sent data after its STARTTLS reply") }},
		{"no STARTTLS", startScript(t, srvTLS, &script{noStartTLS: true}).addr, pool, "STARTTLS", failure.Config, "", func(err error) bool {
			return errors.Is(err, ErrNoSTARTTLS) && strings.Contains(err.Error(), "does not offer STARTTLS")
		}},
		{"untrusted certificate", startScript(t, srvTLS, &script{}).addr, otherPool, "TLS handshake", failure.Config, "", func(err error) bool {
			return errors.As(err, &unknownCA)
		}},
		{"no XOAUTH2", startScript(t, srvTLS, &script{caps: []string{"AUTH LOGIN PLAIN"}}).addr, pool, "AUTH", failure.Config, "", func(err error) bool {
			return errors.Is(err, ErrNoXOAUTH2) && strings.Contains(err.Error(), "does not offer AUTH XOAUTH2 (AUTH LOGIN PLAIN)")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.addr, newTokens("t"), SMTPConfig{RootCAs: tc.roots})
			_, err := c.Connect(context.Background())
			fe := wantClass(t, err, tc.class)
			var se *StepError
			if !errors.As(err, &se) || se.Step != tc.step {
				t.Fatalf("cause %#v, want step %s", se, tc.step)
			}
			switch {
			case tc.reply != "":
				if se.Reply == nil || se.Reply.String() != tc.reply || fe.Reply != tc.reply {
					t.Errorf("refusal %v, reply %q; want %q", se.Reply, fe.Reply, tc.reply)
				}
			case se.Reply != nil:
				t.Errorf("a refusal %v where there was none", se.Reply)
			}
			if tc.cause != nil && !tc.cause(se) {
				t.Errorf("cause %v (%T)", se.Err, se.Err)
			}
		})
	}
}
