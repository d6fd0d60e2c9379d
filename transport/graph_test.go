package transport

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// graphServer is an httptest TLS server standing for Graph sendMail. It
// checks the request's form, decodes the body as it streams in, and answers
// with the next scripted (status, headers, body) or 202.
type graphServer struct {
	*httptest.Server
	pool *x509.CertPool

	mu      sync.Mutex
	answers []graphAnswer
	reqs    []graphRequest
}

type graphAnswer struct {
	status int
	header map[string]string
	body   string
	token  string // answer only requests bearing this token (else 401)
}

type graphRequest struct {
	path, auth, contentType string
	contentLength           int64
	mime                    []byte // decoded, when keep is set
	decodedLen              int64
	sum                     [32]byte
	err                     error
}

func startGraph(t *testing.T, keep bool, answers ...graphAnswer) *graphServer {
	g := &graphServer{answers: answers}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := graphRequest{path: r.URL.EscapedPath(), auth: r.Header.Get("Authorization"),
			contentType: r.Header.Get("Content-Type"), contentLength: r.ContentLength}
		h := sha256.New()
		var sink io.Writer = h
		var kept strings.Builder
		if keep {
			sink = io.MultiWriter(h, &kept)
		}
		req.decodedLen, req.err = io.Copy(sink, base64.NewDecoder(base64.StdEncoding, r.Body))
		copy(req.sum[:], h.Sum(nil))
		req.mime = []byte(kept.String())
		g.mu.Lock()
		g.reqs = append(g.reqs, req)
		a := graphAnswer{status: http.StatusAccepted}
		if len(g.answers) > 0 {
			a, g.answers = g.answers[0], g.answers[1:]
		}
		g.mu.Unlock()
		if a.token != "" && req.auth != "Bearer "+a.token {
			a = graphAnswer{status: 401, body: `{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}`}
		}
		w.Header().Set("request-id", "rid-"+strconv.Itoa(len(g.reqs)))
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		if a.body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	g.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the tests make fail
	g.StartTLS()
	t.Cleanup(g.Close)
	g.pool = x509.NewCertPool()
	g.pool.AddCert(g.Certificate())
	return g
}

func (g *graphServer) requests() []graphRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]graphRequest(nil), g.reqs...)
}

