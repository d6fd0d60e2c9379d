package transport

// The protocol peers the tests talk to: a CA of their own, a go-smtp server
// that implements XOAUTH2 like Exchange, a scripted SMTP server that records
// every line it receives and answers what a test tells it to, and a token
// source that counts its calls.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// testPKI makes a CA and a certificate for 127.0.0.1 and localhost.
func testPKI(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "exo-sendmail test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}, pool
}

// tokens is a TokenSource handing out toks in order: Token gives the
// current one, Renew moves to the next.
type tokens struct {
	mu                 sync.Mutex
	toks               []string
	cur                int
	tokenN, renewN     int
	staleSeen          []string
	tokenErr, renewErr error
}

func newTokens(toks ...string) *tokens { return &tokens{toks: toks} }

func (s *tokens) Token(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenN++
	if s.tokenErr != nil {
		return "", s.tokenErr
	}
	return s.toks[s.cur], nil
}

func (s *tokens) Renew(_ context.Context, stale string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renewN++
	s.staleSeen = append(s.staleSeen, stale)
	if s.renewErr != nil {
		return "", s.renewErr
	}
	if s.cur < len(s.toks)-1 {
		s.cur++
	}
	return s.toks[s.cur], nil
}

func (s *tokens) counts() (token, renew int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenN, s.renewN
}

// textMessage is a message whose bytes are body.
func textMessage(from, body string, rcpts ...string) *Message {
	m := &Message{MailFrom: from, Size: int64(len(body)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, Recipient{Addr: r})
	}
	return m
}

// ---- a go-smtp server speaking XOAUTH2 ----

type received struct {
	from  string
	opts  smtp.MailOptions
	rcpts []string
	ropts []smtp.RcptOptions
	data  []byte
}

type exchange struct {
	addr string
	srv  *smtp.Server

	mu      sync.Mutex
	accept  map[string]bool            // tokens accepted; nil: any
	authErr *smtp.SMTPError            // refuse every AUTH with this
	rcptErr map[string]*smtp.SMTPError // per recipient
	dataErr *smtp.SMTPError
	conns   map[*smtp.Conn]bool
	auths   []string // user=...|token of every AUTH
	msgs    []received
}

func startExchange(t testing.TB, tlsConf *tls.Config, setup func(*smtp.Server)) *exchange {
	t.Helper()
	x := &exchange{rcptErr: map[string]*smtp.SMTPError{}, conns: map[*smtp.Conn]bool{}}
	// go-smtp starts a new session after STARTTLS: count connections.
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		x.mu.Lock()
		x.conns[c] = true
		x.mu.Unlock()
		return &exSession{x: x}, nil
	}))
	srv.Domain = "exchange.test"
	srv.TLSConfig = tlsConf
	srv.MaxLineLength = 16 << 10 // real tokens are longer than go-smtp's 2000 default
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	if setup != nil {
		setup(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	x.addr, x.srv = ln.Addr().String(), srv
	return x
}

func (x *exchange) snapshot() (conns int, auths []string, msgs []received) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.conns), append([]string(nil), x.auths...), append([]received(nil), x.msgs...)
}

type exSession struct {
	x      *exchange
	authed bool
	cur    received
}

func (s *exSession) AuthMechanisms() []string { return []string{"LOGIN", "XOAUTH2"} }

func (s *exSession) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return xoauth2Server(func(user, token string) error {
		s.x.mu.Lock()
		defer s.x.mu.Unlock()
		s.x.auths = append(s.x.auths, user+"|"+token)
		if s.x.authErr != nil {
			return s.x.authErr
		}
		if s.x.accept != nil && !s.x.accept[token] {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful [SN4PR0501CA0054.namprd05.prod.outlook.com]"}
		}
		s.authed = true
		return nil
	}), nil
}

// xoauth2Server checks the initial response's form, then asks check.
type xoauth2Server func(user, token string) error

func (f xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	parts := strings.Split(string(resp), "\x01")
	if len(parts) != 4 || !strings.HasPrefix(parts[0], "user=") || !strings.HasPrefix(parts[1], "auth=Bearer ") || parts[2] != "" || parts[3] != "" {
		return nil, false, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "malformed XOAUTH2 response"}
	}
	if err := f(strings.TrimPrefix(parts[0], "user="), strings.TrimPrefix(parts[1], "auth=Bearer ")); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

func (s *exSession) Mail(from string, opts *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 57}, Message: "Client not authenticated to send mail"}
	}
	s.cur = received{from: from}
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *exSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.x.mu.Lock()
	e := s.x.rcptErr[to]
	s.x.mu.Unlock()
	if e != nil {
		return e
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil {
		s.cur.ropts = append(s.cur.ropts, *opts)
	}
	return nil
}

func (s *exSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.x.mu.Lock()
	defer s.x.mu.Unlock()
	if s.x.dataErr != nil {
		return s.x.dataErr
	}
	s.cur.data = b
	s.x.msgs = append(s.x.msgs, s.cur)
	return nil
}

func (s *exSession) Reset()        { s.cur = received{} }
func (s *exSession) Logout() error { return nil }

// ---- a scripted SMTP server ----

