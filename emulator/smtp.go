package emulator

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The SMTP side speaks as smtp.office365.com does on port 587. go-smtp's
// server is not used: it words its greeting, EHLO, AUTH, MAIL, RCPT and DATA
// replies its own way, and its STARTTLS hides the plain text from any wrapper
// that would reword them; fault injection and round-trip counting also need
// every command. This is a small server of its own instead.
const (
	smtpHost = "emulator.outlook.office365.com"
	hostTag  = "[Hostname=emulator]"

	advertisedSize = 157286400 // SIZE in EHLO, as Exchange advertises
	maxSendSize    = 35 << 20  // the mailbox's MaxSendSize default (552 5.3.4 beyond)
	maxLine        = 32 << 10  // a command line; XOAUTH2 with a 2.5 KB token is ~3.5 KB
	commandTimeout = 5 * time.Minute
	writeTimeout   = time.Minute
	tlsTimeout     = 30 * time.Second
	maxErrors      = 10 // bad commands before the connection is dropped
)

var errLineTooLong = errors.New("line too long")

func (e *Emulator) serveSMTP() {
	for {
		c, err := e.smtpLn.Accept()
		if err != nil {
			select {
			case <-e.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !e.track(c) {
			continue
		}
		e.count(func(s *Stats) *int { return &s.SMTPConnections })
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer e.untrack(c)
			s := &session{
				e:       e,
				conn:    c,
				r:       bufio.NewReaderSize(c, 64<<10),
				w:       bufio.NewWriter(c),
				arrived: time.Now(), // the greeting: Latency after the connection
			}
			s.serve()
		}()
	}
}

// track registers an open connection so that Close can drop it; false if the
// emulator is closing (the connection is closed then).
func (e *Emulator) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.done:
		c.Close()
		return false
	default:
	}
	e.conns[c] = struct{}{}
	return true
}

func (e *Emulator) untrack(c net.Conn) {
	c.Close()
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
}

// session is one SMTP connection.
type session struct {
	e    *Emulator
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer

	tls     bool
	helo    bool
	logon   *logon
	release func() // gives back the mailbox's connection slot
	errs    int
	// When the client's latest flight of bytes arrived: replies leave
	// Latency after it, so that pipelined commands, which arrive together,
	// are answered together, as over a link with that delay.
	arrived time.Time

	// The transaction.
	hasFrom bool
	from    string
	rcpts   []string
	binary  bool         // BODY=BINARYMIME: only BDAT may carry it
	chunks  bytes.Buffer // BDAT chunks so far
	big     bool         // the BDAT chunks exceed maxSendSize
}

// logon is what a successful AUTH XOAUTH2 established.
type logon struct {
	mailbox   *Mailbox
	app       *App
	permitted bool // the app has FullAccess: otherwise 430 after DATA, as Exchange does
}

func (s *session) serve() {
	defer func() {
		if s.release != nil {
			s.release()
		}
	}()
	s.reply(220, fmt.Sprintf("%s Microsoft ESMTP MAIL Service ready at %s", smtpHost, time.Now().UTC().Format(time.RFC1123Z)))
	for {
		line, err := s.readLine()
		if errors.Is(err, errLineTooLong) {
			if !s.fail(500, "5.3.3 Line too long") {
				return
			}
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.reply(451, "4.7.0 Timeout waiting for client input "+hostTag)
			}
			return
		}
		s.e.count(func(st *Stats) *int { return &st.SMTPCommands })
		if f := s.e.currentFaults(); f.DropRate > 0 && rand.Float64() < f.DropRate {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		if !s.command(strings.ToUpper(verb), strings.TrimSpace(arg)) {
			return
		}
	}
}

// command runs one command; false ends the connection.
func (s *session) command(verb, arg string) bool {
	switch verb {
	case "EHLO", "HELO":
		return s.hello(verb, arg)
	case "STARTTLS":
		return s.startTLS()
	case "AUTH":
		return s.auth(arg)
	case "MAIL":
		return s.mail(arg)
	case "RCPT":
		return s.rcpt(arg)
	case "DATA":
		return s.data(arg)
	case "BDAT":
		return s.bdat(arg)
	case "RSET":
		s.reset()
		return s.reply(250, "2.0.0 Resetting")
	case "NOOP":
		return s.reply(250, "2.0.0 OK")
	case "VRFY":
		return s.reply(252, "2.1.5 Cannot VRFY user, but will take message for this user")
	case "QUIT":
		s.reply(221, "2.0.0 Service closing transmission channel")
		return false
	}
	return s.fail(500, fmt.Sprintf("5.3.3 Unrecognized command '%s'", verb))
}

