package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// GraphConfig configures delivery through Microsoft Graph sendMail.
type GraphConfig struct {
	URL        string // API root, default https://graph.microsoft.com/v1.0
	Mailbox    string // the sending mailbox: POST {URL}/users/{Mailbox}/sendMail
	Tokens     TokenSource
	RootCAs    *x509.CertPool // nil: the system roots
	Timeout    time.Duration  // one whole request (upload and reply), default 5 min
	MaxRequest int64          // largest request body (base64 of the MIME), default 4 MB
}

// DefaultGraphURL is the global cloud's Graph API root.
const DefaultGraphURL = "https://graph.microsoft.com/v1.0"

// Graph delivers through Graph sendMail with the MIME message as base64.
// Graph has no envelope: recipients missing from To/Cc/Bcc are added in a
// Bcc header of the copy sent. It is safe for concurrent use.
type Graph struct {
	cfg      GraphConfig
	endpoint string
	client   *http.Client
}

var _ Sender = (*Graph)(nil)

// NewGraph returns a Graph sender.
func NewGraph(cfg GraphConfig) *Graph {
	if cfg.URL == "" {
		cfg.URL = DefaultGraphURL
	}
	setDefault(&cfg.Timeout, 5*time.Minute)
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = 4 << 20
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
		WriteBufferSize:       64 << 10, // fewer, larger TLS records for the upload
	}
	return &Graph{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.URL, "/") + "/users/" + url.PathEscape(cfg.Mailbox) + "/sendMail",
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// The body is a stream: a redirect could not be followed anyway.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Close releases idle connections.
func (g *Graph) Close() error {
	g.client.CloseIdleConnections()
	return nil
}

// base64Len is the size of the base64 (padded, unwrapped) of n bytes.
func base64Len(n int64) int64 { return (n + 2) / 3 * 4 }

// Send posts msg. Every recipient is accepted or none is.
func (g *Graph) Send(ctx context.Context, msg *Message) (Result, error) {
	if err := checkEnvelope(msg); err != nil {
		return Result{}, err
	}
	if g.cfg.Tokens == nil {
		return Result{}, &failure.Error{Class: failure.Config, Err: errors.New("Graph transport has no token source")}
	}
	// CRLF line ends only add bytes: the queued size is a lower bound.
	if base64Len(msg.Size) > g.cfg.MaxRequest {
		return Result{}, g.tooLarge(base64Len(msg.Size))
	}
	p, err := planGraph(msg)
	if err != nil {
		return Result{}, err
	}
	if n := base64Len(p.size); n > g.cfg.MaxRequest {
		return Result{}, g.tooLarge(n)
	}
	tok, err := g.cfg.Tokens.Token(ctx)
	if err != nil {
		return Result{}, asFailure(err)
	}
	for renewed := false; ; renewed = true {
		resp, err := g.post(ctx, tok, msg, p)
		if err != nil {
			return Result{}, err
		}
		if resp.status == http.StatusUnauthorized && !renewed {
			if tok, err = g.cfg.Tokens.Renew(ctx, tok); err != nil {
				return Result{}, asFailure(err)
			}
			continue
		}
		if resp.status/100 == 2 {
			return Result{Reply: resp.reply()}, nil
		}
		return Result{}, g.classify(resp)
	}
}

func (g *Graph) tooLarge(n int64) *failure.Error {
	return &failure.Error{Class: failure.Permanent,
		Err: fmt.Errorf("%w: the request would be %d bytes of base64, the limit is %d bytes (max_request)",
			ErrTooLargeForGraph, n, g.cfg.MaxRequest)}
}

// graphResponse is what the flusher needs of Graph's answer.
type graphResponse struct {
	status     int
	statusText string
	code, text string // error.code and error.message of the JSON body
	requestID  string
	retryAfter time.Duration
}

func (r graphResponse) reply() string {
	s := "HTTP " + r.statusText
	if r.code != "" || r.text != "" {
		s = fmt.Sprintf("HTTP %d %s: %s", r.status, r.code, r.text)
	}
	if r.requestID != "" {
		s += " (request-id " + r.requestID + ")"
	}
	return s
}

