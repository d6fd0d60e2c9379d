package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// newSMTP returns the account's SMTP transport, as the flusher's but with
// the check's bounds, and without the renewal of a token refused with 535:
// the check has just fetched it, and reports Exchange's first answer.
func (c *checker) newSMTP(tokens transport.TokenSource) *transport.SMTP {
	return transport.NewSMTP(transport.SMTPConfig{
		Server: c.ep.SMTPServer, Mailbox: c.a.Mailbox, HeloName: c.cfg.Hostname, RootCAs: c.roots, Tokens: tokens,
		DialTimeout: dialTimeout, CommandTimeout: sessionTimeout, DataTimeout: sessionTimeout, NoRenew: true,
	})
}

// authenticate checks that Exchange accepts the token over SMTP: s connects,
// says EHLO, STARTTLS (verified), EHLO and AUTH XOAUTH2, as before its first
// message, and keeps the connection for the test message.
func (c *checker) authenticate(ctx context.Context, s *transport.SMTP, claims *token.Claims) bool {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	server := c.ep.SMTPServer
	info, err := s.Connect(ctx)
	if err != nil {
		c.smtpFailed(server, err, claims)
		return false
	}
	c.r.ok("smtp", "%s: STARTTLS %s, authenticated as %s (%s)", server, info.TLSVersion, c.a.Mailbox, info.AuthReply)
	return true
}

// smtpFailed reports a failed connection: the step, what the server said
// or what went wrong, what it means and what to do.
func (c *checker) smtpFailed(server string, err error, claims *token.Claims) {
	var se *transport.StepError
	if !errors.As(err, &se) {
		c.r.failure("smtp", err)
		return
	}
	if se.Reply != nil {
		said := se.Reply.String()
		var fe *failure.Error
		if errors.As(err, &fe) && fe.Reply != "" {
			said = fe.Reply // with the JSON Exchange may send before a 535
		}
		class, meaning, fix := c.explainReply(*se.Reply, claims)
		c.r.fail(class, "smtp", fmt.Sprintf("%s answered %s with %s\n%s", server, se.Step, said, meaning), fix)
		return
	}
	class, what, fix := c.explainNetwork(server, se.Step, se.Err)
	c.r.fail(class, "smtp", what, fix)
}

// explainNetwork says what a connection or TLS failure at stage means.
func (c *checker) explainNetwork(server, stage string, err error) (failure.Class, string, string) {
	what := fmt.Sprintf("%s: %s failed: %v", server, stage, err)
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dnsErr *net.DNSError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, transport.ErrNoSTARTTLS):
		return failure.Config, fmt.Sprintf("%s does not offer STARTTLS", server),
			"smtp_server must be Exchange Online's submission endpoint, smtp.office365.com:587 (ports 25 and 465 are not for this)"
	case errors.Is(err, transport.ErrNoXOAUTH2):
		return failure.Config, fmt.Sprintf("%s %v", server, err),
			"smtp_server must be Exchange Online's submission endpoint, smtp.office365.com:587"
	case errors.As(err, &unknownCA):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is signed by a CA this host does not trust (%v)", server, err),
			"if a private CA signs it (a TLS-inspecting proxy, the emulator), set ca_file to that CA's PEM; TLS is always verified"
	case errors.As(err, &badHost):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is not for this name (%v)", server, err),
			"set smtp_server to the DNS name the certificate names (smtp.office365.com), not an address or alias"
	case errors.As(err, &invalid):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is not valid (%v)", server, err),
			"check the host clock (NTP); if a proxy presents the certificate, fix the proxy"
	case errors.As(err, &recordErr):
		return failure.Config, fmt.Sprintf("%s: the server did not answer STARTTLS with TLS", server),
			"smtp_server must be Exchange Online's submission endpoint, smtp.office365.com:587"
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return failure.Config, fmt.Sprintf("%s: no such host", server), "check smtp_server"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return failure.Temporary, fmt.Sprintf("%s: no answer within %s during %s", server, sessionTimeout, stage),
			"check that this host may connect to port 587 out (firewall, proxy), then try again"
	case stage == "connect":
		return failure.Temporary, what, "check smtp_server and that this host may connect to port 587 out (firewall, proxy), then try again"
	}
	return failure.Temporary, what, "try again; if it persists, check the network path to " + server
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
