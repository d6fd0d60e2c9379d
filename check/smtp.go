package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// authenticate checks that Exchange accepts the token over SMTP: connect,
// EHLO, STARTTLS (verified), EHLO, AUTH XOAUTH2, as the transport does
// before its first message, and QUIT.
func (c *checker) authenticate(ctx context.Context, tok string, claims *token.Claims) bool {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	server := c.ep.SMTPServer
	helo := c.cfg.Hostname
	if helo == "" {
		helo = "localhost"
	}
	version, auth, err := smtpAuth(ctx, server, helo, c.a.Mailbox, tok, c.roots)
	if err != nil {
		c.smtpFailed(server, err, claims)
		return false
	}
	c.r.ok("smtp", "%s: STARTTLS %s, authenticated as %s (%s)", server, version, c.a.Mailbox, auth)
	return true
}

// smtpReply is one SMTP reply, its lines joined.
type smtpReply struct {
	code     int
	enhanced string // "5.7.3", or ""
	text     string
}

func (r smtpReply) String() string {
	s := strconv.Itoa(r.code)
	if r.enhanced != "" {
		s += " " + r.enhanced
	}
	if r.text != "" {
		s += " " + r.text
	}
	return s
}

// smtpError is a step of the dialogue that went wrong: the server's
// unwanted reply, or a network or TLS error.
type smtpError struct {
	stage string // "connect", "greeting", "EHLO", "STARTTLS", "TLS handshake", "AUTH"
	reply *smtpReply
	err   error
}

func (e *smtpError) Error() string {
	if e.reply != nil {
		return fmt.Sprintf("%s: %s", e.stage, e.reply)
	}
	return fmt.Sprintf("%s: %v", e.stage, e.err)
}

func (e *smtpError) Unwrap() error { return e.err }

// smtpAuth runs the dialogue up to AUTH XOAUTH2 and returns the TLS
// version and AUTH's reply (235). Every wait is bounded by ctx.
func smtpAuth(ctx context.Context, server, helo, mailbox, tok string, roots *x509.CertPool) (version string, auth smtpReply, err error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return "", auth, &smtpError{stage: "connect", err: err}
	}
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return "", auth, &smtpError{stage: "connect", err: err}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}

	s := &dialogue{tp: textproto.NewConn(conn)}
	if r, err := s.read(); err != nil || r.code != 220 {
		return "", auth, s.failed("greeting", r, err)
	}
	ext, err := s.ehlo(helo)
	if err != nil {
		return "", auth, err
	}
	if _, ok := ext["STARTTLS"]; !ok {
		return "", auth, &smtpError{stage: "STARTTLS", err: errNoSTARTTLS}
	}
	if r, err := s.cmd("STARTTLS"); err != nil || r.code != 220 {
		return "", auth, s.failed("STARTTLS", r, err)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		return "", auth, &smtpError{stage: "TLS handshake", err: err}
	}
	version = tls.VersionName(tc.ConnectionState().Version)
	s.tp = textproto.NewConn(tc)
	if ext, err = s.ehlo(helo); err != nil {
		return version, auth, err
	}
	if !hasWord(ext["AUTH"], "XOAUTH2") {
		return version, auth, &smtpError{stage: "AUTH", err: fmt.Errorf("%w (AUTH %s)", errNoXOAUTH2, orNone(ext["AUTH"]))}
	}
	// XOAUTH2 (exchange-online.md §3): the token goes only on the wire.
	ir := base64.StdEncoding.EncodeToString([]byte("user=" + mailbox + "\x01auth=Bearer " + tok + "\x01\x01"))
	r, err := s.cmd("AUTH XOAUTH2 " + ir)
	if err == nil && r.code == 334 {
		// A JSON error challenge: answer empty and read the final reply.
		r, err = s.cmd("")
	}
	if err != nil || r.code != 235 {
		return version, auth, s.failed("AUTH", r, err)
	}
	s.cmd("QUIT")
	return version, r, nil
}

var (
	errNoSTARTTLS = errors.New("the server does not offer STARTTLS")
	errNoXOAUTH2  = errors.New("the server does not offer AUTH XOAUTH2")
)

// dialogue speaks SMTP commands and reads replies.
type dialogue struct {
	tp *textproto.Conn
}

