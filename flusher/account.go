package flusher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// cloud holds the endpoints of one Microsoft cloud (exchange-online.md §1);
// the token host is the token package's business.
type cloud struct {
	smtpServer, smtpScope string
	graphURL, graphScope  string
}

var clouds = map[string]cloud{
	"global":    {"smtp.office365.com:587", "https://outlook.office365.com/.default", "https://graph.microsoft.com/v1.0", "https://graph.microsoft.com/.default"},
	"usgov":     {"smtp.office365.us:587", "https://outlook.office365.us/.default", "https://graph.microsoft.us/v1.0", "https://graph.microsoft.us/.default"},
	"usgov-dod": {"outlook-dod.office365.us:587", "https://outlook-dod.office365.us/.default", "https://dod-graph.microsoft.us/v1.0", "https://dod-graph.microsoft.us/.default"},
	"china":     {"smtp.partner.outlook.cn:587", "https://partner.outlook.cn/.default", "https://microsoftgraph.chinacloudapi.cn/v1.0", "https://microsoftgraph.chinacloudapi.cn/.default"},
}

// account is the flusher's runtime for one configured account: its token
// sources, how to open connections, its pace and whether it is paused.
type account struct {
	conf  *conf.Account
	smtp  func() transport.Sender // a new SMTP connection (nil: the account has none)
	graph func() transport.Sender // a new Graph sender (nil: not a Graph account)
	relay string                  // for log lines: host:port or the Graph URL

	pace *pace

	tokenFailedAt atomic.Int64 // when the token source last failed (unix ns)

	mu          sync.Mutex
	pausedUntil time.Time
	pauseErr    *failure.Error
	failures    int // consecutive account-wide failures: the pause grows
	statusFile  string
}

// watchedTokens notes when an account's token source fails: a token that
// cannot be had (Entra unreachable, credentials refused) concerns the whole
// account, and must pause it rather than be asked for again by each queued
// message in turn.
type watchedTokens struct {
	src      *token.Source
	failedAt *atomic.Int64
}

func (w watchedTokens) Token(ctx context.Context) (string, error) {
	t, err := w.src.Token(ctx)
	if err != nil {
		w.failedAt.Store(time.Now().UnixNano())
	}
	return t, err
}

func (w watchedTokens) Renew(ctx context.Context, stale string) (string, error) {
	t, err := w.src.Renew(ctx, stale)
	if err != nil {
		w.failedAt.Store(time.Now().UnixNano())
	}
	return t, err
}

// accountWide reports whether a failure of a transaction that started at
// start concerns the account rather than the message: no token could be
// had, or the connection failed before it was authenticated, or Graph (one
// endpoint per mailbox) could not be reached.
func (a *account) accountWide(fe *failure.Error, start time.Time) bool {
	var step *transport.StepError
	return a.tokenFailedAt.Load() >= start.UnixNano() || errors.As(fe, &step) ||
		(a.graph != nil && fe.Class == failure.Temporary)
}

// newAccount builds the runtime of a configured account. It reads no
// secret: the token source reads the credential files when it fetches.
func newAccount(cfg *conf.Config, a *conf.Account, trace io.Writer) (*account, error) {
	ep, err := Endpoints(a)
	if err != nil {
		return nil, err
	}
	roots, err := transport.RootCAs(a.CAFile)
	if err != nil {
		return nil, &failure.Error{Class: failure.Config, Err: err, Remedy: "fix ca_file of account " + a.Name}
	}
	httpClient := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig(roots), TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 30 * time.Second},
	}
	source := func(scope string) (*token.Source, error) {
		return token.New(token.Config{
			TokenURL: ep.TokenURL, ClientID: a.ClientID, Scope: scope,
			SecretFile: a.ClientSecretFile, CertificateFile: a.CertificateFile,
			PrivateKeyFile: a.PrivateKeyFile, CertificatePasswordFile: a.CertificatePasswordFile,
			CacheDir: filepath.Join(cfg.StateDir, "tokens"), HTTPClient: httpClient,
		})
	}
	acc := &account{conf: a, statusFile: filepath.Join(cfg.StateDir, "accounts", a.Name+".json")}
	watched := func(s *token.Source) transport.TokenSource {
		return watchedTokens{src: s, failedAt: &acc.tokenFailedAt}
	}
	if a.Transport == "smtp" || a.SMTPFallback {
		tokens, err := source(ep.SMTPScope)
		if err != nil {
			return nil, err
		}
		server := ep.SMTPServer
		acc.relay = server
		acc.smtp = func() transport.Sender {
			return transport.NewSMTP(transport.SMTPConfig{
				Server: server, Mailbox: a.Mailbox, HeloName: cfg.Hostname, RootCAs: roots,
				Tokens: watched(tokens), Trace: trace,
			})
		}
	}
	if a.Transport == "graph" {
		tokens, err := source(ep.GraphScope)
		if err != nil {
			return nil, err
		}
		url := ep.GraphURL
		acc.relay = url
		acc.graph = func() transport.Sender {
			return transport.NewGraph(transport.GraphConfig{URL: url, Mailbox: a.Mailbox, Tokens: watched(tokens), RootCAs: roots})
		}
	}
	acc.pace = newPace(filepath.Join(cfg.StateDir, "pace", a.Mailbox+".json"), a.MessagesPerMinute, a.RecipientsPerDay)
	acc.loadStatus()
	return acc, nil
}

