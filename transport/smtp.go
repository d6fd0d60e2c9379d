package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// SMTPConfig configures submission over SMTP AUTH XOAUTH2.
type SMTPConfig struct {
	Server         string         // host:port, default smtp.office365.com:587 (port 587 when omitted)
	Mailbox        string         // the mailbox the app logs on to (XOAUTH2 user=)
	HeloName       string         // EHLO name, the host's FQDN; default (and when unusable) os.Hostname()
	RootCAs        *x509.CertPool // nil: the system roots
	Tokens         TokenSource
	DialTimeout    time.Duration // TCP connect and TLS handshake, default 30 s
	CommandTimeout time.Duration // each command's reply, default 5 min
	DataTimeout    time.Duration // each body write without progress, and the final reply; default 10 min
	IdleTimeout    time.Duration // a reused connection idle this long is replaced, default 60 s
	Trace          io.Writer     // when set, receives the dialogue as "C: "/"S: " lines, token hidden
	// NoRenew reports a token Exchange refuses with 535 as it is. By
	// default the token is renewed once and tried on a new connection
	// (a token revoked or changed since it was cached); a caller that has
	// just fetched it, such as exo-sendmail check, wants the first answer.
	NoRenew bool
}

// ConnectInfo is what the server showed while a connection was opened and
// authenticated.
type ConnectInfo struct {
	TLSVersion   string            // "TLS 1.3"
	CipherSuite  string            // "TLS_AES_256_GCM_SHA384"
	VerifiedHost string            // the name the server's certificate was verified for
	Extensions   map[string]string // EHLO keywords after STARTTLS (upper case) and their parameters
	AuthReply    Reply             // the reply to AUTH XOAUTH2: 235
}

// DefaultSMTPServer is Exchange Online's client submission endpoint.
const DefaultSMTPServer = "smtp.office365.com:587"

// SMTP delivers over one SMTP connection, kept open and reused across Send
// calls. It is not meant for concurrent Send calls (they are serialised);
// open one SMTP per parallel connection.
type SMTP struct {
	cfg  SMTPConfig
	host string // for TLS verification

	mu       sync.Mutex
	sess     *session // nil: not connected
	dirty    bool     // a transaction is open on sess: RSET before the next MAIL
	lastUsed time.Time
}

var _ Sender = (*SMTP)(nil)

// NewSMTP returns an SMTP sender; it connects on the first Send.
func NewSMTP(cfg SMTPConfig) *SMTP {
	if cfg.Server == "" {
		cfg.Server = DefaultSMTPServer
	}
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		cfg.Server = net.JoinHostPort(cfg.Server, "587")
	}
	if !isPrintableASCII(cfg.HeloName) || cfg.HeloName == "" || strings.Contains(cfg.HeloName, " ") {
		cfg.HeloName, _ = os.Hostname()
	}
	if !isPrintableASCII(cfg.HeloName) || cfg.HeloName == "" || strings.Contains(cfg.HeloName, " ") {
		cfg.HeloName = "localhost"
	}
	setDefault(&cfg.DialTimeout, 30*time.Second)
	setDefault(&cfg.CommandTimeout, 5*time.Minute)
	setDefault(&cfg.DataTimeout, 10*time.Minute)
	setDefault(&cfg.IdleTimeout, 60*time.Second)
	host, _, _ := net.SplitHostPort(cfg.Server)
	return &SMTP{cfg: cfg, host: host}
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Send submits msg. A connection that was idle too long is replaced first;
// one the server has closed meanwhile is replaced once, transparently.
func (c *SMTP) Send(ctx context.Context, msg *Message) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := checkEnvelope(msg); err != nil {
		return Result{}, err
	}
	if c.sess != nil && time.Since(c.lastUsed) > c.cfg.IdleTimeout {
		c.drop()
	}
	for attempt := 0; ; attempt++ {
		reused := c.sess != nil
		if !reused {
			if err := c.connect(ctx); err != nil {
				return Result{}, err
			}
		}
		res, stale, err := c.transaction(ctx, msg)
		if stale && reused && attempt == 0 && ctx.Err() == nil {
			continue
		}
		if c.sess != nil {
			c.lastUsed = time.Now()
		}
		return res, err
	}
}