func (s *dialogue) cmd(line string) (smtpReply, error) {
	if err := s.tp.PrintfLine("%s", line); err != nil {
		return smtpReply{}, err
	}
	return s.read()
}

// enhancedCode matches an RFC 3463 status code.
var enhancedCode = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// read reads one reply, of one line or several.
func (s *dialogue) read() (smtpReply, error) {
	code, msg, err := s.tp.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return smtpReply{}, fmt.Errorf("malformed reply: %w", err)
		}
		return smtpReply{}, err
	}
	r := smtpReply{code: code}
	var texts []string
	for _, line := range strings.Split(msg, "\n") {
		if first, rest, _ := strings.Cut(line, " "); enhancedCode.MatchString(first) && first[0] == byte('0'+code/100) {
			r.enhanced, line = first, rest
		}
		texts = append(texts, line)
	}
	r.text = strings.Join(texts, " ")
	return r, nil
}

// ehlo says EHLO and returns the extensions offered, by keyword.
func (s *dialogue) ehlo(helo string) (map[string]string, error) {
	if err := s.tp.PrintfLine("EHLO %s", helo); err != nil {
		return nil, &smtpError{stage: "EHLO", err: err}
	}
	code, msg, err := s.tp.ReadResponse(0)
	if err != nil || code != 250 {
		r, _ := parseReply(fmt.Sprintf("%d %s", code, strings.ReplaceAll(msg, "\n", " ")))
		return nil, s.failed("EHLO", r, err)
	}
	ext := map[string]string{}
	for _, line := range strings.Split(msg, "\n")[1:] {
		k, v, _ := strings.Cut(line, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

func (s *dialogue) failed(stage string, r smtpReply, err error) *smtpError {
	if err != nil {
		return &smtpError{stage: stage, err: err}
	}
	return &smtpError{stage: stage, reply: &r}
}

// parseReply reads "535 5.7.3 text" as the transport writes replies; false
// when s does not start with a reply code.
func parseReply(s string) (smtpReply, bool) {
	if len(s) < 3 {
		return smtpReply{}, false
	}
	code, err := strconv.Atoi(s[:3])
	if err != nil || code < 200 || code > 599 || len(s) > 3 && s[3] != ' ' && s[3] != '-' {
		return smtpReply{}, false
	}
	r := smtpReply{code: code, text: strings.TrimSpace(s[min(len(s), 4):])}
	if first, rest, _ := strings.Cut(r.text, " "); enhancedCode.MatchString(first) && first[0] == s[0] {
		r.enhanced, r.text = first, rest
	}
	return r, true
}

func hasWord(list, word string) bool {
	for _, w := range strings.Fields(list) {
		if strings.EqualFold(w, word) {
			return true
		}
	}
	return false
}

// smtpFailed reports a failed SMTP dialogue: what happened, what it means
// and what to do.
func (c *checker) smtpFailed(server string, err error, claims *token.Claims) {
	var se *smtpError
	if !errors.As(err, &se) {
		c.r.fail(failure.Temporary, "smtp", fmt.Sprintf("%s: %v", server, err), "")
		return
	}
	if se.reply != nil {
		class, meaning, fix := c.explainReply(*se.reply, claims)
		c.r.fail(class, "smtp", fmt.Sprintf("%s answered %s with %s\n%s", server, se.stage, se.reply, meaning), fix)
		return
	}
	class, what, fix := c.explainNetwork(server, se.stage, se.err)
	c.r.fail(class, "smtp", what, fix)
}

// explainNetwork says what a connection or TLS failure means.
func (c *checker) explainNetwork(server, stage string, err error) (failure.Class, string, string) {
	what := fmt.Sprintf("%s: %s failed: %v", server, stage, err)
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dnsErr *net.DNSError
	var recordErr tls.RecordHeaderError
	switch {
	case errors.Is(err, errNoSTARTTLS):
		return failure.Config, fmt.Sprintf("%s does not offer STARTTLS", server),
			"smtp_server must be Exchange Online's submission endpoint, smtp.office365.com:587 (ports 25 and 465 are not for this)"
	case errors.Is(err, errNoXOAUTH2):
		return failure.Config, fmt.Sprintf("%s: %v", server, err),
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