// script answers each command with the next reply queued for its verb (""
// is an empty line, "." the end of the message) or a default in Exchange's
// words, and records every line it receives, per connection.
type script struct {
	addr       string
	tlsConf    *tls.Config
	caps       []string // EHLO keywords after STARTTLS
	noStartTLS bool
	replies    map[string][]string
	closeAfter map[string]bool // verbs after whose reply the connection is closed, once each
	stallData  chan struct{}   // when set: closed when DATA is accepted, then nothing more is read

	mu      sync.Mutex
	convs   [][]string
	flights []int    // per connection: reads that waited for the client, i.e. round trips
	bodies  []string // every message body received, dot-stuffed as on the wire
	conns   []net.Conn
	done    chan struct{}
}

var exchangeCaps = []string{"SIZE 157286400", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES",
	"AUTH LOGIN XOAUTH2", "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"}

var scriptDefaults = map[string]string{
	"AUTH": "235 2.7.0 Authentication successful",
	"MAIL": "250 2.1.0 Sender OK",
	"RCPT": "250 2.1.5 Recipient OK",
	"DATA": "354 Start mail input; end with <CRLF>.<CRLF>",
	".":    "250 2.0.0 OK <QUEUEID@PR0501.namprd05.prod.outlook.com> [Hostname=PR0501]",
	"RSET": "250 2.0.0 Resetting",
	"NOOP": "250 2.0.0 OK",
	"QUIT": "221 2.0.0 Service closing transmission channel",
}

func startScript(t testing.TB, tlsConf *tls.Config, s *script) *script {
	t.Helper()
	if s.caps == nil {
		s.caps = exchangeCaps
	}
	s.tlsConf, s.done = tlsConf, make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.convs = append(s.convs, nil)
			s.flights = append(s.flights, 0)
			n := len(s.convs) - 1
			s.mu.Unlock()
			go s.serve(c, n)
		}
	}()
	t.Cleanup(func() {
		close(s.done)
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *script) conv(i int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.convs) {
		return nil
	}
	return append([]string(nil), s.convs[i]...)
}

// nflights is how many times the server of connection i had nothing
// buffered to read and waited for the client: one per flight of commands
// (or of message body) the client sent.
func (s *script) nflights(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flights[i]
}

func (s *script) nconns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.convs)
}

// next returns the reply for verb and whether to close afterwards.
func (s *script) next(verb string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := scriptDefaults[verb]
	if q := s.replies[verb]; len(q) > 0 {
		if q[0] != "" {
			r = q[0]
		}
		s.replies[verb] = q[1:]
	}
	if r == "" {
		r = "500 5.3.3 Unrecognized command"
	}
	closeNow := s.closeAfter[verb]
	delete(s.closeAfter, verb)
	return r, closeNow || strings.HasPrefix(r, "421")
}

func (s *script) record(n int, line string) {
	s.mu.Lock()
	s.convs[n] = append(s.convs[n], line)
	s.mu.Unlock()
}

func (s *script) serve(c net.Conn, n int) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	say := func(r string) { io.WriteString(c, strings.ReplaceAll(r, "\n", "\r\n")+"\r\n") }
	say("220 PR0501.outlook.office365.com Microsoft ESMTP MAIL Service ready")
	secure := false
	read := func() (string, error) {
		if br.Buffered() == 0 {
			s.mu.Lock()
			s.flights[n]++
			s.mu.Unlock()
		}
		return br.ReadString('\n')
	}
	for {
		line, err := read()
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.record(n, line)
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		switch verb {
		case "EHLO":
			caps := []string{"STARTTLS"}
			if s.noStartTLS {
				caps = nil
			}
			if secure {
				caps = s.caps
			}
			lines := append([]string{"PR0501.outlook.office365.com Hello [127.0.0.1]"}, caps...)
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				say("250" + sep + l)
			}
			continue
		case "STARTTLS":
			say("220 2.0.0 SMTP server ready")
			tc := tls.Server(c, s.tlsConf)
			if tc.Handshake() != nil {
				return
			}
			c, br, secure = tc, bufio.NewReaderSize(tc, 64<<10), true
			continue
		case "DATA":
			r, closeNow := s.next("DATA")
			say(r)
			if closeNow || !strings.HasPrefix(r, "354") {
				if closeNow {
					return
				}
				continue
			}
			if s.stallData != nil {
				close(s.stallData)
				<-s.done
				return
			}
			var body strings.Builder
			for {
				l, err := read()
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				body.WriteString(l)
			}
			s.mu.Lock()
			s.bodies = append(s.bodies, body.String())
			s.mu.Unlock()
			s.record(n, ".")
			verb = "."
		}
		r, closeNow := s.next(verb)
		say(r)
		if closeNow || verb == "QUIT" {
			return
		}
	}
}

// authPayload decodes the XOAUTH2 initial response of an AUTH line.
func authPayload(line string) (string, error) {
	b64, ok := strings.CutPrefix(line, "AUTH XOAUTH2 ")
	if !ok {
		return "", fmt.Errorf("not an AUTH XOAUTH2 line: %q", line)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", errors.New("AUTH payload is not base64")
	}
	return string(b), nil
}