func newGraph(t *testing.T, g *graphServer, toks TokenSource, cfg GraphConfig) *Graph {
	cfg.URL, cfg.RootCAs, cfg.Tokens = g.URL+"/v1.0/", g.pool, toks
	if cfg.Mailbox == "" {
		cfg.Mailbox = mailbox
	}
	c := NewGraph(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGraphSend(t *testing.T) {
	g := startGraph(t, true)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{})
	body := "From: app@contoso.test\nTo: Bob <bob@fabrikam.test>\nSubject: hi\n\nline\r\nlast"
	res, err := c.Send(context.Background(), textMessage(mailbox, body, "bob@fabrikam.test"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != "HTTP 202 Accepted (request-id rid-1)" || res.Rejected != nil {
		t.Errorf("result %+v", res)
	}
	reqs := g.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	want := "From: app@contoso.test\r\nTo: Bob <bob@fabrikam.test>\r\nSubject: hi\r\n\r\nline\r\nlast"
	if string(r.mime) != want || r.err != nil {
		t.Errorf("MIME sent %q (%v), want %q", r.mime, r.err, want)
	}
	if r.path != "/v1.0/users/app@contoso.test/sendMail" || r.auth != "Bearer gtok" || r.contentType != "text/plain" {
		t.Errorf("request %s, %q, %q", r.path, r.auth, r.contentType)
	}
	if r.contentLength != base64Len(int64(len(want))) {
		t.Errorf("Content-Length %d, want %d", r.contentLength, base64Len(int64(len(want))))
	}
}

// Recipients that only the envelope names go into a Bcc header on top.
func TestGraphBccForEnvelopeOnlyRecipients(t *testing.T) {
	g := startGraph(t, true)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{})
	body := "From: app@contoso.test\r\nTo: \"Bob, B.\" <BOB@fabrikam.test>,\r\n carol@fabrikam.test\r\nCc: =?utf-8?q?D=C3=A4ve?= <dave@fabrikam.test>\r\nSubject: x\r\n\r\nTo: notaheader@fabrikam.test\r\n"
	msg := textMessage(mailbox, body, "bob@fabrikam.test", "carol@fabrikam.test", "dave@fabrikam.test", "root@host.test", "notaheader@fabrikam.test", "Root@host.test")
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	want := "Bcc: root@host.test,\r\n notaheader@fabrikam.test\r\n" + body
	if got := string(g.requests()[0].mime); got != want {
		t.Errorf("sent\n%q\nwant\n%q", got, want)
	}

	// Every recipient in the header: the message goes as it is.
	if _, err := c.Send(context.Background(), textMessage(mailbox, body, "carol@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	if got := string(g.requests()[1].mime); got != body {
		t.Errorf("sent %q, want the message unchanged", got)
	}
}

// A 20 MB message is streamed: sending it allocates far less than its size.
func TestGraphStreams(t *testing.T) {
	g := startGraph(t, false)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{MaxRequest: 64 << 20})
	size := int64(20 << 20)
	if raceEnabled {
		size = 8 << 20
	}
	msg := bigMessage(size, "bob@fabrikam.test")
	// The expected digest, computed the same streaming way.
	h := sha256.New()
	io.WriteString(h, "Bcc: bob@fabrikam.test\r\n") // the message has no To: header
	rc, _ := msg.Open()
	io.Copy(h, rc)
	var want [32]byte
	copy(want[:], h.Sum(nil))

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := c.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// The client and this process's server together allocate about 1 MB
	// (TLS records, buffers), whatever the size; a copy would be >= size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("sending %d MB allocated %.1f MB", size>>20, float64(alloc)/(1<<20))
	}
	r := g.requests()[0]
	if r.decodedLen != size+24 || r.sum != want {
		t.Errorf("server decoded %d bytes (digest match %v)", r.decodedLen, r.sum == want)
	}
}

func TestGraphTooLarge(t *testing.T) {
	g := startGraph(t, false)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{MaxRequest: 400})
	// 300 bytes with CRLF are 400 bytes of base64: just fits.
	fits := "To: bob@fabrikam.test\r\n\r\n" + strings.Repeat(strings.Repeat("x", 53)+"\r\n", 5)
	if _, err := c.Send(context.Background(), textMessage(mailbox, fits, "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	// The same with LF ends is 293 bytes queued but 300 sent: still fits;
	// one more line end (302 sent, 404 of base64) does not.
	lf := strings.ReplaceAll(fits, "\r\n", "\n")
	if _, err := c.Send(context.Background(), textMessage(mailbox, lf, "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	over := lf + "\n"
	_, err := c.Send(context.Background(), textMessage(mailbox, over, "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Permanent)
	if !errors.Is(err, ErrTooLargeForGraph) || !strings.Contains(fe.Error(), "limit is 400 bytes") {
		t.Errorf("error %v", err)
	}
	// Queued size alone already too large.
	_, err = c.Send(context.Background(), bigMessage(1<<20, "bob@fabrikam.test"))
	if !errors.Is(err, ErrTooLargeForGraph) {
		t.Errorf("error %v", err)
	}
	if n := len(g.requests()); n != 2 {
		t.Errorf("%d requests, want only the two that fit", n)
	}
}

func TestGraphRenew(t *testing.T) {
	g := startGraph(t, false, graphAnswer{status: 202, token: "fresh"}, graphAnswer{status: 202, token: "fresh"})
	toks := newTokens("stale", "fresh")
	c := newGraph(t, g, toks, GraphConfig{})
	if _, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test")); err != nil {
		t.Fatal(err)
	}
	reqs := g.requests()
	if len(reqs) != 2 || reqs[0].auth != "Bearer stale" || reqs[1].auth != "Bearer fresh" {
		t.Errorf("requests %+v", reqs)
	}
	if reqs[1].decodedLen != reqs[0].decodedLen || reqs[1].sum != reqs[0].sum {
		t.Errorf("the retry sent %d bytes, want the whole message again (%d)", reqs[1].decodedLen, reqs[0].decodedLen)
	}

	// Refused twice: configuration.
	g2 := startGraph(t, false, graphAnswer{status: 202, token: "never"}, graphAnswer{status: 202, token: "never"})
	toks = newTokens("a", "b")
	c = newGraph(t, g2, toks, GraphConfig{})
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Remedy, "Mail.Send") || !strings.HasPrefix(fe.Reply, "HTTP 401 InvalidAuthenticationToken: Access token validation failure.") {
		t.Errorf("error %q / %q", fe.Reply, fe.Remedy)
	}
	if _, renew := toks.counts(); renew != 1 {
		t.Errorf("%d renewals, want 1", renew)
	}
}

func TestGraphReplyClasses(t *testing.T) {
	js := func(code, msg string) string {
		return fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, code, msg)
	}
	cases := []struct {
		status     int
		header     map[string]string
		body       string
		class      failure.Class
		retryAfter time.Duration
		reply      string
		tooLarge   bool
	}{
		{429, map[string]string{"Retry-After": "7"}, js("ApplicationThrottled", "Application is over its MailboxConcurrency limit."), failure.Throttled, 7 * time.Second,
			"HTTP 429 ApplicationThrottled: Application is over its MailboxConcurrency limit. (request-id rid-1)", false},
		{503, map[string]string{"Retry-After": "30"}, "", failure.Temporary, 30 * time.Second, "HTTP 503 Service Unavailable (request-id rid-1)", false},
		{500, nil, js("UnknownError", ""), failure.Temporary, 0, "", false},
		{403, nil, js("ErrorSendAsDenied", "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account."), failure.Permanent, 0, "", false},
		{403, nil, js("ErrorAccessDenied", "Access to OData is disabled."), failure.Config, 0, "", false},
		{404, nil, js("ErrorInvalidUser", "The requested user 'app@contoso.test' is invalid."), failure.Config, 0, "", false},
		{400, nil, js("MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise."), failure.Config, 0, "", false},
		{413, nil, "", failure.Permanent, 0, "", true},
		{400, nil, js("ErrorMessageSizeExceeded", "The message exceeds the maximum supported size."), failure.Permanent, 0, "", false},
		{400, nil, js("ErrorInvalidRecipients", "At least one recipient is not valid."), failure.Permanent, 0, "", false},
		{400, nil, js("ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."), failure.Permanent, 0,
			"HTTP 400 ErrorMimeContentInvalidBase64String: Invalid base64 string for MIME content. (request-id rid-1)", false},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			g := startGraph(t, false, graphAnswer{status: tc.status, header: tc.header, body: tc.body})
			c := newGraph(t, g, newTokens("gtok"), GraphConfig{})
			_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
			fe := wantClass(t, err, tc.class)
			if fe.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter %v, want %v", fe.RetryAfter, tc.retryAfter)
			}
			if tc.reply != "" && fe.Reply != tc.reply {
				t.Errorf("reply %q, want %q", fe.Reply, tc.reply)
			}
			if !strings.HasPrefix(fe.Reply, "HTTP "+strconv.Itoa(tc.status)) {
				t.Errorf("reply %q", fe.Reply)
			}
			if errors.Is(err, ErrTooLargeForGraph) != tc.tooLarge {
				t.Errorf("too large for Graph: %v, want %v", errors.Is(err, ErrTooLargeForGraph), tc.tooLarge)
			}
		})
	}
}