// Close says QUIT (within a few seconds) and closes the connection.
func (c *SMTP) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.quit()
		c.sess = nil
	}
	return nil
}

// Connect opens a new connection and authenticates it as Send does before
// its first message (an open connection is closed first), keeps it for the
// next Send and reports what the server showed. Errors are *failure.Error;
// one of the dialogue has a *StepError as its cause (errors.As), with the
// step that failed and the server's full reply to it. The token is renewed
// on a 535 unless NoRenew is set.
func (c *SMTP) Connect(ctx context.Context) (ConnectInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.quit()
		c.sess = nil
	}
	if err := c.connect(ctx); err != nil {
		return ConnectInfo{}, err
	}
	c.lastUsed = time.Now()
	info := c.sess.info
	info.Extensions = maps.Clone(info.Extensions)
	return info, nil
}

// drop closes the connection without a word: its state is unknown.
func (c *SMTP) drop() {
	if c.sess != nil {
		c.sess.close()
		c.sess = nil
	}
	c.dirty = false
}

// connect opens an authenticated connection. A token Exchange refuses with
// 535 is renewed once, on a new connection, unless NoRenew is set.
func (c *SMTP) connect(ctx context.Context) error {
	if c.cfg.Tokens == nil {
		return &failure.Error{Class: failure.Config, Err: errors.New("SMTP transport has no token source")}
	}
	tok, err := c.cfg.Tokens.Token(ctx)
	if err != nil {
		return asFailure(err)
	}
	for renewed := false; ; renewed = true {
		sess, err := dial(ctx, &c.cfg, c.host)
		if err != nil {
			return err
		}
		r, err := c.authenticate(ctx, sess, tok)
		if err == nil {
			c.sess, c.dirty = sess, false
			return nil
		}
		sess.close()
		if renewed || c.cfg.NoRenew || r.Code != 535 || r.Enhanced == "5.7.139" {
			return err
		}
		if tok, err = c.cfg.Tokens.Renew(ctx, tok); err != nil {
			return asFailure(err)
		}
	}
}

// authenticate runs AUTH XOAUTH2 and returns the reply with the error.
func (c *SMTP) authenticate(ctx context.Context, sess *session, tok string) (Reply, error) {
	if mechs := sess.ext["AUTH"]; !offersAuth(mechs, "XOAUTH2") {
		if mechs == "" {
			mechs = "none"
		}
		return Reply{}, &failure.Error{Class: failure.Config,
			Err:    fmt.Errorf("server %s %w", c.cfg.Server, &StepError{Step: "AUTH", Err: fmt.Errorf("%w (AUTH %s)", ErrNoXOAUTH2, mechs)}),
			Remedy: "point server at Exchange Online submission (smtp.office365.com:587)"}
	}
	stop := context.AfterFunc(ctx, sess.close)
	defer stop()
	x := &xoauth2{user: c.cfg.Mailbox, token: tok}
	r, err := sess.auth(x)
	if err != nil {
		return Reply{}, sess.connectError(ctx, "AUTH", err)
	}
	if r.Code == 235 {
		sess.info.AuthReply = r
		return r, nil
	}
	fe := refused("AUTH", r, c.cfg.Mailbox)
	if x.challenge != "" {
		fe.Reply += " (server said: " + x.challenge + ")"
	}
	return r, fe
}

