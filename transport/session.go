package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Reply lines longer than this, or replies of more lines, are a broken or
// hostile server; the limits keep its memory use bounded.
const (
	maxReplyLine  = 4096
	maxReplyLines = 200
)

// session is one SMTP connection: a line-oriented dialogue with a deadline
// on every wait, and the trace of that dialogue.
type session struct {
	raw    net.Conn // the TCP connection
	conn   net.Conn // raw, or the TLS connection over it after STARTTLS
	br     *bufio.Reader
	bw     *bufio.Writer
	ext    map[string]string // EHLO keywords (upper case) and their parameters
	info   ConnectInfo       // what the server showed while connecting
	server string            // host:port, for error messages
	cmdTO  time.Duration
	trace  io.Writer
}

// dial opens a connection, reads the greeting, says EHLO, starts TLS and
// says EHLO again. Errors are classified.
func dial(ctx context.Context, cfg *SMTPConfig, host string) (*session, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	raw, err := d.DialContext(ctx, "tcp", cfg.Server)
	if err != nil {
		return nil, failure.Wrap(failure.Temporary, fmt.Errorf("connect to %s: %w", cfg.Server, &StepError{Step: "connect", Err: err}))
	}
	s := &session{raw: raw, server: cfg.Server, cmdTO: cfg.CommandTimeout, trace: cfg.Trace}
	s.use(raw)
	if err := s.open(ctx, cfg, host); err != nil {
		raw.Close()
		return nil, err
	}
	return s, nil
}

func (s *session) open(ctx context.Context, cfg *SMTPConfig, host string) error {
	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	defer stop()

	s.conn.SetDeadline(time.Now().Add(s.cmdTO))
	r, err := s.readReply()
	if err != nil {
		return s.connectError(ctx, "greeting", err)
	}
	if r.Code != 220 {
		return refused("greeting", r, cfg.Mailbox)
	}
	if err := s.hello(ctx, cfg); err != nil {
		return err
	}
	if _, ok := s.ext["STARTTLS"]; !ok {
		return &failure.Error{Class: failure.Config,
			Err:    fmt.Errorf("server %s %w", s.server, &StepError{Step: "STARTTLS", Err: ErrNoSTARTTLS}),
			Remedy: "exo-sendmail never sends credentials in clear text: point server at Exchange Online submission (smtp.office365.com:587)"}
	}
	r, err = s.cmd("STARTTLS", "STARTTLS")
	if err != nil {
		return s.connectError(ctx, "STARTTLS", err)
	}
	if r.Code != 220 {
		return refused("STARTTLS", r, cfg.Mailbox)
	}
	if s.br.Buffered() > 0 {
		// Bytes sent before the handshake would be read as if they came
		// through TLS (STARTTLS command injection).
		return failure.Wrap(failure.Temporary, fmt.Errorf("server %s %w", s.server,
			&StepError{Step: "STARTTLS", Err: errors.New("sent data after its STARTTLS reply")}))
	}
	tc := tls.Client(s.raw, &tls.Config{ServerName: host, RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12})
	s.raw.SetDeadline(time.Now().Add(cfg.DialTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			return s.connectError(ctx, "TLS handshake", err)
		}
		return tlsError(s.server, host, err)
	}
	st := tc.ConnectionState()
	s.info.TLSVersion, s.info.CipherSuite, s.info.VerifiedHost = tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), host
	s.traceLine("-- " + s.info.TLSVersion + " " + s.info.CipherSuite + ", certificate verified for " + host)
	s.use(tc)
	return s.hello(ctx, cfg)
}

// use makes c the connection the dialogue runs over.
func (s *session) use(c net.Conn) {
	s.conn = c
	s.br = bufio.NewReaderSize(c, maxReplyLine)
	s.bw = bufio.NewWriterSize(c, 4096)
}

// tlsError classifies a failed handshake: a certificate that does not verify
// is the administrator's to fix, anything else may pass.
func tlsError(server, host string, err error) *failure.Error {
	var hostErr x509.HostnameError
	var verr *tls.CertificateVerificationError
	step := &StepError{Step: "TLS handshake", Err: err}
	switch {
	case errors.As(err, &hostErr):
		return &failure.Error{Class: failure.Config, Err: fmt.Errorf("TLS with %s: %w", server, step),
			Remedy: "the certificate of " + server + " is not valid for " + host + ": check the server setting"}
	case errors.As(err, &verr):
		return &failure.Error{Class: failure.Config, Err: fmt.Errorf("TLS with %s: %w", server, step),
			Remedy: "certificate of " + host + " not trusted: set ca_file to the CA that issued it, or fix the system trust store"}
	}
	return failure.Wrap(failure.Temporary, fmt.Errorf("TLS handshake with %s: %w", server, step))
}

func (s *session) hello(ctx context.Context, cfg *SMTPConfig) error {
	r, err := s.cmd("EHLO "+cfg.HeloName, "EHLO "+cfg.HeloName)
	if err != nil {
		return s.connectError(ctx, "EHLO", err)
	}
	if r.Code != 250 {
		return refused("EHLO", r, cfg.Mailbox)
	}
	s.ext = make(map[string]string)
	for _, l := range r.Lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		s.ext[strings.ToUpper(k)] = v
	}
	s.info.Extensions = s.ext
	return nil
}