func (s *session) hello(verb, arg string) bool {
	if arg == "" {
		return s.fail(501, "5.5.4 Invalid domain name")
	}
	s.reset()
	s.helo = true
	greeting := fmt.Sprintf("%s Hello [%s]", smtpHost, remoteIP(s.conn))
	if verb == "HELO" {
		return s.reply(250, greeting)
	}
	tlsOrAuth := "STARTTLS"
	if s.tls {
		tlsOrAuth = "AUTH LOGIN XOAUTH2"
	}
	return s.reply(250, strings.Join([]string{greeting,
		"SIZE " + strconv.Itoa(advertisedSize), "PIPELINING", "DSN", "ENHANCEDSTATUSCODES",
		tlsOrAuth, "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"}, "\n"))
}

func (s *session) startTLS() bool {
	if s.tls {
		return s.fail(503, "5.5.1 STARTTLS was already negotiated")
	}
	if !s.helo {
		return s.fail(503, "5.5.1 Send hello first")
	}
	if !s.reply(220, "2.0.0 SMTP server ready") {
		return false
	}
	// Commands pipelined after STARTTLS were sent in clear text: drop them
	// (RFC 3207 §6, the STARTTLS injection attack).
	s.r.Discard(s.r.Buffered())
	tc := tls.Server(s.conn, s.e.ca.serverTLS())
	tc.SetDeadline(time.Now().Add(tlsTimeout))
	if err := tc.Handshake(); err != nil {
		return false
	}
	tc.SetDeadline(time.Time{})
	s.conn = tc
	s.r = bufio.NewReaderSize(tc, 64<<10)
	s.w = bufio.NewWriter(tc)
	s.tls = true
	s.helo = false
	s.reset()
	return true
}