func TestGraphNetworkErrors(t *testing.T) {
	g := startGraph(t, false)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{})
	g.Close()
	_, err := c.Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	wantClass(t, err, failure.Temporary)

	g = startGraph(t, false)
	cfg := GraphConfig{URL: g.URL, Mailbox: mailbox, Tokens: newTokens("t"), RootCAs: x509.NewCertPool()}
	_, err = NewGraph(cfg).Send(context.Background(), textMessage(mailbox, "x\r\n", "bob@fabrikam.test"))
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Remedy, "ca_file") {
		t.Errorf("remedy %q", fe.Remedy)
	}
}

func TestGraphBodyReadError(t *testing.T) {
	g := startGraph(t, false)
	c := newGraph(t, g, newTokens("gtok"), GraphConfig{})
	msg := textMessage(mailbox, "", "bob@fabrikam.test")
	opened := 0
	msg.Open = func() (io.ReadCloser, error) {
		opened++
		if opened == 1 {
			return io.NopCloser(strings.NewReader("Subject: x\r\n\r\nbody\r\n")), nil
		}
		return io.NopCloser(io.MultiReader(strings.NewReader("Subject: x\r\n"), errReader{})), nil
	}
	_, err := c.Send(context.Background(), msg)
	wantClass(t, err, failure.Temporary)
	if !strings.Contains(err.Error(), "read queued message") {
		t.Errorf("error %v", err)
	}
}

func TestCRLFWriter(t *testing.T) {
	for _, tc := range []struct {
		in  []string
		out string
	}{
		{[]string{"a\nb\n"}, "a\r\nb\r\n"},
		{[]string{"a\r", "\nb"}, "a\r\nb"},
		{[]string{"a", "\n", "\n"}, "a\r\n\r\n"},
		{[]string{"\r\n\r\n"}, "\r\n\r\n"},
		{[]string{"a\rb\n"}, "a\rb\r\n"},
	} {
		var b strings.Builder
		w := &crlfWriter{w: &b}
		for _, p := range tc.in {
			if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
				t.Fatalf("Write %q: %d, %v", p, n, err)
			}
		}
		if b.String() != tc.out || w.n != int64(len(tc.out)) {
			t.Errorf("%q → %q (%d), want %q", tc.in, b.String(), w.n, tc.out)
		}
	}
}

func BenchmarkGraphSend(b *testing.B) {
	g := &graphServer{}
	g.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer g.Close()
	pool := x509.NewCertPool()
	pool.AddCert(g.Certificate())
	c := NewGraph(GraphConfig{URL: g.URL, Mailbox: mailbox, Tokens: newTokens("t"), RootCAs: pool, MaxRequest: 64 << 20})
	defer c.Close()
	msg := bigMessage(1<<20, "bob@fabrikam.test")
	b.SetBytes(msg.Size)
	for b.Loop() {
		if _, err := c.Send(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
	}
}