// auth runs a SASL exchange and returns the server's final reply.
func (s *session) auth(c sasl.Client) (Reply, error) {
	mech, ir, err := c.Start()
	if err != nil {
		return Reply{}, err
	}
	line := "AUTH " + mech
	switch {
	case len(ir) > 0:
		line += " " + base64.StdEncoding.EncodeToString(ir)
	case ir != nil:
		line += " ="
	}
	r, err := s.cmd(line, "AUTH "+mech+" [token hidden]")
	for round := 0; err == nil && r.Code == 334; round++ {
		ch, derr := base64.StdEncoding.DecodeString(r.text())
		var resp []byte
		if derr == nil && round < 5 {
			resp, derr = c.Next(ch)
		}
		if derr != nil || round >= 5 {
			return s.cmd("*", "*") // abort the exchange; the server answers 501
		}
		traced := ""
		if len(resp) > 0 {
			traced = "[response hidden]"
		}
		r, err = s.cmd(base64.StdEncoding.EncodeToString(resp), traced)
	}
	return r, err
}

// command is one command line.
type command struct {
	verb   string // RSET, MAIL, RCPT, DATA... for errors
	line   string
	traced string // what the trace shows of line; "" shows line
	rcpt   string // RCPT: the recipient
}

// cmd sends one command line and reads the reply, both within the command
// timeout. traced is what the trace shows of the line.
func (s *session) cmd(line, traced string) (Reply, error) {
	if err := s.send([]command{{line: line, traced: traced}}); err != nil {
		return Reply{}, err
	}
	return s.readReply()
}

// send writes commands in one flight, within the command timeout; their
// replies are then read in order with readReply.
func (s *session) send(cmds []command) error {
	s.conn.SetDeadline(time.Now().Add(s.cmdTO))
	for _, c := range cmds {
		if c.traced != "" {
			s.traceLine("C: " + c.traced)
		} else {
			s.traceLine("C: " + c.line)
		}
		s.bw.WriteString(c.line)
		s.bw.WriteString("\r\n")
	}
	return s.bw.Flush()
}

// readReply reads one reply of one or more lines under the current deadline.
func (s *session) readReply() (Reply, error) {
	var r Reply
	for n := 0; ; n++ {
		line, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return Reply{}, fmt.Errorf("reply line longer than %d bytes", maxReplyLine)
		}
		if err != nil {
			return Reply{}, err
		}
		text := strings.TrimRight(string(line), "\r\n")
		s.traceLine("S: " + text)
		code, more, enh, t, err := parseReplyLine(text)
		if err != nil {
			return Reply{}, err
		}
		if n == 0 {
			r.Code, r.Enhanced = code, enh
		} else if code != r.Code {
			return Reply{}, fmt.Errorf("reply line %q does not continue reply %d", text, r.Code)
		}
		r.Lines = append(r.Lines, t)
		if !more {
			return r, nil
		}
		if n >= maxReplyLines {
			return Reply{}, fmt.Errorf("reply of more than %d lines", maxReplyLines)
		}
	}
}

// writeBody sends the message after a 354 and the terminating dot. Every
// write gets its own deadline: a server that stops reading fails the send
// within timeout, a slow but moving upload does not.
// A read error is returned wrapped in bodyReadError.
func (s *session) writeBody(r io.Reader, timeout time.Duration) (int64, error) {
	tw := textproto.NewWriter(bufio.NewWriterSize(deadlineWriter{s.conn, timeout}, 32<<10))
	dw := tw.DotWriter()
	src := &readErrReader{r: r}
	n, err := io.Copy(dw, src)
	if src.err != nil {
		return n, bodyReadError{src.err}
	}
	if err != nil {
		return n, err
	}
	s.traceLine(fmt.Sprintf("C: <%d bytes of message>", n))
	s.traceLine("C: .")
	return n, dw.Close() // writes the dot and flushes
}

// bodyReadError is a failure to read the queued message (not the network).
type bodyReadError struct{ err error }

func (e bodyReadError) Error() string { return "read queued message: " + e.err.Error() }
func (e bodyReadError) Unwrap() error { return e.err }

type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

type deadlineWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.c.Write(p)
}

// ioError classifies an I/O failure: always temporary, named after what was
// being waited for, and after the cancellation when that was the cause.
func (s *session) ioError(ctx context.Context, what string, err error) *failure.Error {
	return failure.Wrap(failure.Temporary, fmt.Errorf("SMTP %s: %s: %w", s.server, what, cancelled(ctx, err)))
}

// connectError is an I/O failure at a step of connecting.
func (s *session) connectError(ctx context.Context, step string, err error) *failure.Error {
	return failure.Wrap(failure.Temporary, fmt.Errorf("SMTP %s: %s: %w", s.server, step, &StepError{Step: step, Err: cancelled(ctx, err)}))
}

// cancelled returns the context's error when it ended, else err.
func cancelled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// quit says goodbye within a short deadline and closes the connection.
func (s *session) quit() {
	s.cmdTO = 5 * time.Second
	s.cmd("QUIT", "QUIT")
	s.conn.Close()
}

// close drops the connection at once (no TLS close_notify to wait for).
func (s *session) close() { s.raw.Close() }

func (s *session) traceLine(line string) {
	if s.trace != nil {
		io.WriteString(s.trace, line+"\n")
	}
}