func (s *session) auth(arg string) bool {
	if !s.helo {
		return s.fail(503, "5.5.1 Send hello first")
	}
	mech, ir, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if !s.tls || (mech != "XOAUTH2" && mech != "LOGIN") {
		return s.fail(504, "5.7.4 Unrecognized authentication type")
	}
	if s.logon != nil {
		return s.fail(503, "5.5.1 Already authenticated")
	}
	if mech == "LOGIN" {
		// Basic authentication: prompt as Exchange does, then refuse.
		if ir == "" {
			if _, err := s.challenge("VXNlcm5hbWU6"); err != nil {
				return errors.Is(err, errCancelled)
			}
		}
		if _, err := s.challenge("UGFzc3dvcmQ6"); err != nil {
			return errors.Is(err, errCancelled)
		}
		s.e.count(func(st *Stats) *int { return &st.AuthFailures })
		return s.reply(535, "5.7.139 Authentication unsuccessful, basic authentication is disabled. "+hostTag)
	}
	resp := ir
	if resp == "" {
		var err error
		if resp, err = s.challenge(""); err != nil {
			return errors.Is(err, errCancelled)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if resp == "=" {
		raw, err = nil, nil
	}
	if err != nil {
		return s.fail(501, "5.5.2 Cannot Base64-decode Client responses")
	}
	return s.xoauth2(raw)
}

// errCancelled is a SASL exchange the client cancelled with "*"; the
// connection goes on.
var errCancelled = errors.New("authentication cancelled")

// challenge sends a 334 and reads the client's answer.
func (s *session) challenge(text string) (string, error) {
	if !s.reply(334, text) {
		return "", io.ErrClosedPipe
	}
	line, err := s.readLine()
	if err != nil {
		return "", err
	}
	if line == "*" {
		if !s.reply(501, "5.7.0 Authentication aborted") {
			return "", io.ErrClosedPipe
		}
		return "", errCancelled
	}
	return line, nil
}

// xoauth2 checks "user=<mailbox>\x01auth=Bearer <token>\x01\x01".
func (s *session) xoauth2(raw []byte) bool {
	refuse := func() bool {
		s.e.count(func(st *Stats) *int { return &st.AuthFailures })
		return s.reply(535, "5.7.3 Authentication unsuccessful [emulator]")
	}
	var user, token string
	for _, part := range strings.Split(string(raw), "\x01") {
		if v, ok := strings.CutPrefix(part, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(part, "auth="); ok {
			scheme, t, _ := strings.Cut(v, " ")
			if strings.EqualFold(scheme, "Bearer") {
				token = strings.TrimSpace(t)
			}
		}
	}
	mb, ok := s.e.mailbox(user)
	if !ok || token == "" {
		return refuse()
	}
	g, err := s.e.verify(token, resourceExchange, resourceExchange2)
	if err != nil || !containsFold(g.roles, roleSMTP) {
		return refuse()
	}
	if mb.SMTPAuthDisabled {
		s.e.count(func(st *Stats) *int { return &st.AuthFailures })
		return s.reply(535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [emulator]")
	}
	release, ok := s.e.logon(mb.Address)
	if !ok {
		return s.reply(432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded "+hostTag)
	}
	s.release = release
	s.logon = &logon{mailbox: mb, app: g.app, permitted: g.app.mayUse(mb.Address)}
	return s.reply(235, "2.7.0 Authentication successful")
}

func (s *session) mail(arg string) bool {
	if !s.helo {
		return s.fail(503, "5.5.1 Send hello first")
	}
	if s.logon == nil {
		return s.fail(530, "5.7.57 Client not authenticated to send mail "+hostTag)
	}
	if s.hasFrom {
		return s.fail(503, "5.5.1 Sender already specified")
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		return s.fail(501, "5.5.4 Invalid arguments")
	}
	addr, params, ok := parsePath(rest)
	if !ok {
		return s.fail(501, "5.1.7 Invalid address")
	}
	binary := false
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return s.fail(501, "5.5.4 Invalid SIZE parameter")
			}
			if n > advertisedSize {
				return s.reply(552, "5.3.4 Message size exceeds fixed maximum message size")
			}
		case "BODY":
			binary = strings.EqualFold(v, "BINARYMIME")
		case "SMTPUTF8", "RET", "ENVID", "AUTH":
		default:
			return s.fail(501, "5.5.4 Unrecognized parameter "+k)
		}
	}
	if s.e.rateExceeded(s.logon.mailbox.Address) {
		return s.reply(451, fmt.Sprintf("4.7.500 Server busy. Please try again later from [%s]. (S77719) %s", remoteIP(s.conn), hostTag))
	}
	s.hasFrom, s.from, s.binary = true, addr, binary
	return s.reply(250, "2.1.0 Sender OK")
}

func (s *session) rcpt(arg string) bool {
	if !s.hasFrom {
		return s.fail(503, "5.5.1 Need mail command")
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		return s.fail(501, "5.5.4 Invalid arguments")
	}
	addr, _, ok := parsePath(rest)
	if !ok || addr == "" {
		return s.fail(501, "5.1.3 Invalid address")
	}
	if s.e.cfg.Limits && len(s.rcpts) >= s.e.rcptLimit() {
		return s.reply(452, "4.5.3 Too many recipients")
	}
	f := s.e.currentFaults()
	if containsFold(f.RcptPerm, addr) {
		return s.reply(550, fmt.Sprintf("5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient %s not found by SMTP address lookup", addr))
	}
	if containsFold(f.RcptTemp, addr) {
		return s.reply(451, "4.4.0 Temporary server error. Please try again later. PRX5 "+hostTag)
	}
	s.rcpts = append(s.rcpts, addr)
	return s.reply(250, "2.1.5 Recipient OK")
}

func (s *session) data(arg string) bool {
	switch {
	case arg != "":
		return s.fail(501, "5.5.4 Invalid arguments")
	case !s.hasFrom:
		return s.fail(503, "5.5.1 Need mail command")
	case len(s.rcpts) == 0:
		return s.fail(503, "5.5.1 Need rcpt command")
	case s.binary:
		return s.fail(503, "5.5.1 BDAT required for BODY=BINARYMIME")
	}
	if !s.reply(354, "Start mail input; end with <CRLF>.<CRLF>") {
		return false
	}
	data, big, err := s.readData()
	if err != nil {
		return false
	}
	return s.submit(data, big)
}

func (s *session) bdat(arg string) bool {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		return s.fail(501, "5.5.4 Invalid arguments")
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 {
		return s.fail(501, "5.5.4 Invalid arguments")
	}
	last := len(f) == 2
	s.conn.SetReadDeadline(time.Now().Add(commandTimeout))
	var sink io.Writer = io.Discard
	if s.hasFrom && len(s.rcpts) > 0 && !s.big {
		if int64(s.chunks.Len())+n > maxSendSize {
			s.big = true
			s.chunks.Reset()
		} else {
			sink = &s.chunks
		}
	}
	if _, err := io.CopyN(sink, s.r, n); err != nil {
		return false
	}
	switch {
	case !s.hasFrom:
		return s.fail(503, "5.5.1 Need mail command")
	case len(s.rcpts) == 0:
		return s.fail(503, "5.5.1 Need rcpt command")
	case !last:
		return s.reply(250, fmt.Sprintf("2.0.0 %d bytes received", n))
	}
	data := bytes.Clone(s.chunks.Bytes())
	return s.submit(data, s.big)
}

// submit runs the checks Exchange makes after the message is in, in its
// order, then stores the message and answers.
func (s *session) submit(data []byte, big bool) bool {
	defer s.reset()
	lg := s.logon
	mb := lg.mailbox
	if !lg.permitted {
		return s.reply(430, "4.2.0 STOREDRV; mailbox logon failure")
	}
	if big {
		return s.reply(552, "5.3.4 Message size exceeds fixed maximum message size")
	}
	fields, _ := splitHeader(data)
	from, err := addresses(fields, "From")
	if err != nil {
		return s.reply(550, "5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant and include a valid From address "+hostTag)
	}
	if s.from != "" {
		from = append([]string{s.from}, from...)
	}
	for _, a := range from {
		if !mb.maySendAs(a) {
			return s.reply(554, fmt.Sprintf("5.2.252 SendAsDenied; %s not allowed to send as %s; STOREDRV.Submission.Exception:SendAsDeniedException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData] %s",
				mb.Address, a, hostTag))
		}
	}
	if over, _ := s.e.quotaExceeded(mb.Address, len(s.rcpts)); over {
		return s.reply(554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData] "+hostTag)
	}
	id := messageID(fields)
	m := Message{Via: "smtp", ID: id, Mailbox: mb.Address, MailFrom: s.from, Rcpts: s.rcpts, Data: data}
	if err := s.e.deliver(m); err != nil {
		return s.reply(451, "4.3.0 Temporary server error. Please try again later "+hostTag)
	}
	if s.e.currentFaults().DropAfterData {
		return false
	}
	return s.reply(250, fmt.Sprintf("2.0.0 OK %s %s", id, hostTag))
}

// readData reads a DATA body up to the lone dot, undoing dot-stuffing and
// keeping every other byte as sent. Past maxSendSize it keeps reading but
// stops storing, and reports big.
func (s *session) readData() (data []byte, big bool, err error) {
	var buf bytes.Buffer
	lineStart := true
	for {
		s.conn.SetReadDeadline(time.Now().Add(commandTimeout))
		chunk, err := s.readSlice()
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, false, err
		}
		if lineStart {
			if string(chunk) == ".\r\n" || string(chunk) == ".\n" {
				return buf.Bytes(), big, nil
			}
			if len(chunk) > 0 && chunk[0] == '.' {
				chunk = chunk[1:]
			}
		}
		lineStart = err == nil
		if buf.Len()+len(chunk) > maxSendSize {
			big = true
			buf.Reset()
		}
		if !big {
			buf.Write(chunk)
		}
	}
}

// readLine reads one command line, without its line ending.
func (s *session) readLine() (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(commandTimeout))
	var line []byte
	long := false
	for {
		chunk, err := s.readSlice()
		if len(line)+len(chunk) > maxLine {
			long = true
		} else {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if long {
		return "", errLineTooLong
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// readSlice reads up to a line feed, noting when bytes had to be waited for.
func (s *session) readSlice() ([]byte, error) {
	waits := s.r.Buffered() == 0
	chunk, err := s.r.ReadSlice('\n')
	if waits && len(chunk) > 0 {
		s.arrived = time.Now()
		s.e.count(func(st *Stats) *int { return &st.SMTPRoundTrips })
	}
	return chunk, err
}

// reply writes one reply (text lines joined by "\n" become a multi-line
// reply) once the injected latency has passed since the command's flight
// arrived; false if the client is gone.
func (s *session) reply(code int, text string) bool {
	s.e.pause(time.Until(s.arrived.Add(s.e.currentFaults().Latency)))
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		fmt.Fprintf(s.w, "%d%s%s\r\n", code, sep, l)
	}
	s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return s.w.Flush() == nil
}

// fail answers a client error and drops a connection that keeps making them.
func (s *session) fail(code int, text string) bool {
	if !s.reply(code, text) {
		return false
	}
	s.errs++
	if s.errs >= maxErrors {
		s.reply(421, "4.7.0 Too many errors on this connection, closing transmission channel")
		return false
	}
	return true
}

func (s *session) reset() {
	s.hasFrom, s.from, s.rcpts, s.binary, s.big = false, "", nil, false, false
	s.chunks.Reset()
}

// parsePath reads "<address> PARAM=value ..." after MAIL FROM: or RCPT TO:.
func parsePath(s string) (addr string, params []string, ok bool) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", nil, false
	}
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return "", nil, false
	}
	addr = s[1:end]
	if i := strings.IndexByte(addr, ':'); i >= 0 && strings.HasPrefix(addr, "@") {
		addr = addr[i+1:] // drop a source route
	}
	if strings.ContainsAny(addr, " \t<>\x00") || (addr != "" && !strings.Contains(addr, "@")) {
		return "", nil, false
	}
	return addr, strings.Fields(s[end+1:]), true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}