// post sends one request, the body streamed from the queued message.
func (g *Graph) post(ctx context.Context, tok string, msg *Message, p *graphPlan) (graphResponse, error) {
	up := &upload{plan: p, msg: msg}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint, http.NoBody)
	if err != nil {
		return graphResponse{}, &failure.Error{Class: failure.Config, Err: fmt.Errorf("Graph URL: %w", err)}
	}
	// GetBody lets the HTTP client resend on a kept-alive connection that
	// turned out closed before anything was written.
	req.Body, req.GetBody = up.open(), func() (io.ReadCloser, error) { return up.open(), nil }
	req.ContentLength = base64Len(p.size)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := g.client.Do(req)
	readErr := up.finish()
	if err != nil {
		if readErr != nil {
			return graphResponse{}, failure.Wrap(failure.Temporary, readErr)
		}
		return graphResponse{}, g.netError(ctx, err)
	}
	defer resp.Body.Close()
	gr := graphResponse{status: resp.StatusCode, statusText: resp.Status, requestID: resp.Header.Get("request-id")}
	gr.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
	var body struct {
		Error struct{ Code, Message string }
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil {
		gr.code, gr.text = body.Error.Code, body.Error.Message
	}
	return gr, nil
}

// upload streams the request body through pipes, one per (re)send, each fed
// by its own goroutine reading the queued message.
type upload struct {
	plan *graphPlan
	msg  *Message

	wg      sync.WaitGroup
	mu      sync.Mutex
	readers []*io.PipeReader
	readErr error // the queued message could not be read
}

func (u *upload) open() io.ReadCloser {
	pr, pw := io.Pipe()
	u.mu.Lock()
	u.readers = append(u.readers, pr)
	u.mu.Unlock()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		err := u.plan.stream(pw, u.msg)
		pw.CloseWithError(err)
		var rerr bodyReadError
		if errors.As(err, &rerr) {
			u.mu.Lock()
			u.readErr = rerr
			u.mu.Unlock()
		}
	}()
	return pr
}

// finish ends every stream still running (Graph may answer before reading
// the whole body) and waits for them.
func (u *upload) finish() error {
	u.mu.Lock()
	for _, r := range u.readers {
		r.CloseWithError(errors.New("request finished"))
	}
	u.mu.Unlock()
	u.wg.Wait()
	return u.readErr
}

func (g *Graph) netError(ctx context.Context, err error) *failure.Error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		host := g.endpoint
		if u, perr := url.Parse(g.endpoint); perr == nil {
			host = u.Hostname()
		}
		return tlsError(host, host, err)
	}
	return failure.Wrap(failure.Temporary, fmt.Errorf("Graph sendMail for %s: %w", g.cfg.Mailbox, err))
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// Remedies for Graph (reference: exchange-online.md §4, §6).
const (
	remedyGraphToken = "Graph refused the token for %s: the app needs the Microsoft Graph " +
		"application permission Mail.Send with admin consent, and the token's audience must be " +
		"https://graph.microsoft.com (scope https://graph.microsoft.com/.default); " +
		"'exo-sendmail check' shows the token's claims"
	remedyGraphDenied = "the app may not send as mailbox %s: an application access policy or an " +
		"RBAC for Applications scope excludes it (Test-ApplicationAccessPolicy, " +
		"Test-ServicePrincipalAuthorization)"
	remedyGraphMailbox = "mailbox %s cannot be used through Graph: check the address, that it is " +
		"licensed and active, and that it lives in Exchange Online (not on-premises)"
)

func (g *Graph) classify(r graphResponse) *failure.Error {
	e := &failure.Error{Reply: r.reply(), RetryAfter: r.retryAfter}
	mb := g.cfg.Mailbox
	switch {
	case r.status == http.StatusUnauthorized:
		e.Class, e.Remedy = failure.Config, fmt.Sprintf(remedyGraphToken, mb)
	case r.code == "ErrorSendAsDenied":
		e.Class = failure.Permanent
	case r.code == "MailboxNotEnabledForRESTAPI", r.status == http.StatusNotFound:
		e.Class, e.Remedy = failure.Config, fmt.Sprintf(remedyGraphMailbox, mb)
	case r.status == http.StatusForbidden:
		e.Class, e.Remedy = failure.Config, fmt.Sprintf(remedyGraphDenied, mb)
	case r.status == http.StatusRequestEntityTooLarge:
		// The request, not the message, is too large: SMTP may take it.
		e.Class, e.Err = failure.Permanent, ErrTooLargeForGraph
	case r.code == "ErrorMessageSizeExceeded":
		e.Class = failure.Permanent
	case r.status == http.StatusTooManyRequests:
		e.Class = failure.Throttled
	case r.status == http.StatusBadRequest:
		e.Class = failure.Permanent
	default: // 5xx, 408, anything unexpected
		e.Class = failure.Temporary
	}
	return e
}
