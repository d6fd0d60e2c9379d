// Package emulator stands in for Exchange Online on the loopback interface:
// the Entra token endpoint (client credentials with a secret or a certificate
// assertion), SMTP client submission with STARTTLS and XOAUTH2, and Graph
// sendMail with MIME. It words its replies and errors as Entra and Exchange
// do, enforces the Exchange limits on request, and injects faults, so that the
// token source, the transports and the flusher can be tested against a real
// protocol peer, in process or as `exo-sendmail emulator`.
package emulator

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
)

// App is an Entra app registration together with its Exchange set-up.
type App struct {
	ClientID     string
	Secrets      []Secret
	Certificates []*x509.Certificate // accepted for client_assertion, selected by x5t#S256 or x5t
	SMTPRole     bool                // tokens for outlook.office365.com carry roles ["SMTP.SendAsApp"]
	GraphRole    bool                // tokens for graph.microsoft.com carry roles ["Mail.Send"]
	Mailboxes    []string            // mailboxes the app may log on to and send from (FullAccess)
}

// Secret is a client secret of an App.
type Secret struct {
	Value   string
	Expired bool
}

// Mailbox is an Exchange mailbox.
type Mailbox struct {
	Address          string
	SMTPAuthDisabled bool     // Set-CASMailbox -SmtpClientAuthenticationDisabled $true
	SendAs           []string // other From addresses this mailbox may send as
}

// Config describes the emulated tenant.
type Config struct {
	Dir           string // where ca.pem and the Maildirs are written (required)
	Tenant        string // verified domain, e.g. "contoso.onmicrosoft.com"
	TenantID      string // GUID; derived from Tenant when empty
	Apps          []App
	Mailboxes     []Mailbox
	Limits        bool          // enforce the Exchange Online submission limits
	TokenLifetime time.Duration // expires_in of issued tokens; default 3599s

	// Listen addresses, loopback only; default "127.0.0.1:0".
	SMTPListen string
	HTTPListen string
}

// Message is a message the emulator accepted.
type Message struct {
	Via      string // "smtp" or "graph"
	ID       string // the Message-ID quoted in the 250 reply (generated when the message has none)
	Mailbox  string // the mailbox the app logged on to (XOAUTH2 user=, Graph URL)
	MailFrom string
	Rcpts    []string
	Data     []byte
}

// Stats counts what the emulator saw.
type Stats struct {
	TokenRequests   int `json:"token_requests"`
	TokensIssued    int `json:"tokens_issued"`
	SMTPConnections int `json:"smtp_connections"`
	SMTPCommands    int `json:"smtp_commands"`    // commands read, each one a round trip without PIPELINING
	SMTPRoundTrips  int `json:"smtp_round_trips"` // times the server waited for the client: one per flight of commands (pipelined or not) or of message body (more for a body that arrives in pieces)
	ThrottleReplies int `json:"throttle_replies"`
	AuthFailures    int `json:"auth_failures"` // token endpoint refusals, SMTP AUTH failures, Graph 401/403
	GraphRequests   int `json:"graph_requests"`
}

// Emulator is a running Exchange Online emulator.
type Emulator struct {
	TokenURL string // https://127.0.0.1:P/<tenant>/oauth2/v2.0/token
	SMTPAddr string // 127.0.0.1:P
	GraphURL string // https://127.0.0.1:P/v1.0
	BaseURL  string // https://127.0.0.1:P (token, Graph and /_emulator/ control)
	CAFile   string // PEM of the emulator's CA: trust it for HTTPS and SMTP STARTTLS
	Tenant   string
	TenantID string

	cfg       Config
	ca        *authority
	smtpLn    net.Listener
	httpLn    net.Listener
	httpSrv   *http.Server
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu       sync.Mutex
	faults   Faults
	stats    Stats
	messages []Message
	conns    map[net.Conn]struct{}
	limits   limits
}

