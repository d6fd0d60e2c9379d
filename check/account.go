package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/flusher"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// Bounds of the network steps: a check never hangs.
const (
	tokenTimeout   = time.Minute
	dialTimeout    = 30 * time.Second
	sessionTimeout = time.Minute     // the whole SMTP dialogue up to AUTH, or the Graph request
	sendTimeout    = 2 * time.Minute // the test message
)

// checker checks one account.
type checker struct {
	cfg    *conf.Config
	a      *conf.Account
	sendTo string
	r      *report

	ep    flusher.Endpoint
	roots *x509.CertPool
	http  *http.Client
}

// run checks the account step by step; a step that fails stops the steps
// that need it.
func (c *checker) run(ctx context.Context) {
	a := c.a
	fmt.Fprintf(c.r.w, "account %q: mailbox %s, transport %s\n", a.Name, a.Mailbox, a.Transport)
	ep, err := flusher.Endpoints(a)
	if err != nil {
		c.r.failure("endpoints", err)
		return
	}
	c.ep = ep
	credentialsOK := c.credentials()
	if !c.caFile() || !credentialsOK {
		return
	}
	c.http = &http.Client{
		Timeout: tokenTimeout,
		Transport: &http.Transport{
			TLSClientConfig:       &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
	}
	defer c.http.CloseIdleConnections()

	switch a.Transport {
	case "graph":
		c.graph(ctx)
		if a.SMTPFallback {
			// Messages too large for Graph go through SMTP: it must work too.
			c.smtp(ctx, false)
		}
	default:
		c.smtp(ctx, true)
	}
}

// smtp checks the SMTP side: token, claims, STARTTLS and AUTH XOAUTH2, and
// the test message when main is set (SMTP is the account's transport).
func (c *checker) smtp(ctx context.Context, main bool) {
	src, tok, claims := c.token(ctx, "smtp", c.ep.SMTPScope)
	if tok == "" {
		return
	}
	s := c.newSMTP(src) // src hands out the token just fetched
	defer s.Close()
	if !c.authenticate(ctx, s, claims) {
		return
	}
	if main && c.sendTo != "" {
		c.send(ctx, s, claims, "")
	} else if main {
		c.r.ok("smtp", "note: the mailbox permission (FullAccess or RBAC) is checked only when a message is sent: use --send-to ADDR to test it")
	}
}

// graph checks the Graph side: token, claims, a request that cannot send,
// and the test message.
func (c *checker) graph(ctx context.Context) {
	src, tok, claims := c.token(ctx, "graph", c.ep.GraphScope)
	if tok == "" {
		return
	}
	if !c.graphProbe(ctx, tok, claims) {
		return
	}
	if c.sendTo != "" {
		c.sendGraph(ctx, src)
	}
}

// tokenSource returns the account's token source for scope, sharing the
// flusher's cache: a check warms it.
func (c *checker) tokenSource(scope string) (*token.Source, error) {
	a := c.a
	return token.New(token.Config{
		TokenURL: c.ep.TokenURL, ClientID: a.ClientID, Scope: scope,
		SecretFile: a.ClientSecretFile, CertificateFile: a.CertificateFile,
		PrivateKeyFile: a.PrivateKeyFile, CertificatePasswordFile: a.CertificatePasswordFile,
		CacheDir: filepath.Join(c.cfg.StateDir, "tokens"), HTTPClient: c.http,
	})
}

// caFile checks ca_file and builds the roots every TLS step verifies with.
func (c *checker) caFile() bool {
	roots, err := transport.RootCAs(c.a.CAFile)
	if err != nil {
		c.r.failure("ca_file", err)
		return false
	}
	c.roots = roots
	if c.a.CAFile != "" {
		c.r.ok("ca_file", "%s added to the system's trusted CAs", c.a.CAFile)
	}
	return true
}