func offersAuth(mechs, mech string) bool {
	for _, m := range strings.Fields(mechs) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// transaction runs MAIL, RCPT, DATA on the current connection. stale is true
// when the connection turned out dead before the server took anything: the
// caller may retry on a new one.
//
// When the server offers PIPELINING (RFC 2920; Exchange Online does), RSET,
// MAIL, every RCPT and DATA go in one flight and their replies are read in
// order: two round trips a message (the commands, then the body) instead of
// three plus one per recipient.
func (c *SMTP) transaction(ctx context.Context, msg *Message) (res Result, stale bool, err error) {
	sess := c.sess
	stop := context.AfterFunc(ctx, sess.close)
	defer func() {
		if !stop() && c.sess == sess {
			c.drop() // the cancellation closed the connection
		}
	}()

	body, err := msg.Open()
	if err != nil {
		return Result{}, false, failure.Wrap(failure.Temporary, fmt.Errorf("open queued message: %w", err))
	}
	defer body.Close()

	mail, ferr := mailLine(msg, sess.ext)
	if ferr != nil {
		return Result{}, false, ferr
	}
	var rcpts []command
	for _, rc := range msg.Recipients {
		if fe := checkAddress(rc.Addr, "recipient"); fe != nil {
			res.setRejected(rc.Addr, fe)
			continue
		}
		rcpts = append(rcpts, command{verb: "RCPT", line: rcptLine(rc, sess.ext), rcpt: rc.Addr})
	}
	if len(rcpts) == 0 {
		return Result{Rejected: res.Rejected}, false, allRefused(res.Rejected)
	}
	var cmds []command
	if c.dirty {
		cmds = append(cmds, command{verb: "RSET", line: "RSET"})
	}
	cmds = append(cmds, command{verb: "MAIL", line: mail})
	cmds = append(cmds, rcpts...)
	cmds = append(cmds, command{verb: "DATA", line: "DATA"})
	_, pipelining := sess.ext["PIPELINING"]

	// Replies are read in order. With pipelining, the commands sent after
	// a refused MAIL are still answered (503) and their replies read, so
	// that the connection stays in step; no further flight is sent.
	var mailErr *failure.Error // MAIL refused: the transaction failed
	accepted, sent, dataReply := 0, 0, Reply{}
	for i, cmd := range cmds {
		if i == sent && (mailErr != nil || cmd.verb == "DATA" && accepted == 0) {
			break // nothing in flight, and nothing worth sending
		}
		if i == sent {
			n := 1
			if pipelining {
				n = flight(cmds[i:])
			}
			if err := sess.send(cmds[i : i+n]); err != nil {
				c.drop() // the first flight failing: dropped while idle
				return Result{}, i == 0, sess.ioError(ctx, cmd.verb, err)
			}
			sent += n
		}
		sess.conn.SetReadDeadline(time.Now().Add(sess.cmdTO))
		r, err := sess.readReply()
		switch {
		case err != nil || r.Code == 421:
			c.drop()
			switch {
			case mailErr != nil:
				return Result{}, false, mailErr // the verdict came before the connection went
			case cmd.verb == "DATA" && accepted == 0:
				return Result{Rejected: res.Rejected}, false, allRefused(res.Rejected)
			}
			// A failure on the first command of a reused connection, by an
			// I/O error or a 421, means the server dropped it while idle.
			first := i == 0 || cmds[0].verb == "RSET" && i == 1
			if err != nil {
				return Result{}, first, sess.ioError(ctx, cmd.verb, err)
			}
			return Result{}, first, classify(stageOf(cmd.verb), r, c.cfg.Mailbox)
		case cmd.verb == "RSET":
			if r.Code != 250 {
				c.drop()
				return Result{}, true, classify(stageMail, r, c.cfg.Mailbox)
			}
			c.dirty = false
		case cmd.verb == "MAIL":
			c.dirty = true
			if r.Code != 250 {
				mailErr = classify(stageMail, r, c.cfg.Mailbox)
			}
		case cmd.verb == "RCPT":
			if mailErr != nil {
				continue // answered after a refused MAIL: says nothing of the recipient
			}
			if r.Code/100 == 2 {
				accepted++
			} else {
				res.setRejected(cmd.rcpt, classify(stageRcpt, r, c.cfg.Mailbox))
			}
		case cmd.verb == "DATA":
			dataReply = r
		}
	}

	switch {
	case dataReply.Code == 354 && mailErr != nil:
		// A server that took DATA after refusing MAIL may have taken the
		// recipients too (their replies were not counted): ending the
		// message could deliver it empty. Dropping the connection
		// discards the unfinished message.
		c.drop()
	case dataReply.Code == 354 && accepted == 0:
		// DATA taken with no recipient (RFC 2920 §3.1): end the empty
		// message, which goes to nobody.
		err := sess.send([]command{{verb: ".", line: "."}})
		if err == nil {
			var r Reply
			if r, err = sess.readReply(); err == nil && r.Code == 421 {
				err = errors.New(r.String())
			}
		}
		if err != nil {
			c.drop()
		}
	}
	switch {
	case mailErr != nil:
		return Result{}, false, mailErr
	case accepted == 0:
		// The transaction stays open: the next Send starts with RSET.
		return Result{Rejected: res.Rejected}, false, allRefused(res.Rejected)
	case dataReply.Code != 354:
		return Result{}, false, classify(stageData, dataReply, c.cfg.Mailbox)
	}
	if _, err := sess.writeBody(body, c.cfg.DataTimeout); err != nil {
		c.drop()
		var rerr bodyReadError
		if errors.As(err, &rerr) {
			return Result{}, false, failure.Wrap(failure.Temporary, rerr)
		}
		return Result{}, false, sess.ioError(ctx, "message body", err)
	}
	sess.conn.SetReadDeadline(time.Now().Add(c.cfg.DataTimeout))
	r, err := sess.readReply()
	if err != nil {
		c.drop()
		return Result{}, false, sess.ioError(ctx, "reply after the message (it may have been accepted)", err)
	}
	c.dirty = false
	if r.Code == 250 {
		res.Reply = r.String()
		return res, false, nil
	}
	if r.Code == 421 {
		c.drop()
	}
	return Result{}, false, classify(stageData, r, c.cfg.Mailbox)
}

// flightBytes bounds a flight: the client writes a whole flight before it
// reads a reply, so a flight must fit in the socket buffers (RFC 2920 §3.1:
// within the TCP window) or the client and a server waiting for its
// replies to drain would block each other. 4 KB holds a transaction of
// about a hundred recipients, and is one write of the session's buffer.
const flightBytes = 4096

// flight returns how many of cmds, at least one, go in the next flight.
func flight(cmds []command) int {
	n, size := 1, len(cmds[0].line)+2
	for ; n < len(cmds) && size+len(cmds[n].line)+2 <= flightBytes; n++ {
		size += len(cmds[n].line) + 2
	}
	return n
}

// stageOf is the stage of the reply classification table a verb belongs to.
func stageOf(verb string) stage {
	switch verb {
	case "RCPT":
		return stageRcpt
	case "DATA":
		return stageData
	}
	return stageMail
}

func (r *Result) setRejected(addr string, fe *failure.Error) {
	if r.Rejected == nil {
		r.Rejected = make(map[string]*failure.Error)
	}
	r.Rejected[addr] = fe
}

// allRefused sums up the refusal of every recipient in one error: its class
// is the one that asks the most of the caller (configuration, throttling,
// retry, bounce, in that order), its reply that recipient's.
func allRefused(rejected map[string]*failure.Error) *failure.Error {
	rank := map[failure.Class]int{failure.Config: 4, failure.Throttled: 3, failure.Temporary: 2, failure.Permanent: 1}
	var worst *failure.Error
	var worstAddr string
	for addr, fe := range rejected {
		if worst == nil || rank[fe.Class] > rank[worst.Class] || rank[fe.Class] == rank[worst.Class] && addr < worstAddr {
			worst, worstAddr = fe, addr
		}
	}
	return &failure.Error{Class: worst.Class, Reply: worst.Reply, Remedy: worst.Remedy,
		Err: fmt.Errorf("every recipient was refused (%d), e.g. <%s>: %w", len(rejected), worstAddr, worst)}
}

// checkEnvelope refuses an envelope that cannot be written as SMTP commands.
func checkEnvelope(msg *Message) *failure.Error {
	if msg == nil || msg.Open == nil {
		return failure.Wrap(failure.Permanent, errors.New("no message to send"))
	}
	if len(msg.Recipients) == 0 {
		return failure.Wrap(failure.Permanent, errors.New("message has no recipient"))
	}
	if msg.MailFrom != "" {
		return checkAddress(msg.MailFrom, "sender")
	}
	return nil
}

func checkAddress(addr, what string) *failure.Error {
	if addr == "" || strings.ContainsAny(addr, "<>\r\n\x00 \t") || len(addr) > 512 {
		return failure.Wrap(failure.Permanent, fmt.Errorf("invalid %s address %q", what, addr))
	}
	return nil
}

// mailLine builds MAIL FROM with the parameters the server offers.
func mailLine(msg *Message, ext map[string]string) (string, *failure.Error) {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + msg.MailFrom + ">")
	if limit, ok := ext["SIZE"]; ok {
		if max, err := strconv.ParseInt(limit, 10, 64); err == nil && max > 0 && msg.Size > max {
			return "", failure.Wrap(failure.Permanent,
				fmt.Errorf("message of %d bytes exceeds the server's limit of %d bytes", msg.Size, max))
		}
		if msg.Size > 0 {
			b.WriteString(" SIZE=" + strconv.FormatInt(msg.Size, 10))
		}
	}
	if _, ok := ext["8BITMIME"]; ok && msg.Body8Bit {
		b.WriteString(" BODY=8BITMIME")
	}
	if msg.SMTPUTF8 || needsUTF8(msg) {
		if _, ok := ext["SMTPUTF8"]; !ok {
			return "", failure.Wrap(failure.Permanent, errors.New("server lacks SMTPUTF8, needed for a non-ASCII address"))
		}
		b.WriteString(" SMTPUTF8")
	}
	if _, ok := ext["DSN"]; ok {
		if ret := strings.ToUpper(msg.Ret); ret == "FULL" || ret == "HDRS" {
			b.WriteString(" RET=" + ret)
		}
		if msg.EnvID != "" && len(msg.EnvID) <= 100 && isPrintableASCII(msg.EnvID) {
			b.WriteString(" ENVID=" + xtext(msg.EnvID))
		}
	}
	return b.String(), nil
}