// Start starts the emulator on the loopback interface.
func Start(cfg Config) (*Emulator, error) {
	if cfg.Dir == "" {
		return nil, errors.New("emulator: Config.Dir is required (ca.pem and the Maildirs are written there)")
	}
	if cfg.Tenant == "" {
		return nil, errors.New("emulator: Config.Tenant is required, e.g. contoso.onmicrosoft.com")
	}
	if cfg.TenantID == "" {
		cfg.TenantID = guidOf("tenant:" + strings.ToLower(cfg.Tenant))
	}
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = 3599 * time.Second
	}
	for _, addr := range []*string{&cfg.SMTPListen, &cfg.HTTPListen} {
		if *addr == "" {
			*addr = "127.0.0.1:0"
		}
		if err := checkLoopback(*addr); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	cfg.Dir = dir

	ca, err := newAuthority()
	if err != nil {
		return nil, fmt.Errorf("emulator: generating the CA: %w", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := atomicfile.Write(caFile, ca.certPEM, 0o644, true); err != nil {
		return nil, fmt.Errorf("emulator: writing the CA: %w", err)
	}
	if _, err := signingKey(); err != nil {
		return nil, fmt.Errorf("emulator: generating the token signing key: %w", err)
	}

	e := &Emulator{
		CAFile:   caFile,
		Tenant:   cfg.Tenant,
		TenantID: cfg.TenantID,
		cfg:      cfg,
		ca:       ca,
		done:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
		limits:   newLimits(),
	}
	if e.smtpLn, err = net.Listen("tcp", cfg.SMTPListen); err != nil {
		return nil, fmt.Errorf("emulator: SMTP listener: %w", err)
	}
	if e.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		e.smtpLn.Close()
		return nil, fmt.Errorf("emulator: HTTPS listener: %w", err)
	}
	e.SMTPAddr = e.smtpLn.Addr().String()
	e.BaseURL = "https://" + e.httpLn.Addr().String()
	e.TokenURL = e.BaseURL + "/" + cfg.Tenant + "/oauth2/v2.0/token"
	e.GraphURL = e.BaseURL + "/v1.0"

	e.httpSrv = e.newHTTPServer()
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		e.httpSrv.ServeTLS(e.httpLn, "", "")
	}()
	go func() {
		defer e.wg.Done()
		e.serveSMTP()
	}()
	return e, nil
}

// Close stops the listeners, drops every open connection and waits for the
// emulator's goroutines to end.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.smtpLn.Close()
		e.httpSrv.Close()
		e.mu.Lock()
		for c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return nil
}

// Maildir returns the Maildir that receives rcpt's copies:
// Dir/maildir/<recipient>, with new/ holding one file per message.
func (e *Emulator) Maildir(rcpt string) string {
	return filepath.Join(e.cfg.Dir, "maildir", maildirName(rcpt))
}

// Messages returns every accepted message, in order of acceptance.
func (e *Emulator) Messages() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Message, len(e.messages))
	copy(out, e.messages)
	return out
}

// Stats returns the counters so far.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// SetFaults replaces the faults in effect.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = f
}

func (e *Emulator) currentFaults() Faults {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults
}

// count adds one to the counter f selects.
func (e *Emulator) count(f func(*Stats) *int) {
	e.mu.Lock()
	*f(&e.stats)++
	e.mu.Unlock()
}

// pause waits d, or less if the emulator is closing.
func (e *Emulator) pause(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.done:
	}
}

// app returns the registration with this client id.
func (e *Emulator) app(clientID string) (*App, bool) {
	for i := range e.cfg.Apps {
		if strings.EqualFold(e.cfg.Apps[i].ClientID, clientID) {
			return &e.cfg.Apps[i], true
		}
	}
	return nil, false
}

// mailbox returns the mailbox with this primary address.
func (e *Emulator) mailbox(address string) (*Mailbox, bool) {
	for i := range e.cfg.Mailboxes {
		if strings.EqualFold(e.cfg.Mailboxes[i].Address, address) {
			return &e.cfg.Mailboxes[i], true
		}
	}
	return nil, false
}

// mayUse reports whether app has FullAccess to mailbox.
func (a *App) mayUse(mailbox string) bool {
	for _, m := range a.Mailboxes {
		if strings.EqualFold(m, mailbox) {
			return true
		}
	}
	return false
}

// maySendAs reports whether mailbox may put addr in MAIL FROM or From:.
func (m *Mailbox) maySendAs(addr string) bool {
	if strings.EqualFold(addr, m.Address) {
		return true
	}
	for _, a := range m.SendAs {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// checkLoopback refuses listen addresses outside the loopback interface: the
// emulator accepts any test credential and must never be reachable from the
// network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("emulator: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("emulator: listen address %q is not on the loopback interface; use 127.0.0.1 or [::1]", addr)
}