// sender opens the account's main transport.
func (a *account) sender() transport.Sender {
	if a.graph != nil {
		return a.graph()
	}
	return a.smtp()
}

// pause stops delivery for the account until the given time, because of err.
// The reason is written where mailq finds it.
func (a *account) pause(until time.Time, err *failure.Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if until.After(a.pausedUntil) {
		a.pausedUntil = until
	}
	a.pauseErr = err
	a.saveStatus()
}

// pauseGrowing pauses the account after an account-wide failure (its
// configuration, or Exchange unreachable), longer each time it happens
// again, and returns until when.
func (a *account) pauseGrowing(err *failure.Error, backoff func(int) time.Duration) time.Time {
	a.mu.Lock()
	a.failures++
	until := time.Now().Add(backoff(a.failures))
	a.mu.Unlock()
	a.pause(until, err)
	return until
}

// paused returns the pause in force, if any.
func (a *account) paused(now time.Time) (time.Time, *failure.Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Before(a.pausedUntil) {
		return a.pausedUntil, a.pauseErr
	}
	return time.Time{}, nil
}

// resume lifts a pause (a delivery went through, or the admin reloaded).
func (a *account) resume() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pauseErr == nil && a.pausedUntil.IsZero() {
		return
	}
	a.pausedUntil, a.pauseErr, a.failures = time.Time{}, nil, 0
	os.Remove(a.statusFile)
}

// Status is an account's pause as mailq shows it.
type Status struct {
	Account     string    `json:"account"`
	PausedUntil time.Time `json:"paused_until"`
	Class       string    `json:"class"`
	Error       string    `json:"error"`
	Remedy      string    `json:"remedy,omitempty"`
}

func (a *account) saveStatus() {
	st := Status{Account: a.conf.Name, PausedUntil: a.pausedUntil}
	if a.pauseErr != nil {
		st.Class, st.Error, st.Remedy = a.pauseErr.Class.String(), a.pauseErr.Reply, a.pauseErr.Remedy
		if st.Error == "" && a.pauseErr.Err != nil {
			st.Error = a.pauseErr.Err.Error()
		}
	}
	b, _ := json.Marshal(st)
	os.MkdirAll(filepath.Dir(a.statusFile), 0o700)
	// The daemon and a queue run may both write it: each its own temporary.
	atomicfile.Write(a.statusFile, b, 0o600, false)
}

// loadStatus restores a pause written by an earlier flusher, so that a -q
// run right after a configuration error does not hammer Exchange again.
func (a *account) loadStatus() {
	if st, err := ReadStatus(a.statusFile); err == nil && st.PausedUntil.After(time.Now()) {
		a.pausedUntil = st.PausedUntil
		a.pauseErr = &failure.Error{Class: classNamed(st.Class), Reply: st.Error, Remedy: st.Remedy}
	}
}

// ReadStatus reads an account status file.
func ReadStatus(path string) (*Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st Status
	return &st, json.Unmarshal(b, &st)
}

// AccountStatus returns the recorded pause of an account, nil if none.
func AccountStatus(cfg *conf.Config, name string) *Status {
	st, err := ReadStatus(filepath.Join(cfg.StateDir, "accounts", name+".json"))
	if err != nil || !st.PausedUntil.After(time.Now()) {
		return nil
	}
	return st
}

func classNamed(s string) failure.Class {
	for _, c := range []failure.Class{failure.Temporary, failure.Permanent, failure.Config, failure.Throttled} {
		if c.String() == s {
			return c
		}
	}
	return failure.Temporary
}

// wait blocks until ctx ends or d passes; false if ctx ended.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func tlsConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