// rcptLine builds RCPT TO with the DSN parameters when the server offers
// DSN. An unusable NOTIFY or ORCPT is left out rather than failing the send.
func rcptLine(rc Recipient, ext map[string]string) string {
	line := "RCPT TO:<" + rc.Addr + ">"
	if _, ok := ext["DSN"]; !ok {
		return line
	}
	if n := notifyValue(rc.Notify); n != "" {
		line += " NOTIFY=" + n
	}
	orcpt := rc.ORcpt
	if len(orcpt) > 7 && strings.EqualFold(orcpt[:7], "rfc822;") {
		orcpt = orcpt[7:]
	}
	if orcpt != "" && isPrintableASCII(orcpt) && len(orcpt) <= 500 {
		line += " ORCPT=rfc822;" + xtext(orcpt)
	}
	return line
}

// notifyValue normalises a NOTIFY value; "" when it is not valid (RFC 3461 §4.1).
func notifyValue(v string) string {
	v = strings.ToUpper(strings.ReplaceAll(v, " ", ""))
	if v == "" || v == "NEVER" {
		return v
	}
	seen := map[string]bool{}
	for _, p := range strings.Split(v, ",") {
		if p != "SUCCESS" && p != "FAILURE" && p != "DELAY" || seen[p] {
			return ""
		}
		seen[p] = true
	}
	return v
}

func needsUTF8(msg *Message) bool {
	if !isASCII(msg.MailFrom) {
		return true
	}
	for _, rc := range msg.Recipients {
		if !isASCII(rc.Addr) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isPrintableASCII reports printable US-ASCII, space included (RFC 3461 §4.4).
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// xtext encodes s per RFC 3461 §4: '+', '=' and anything outside '!'..'~' as +HH.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
