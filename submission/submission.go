// Package submission turns what a caller hands sendmail (options and a
// message on a stream) into a queue entry: the envelope (-f, arguments, -t),
// and the message as stored (Bcc removed, Date, Message-ID and From added
// when missing, LF line ends), streamed into the spool in constant memory.
//
// The command line and sendmail -bs both submit through Read and Enqueue,
// so a message is queued the same way whichever door it came through.
package submission

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/queue"
)

// Options are what the caller said about one message.
type Options struct {
	// Sender is the envelope sender as given (-f, -r, MAIL FROM), angle
	// brackets allowed; "<>" or "" is the null sender. Used only when
	// SenderGiven; otherwise the sender is the submitting user.
	Sender      string
	SenderGiven bool
	FullName    string // -F: display name for a From field added here

	// Recipients are the explicit recipients; one Addr may hold several
	// comma-separated addresses (cron passes MAILTO as one argument).
	Recipients []queue.Recipient
	// FromHeaders (-t) adds the To, Cc and Bcc addresses, or Resent-To,
	// Resent-Cc and Resent-Bcc when the message has Resent- fields.
	FromHeaders bool
	Notify      string // -N, for the recipients taken from the header

	// DotIsData (-i, -oi, and SMTP, which has its own end marker): a line
	// holding only "." is data instead of the end of the input.
	DotIsData    bool
	Body8BitMIME bool   // -B8BITMIME or BODY=8BITMIME
	Ret          string // -R: FULL or HDRS
	EnvID        string // -V
}

// Site is what this host contributes to a submission.
type Site struct {
	Hostname       string // qualifies bare local names; the right side of Message-IDs
	MaxMessageSize int64  // bytes as stored; 0: no limit
	UID            int    // real uid of the submitter
	User           string // its login name
}

// Kind says why a submission was refused.
type Kind int

const (
	BadUsage   Kind = iota + 1 // the options are wrong: sysexits EX_USAGE
	BadMessage                 // the message cannot be accepted: EX_DATAERR
	TooBig                     // over max_message_size: EX_DATAERR, SMTP 552
)

// Error is a submission refused for what the caller gave. It is permanent:
// the same input will be refused again.
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// ReadError is a failure to read the message from the caller (a broken
// pipe, an aborted SMTP transaction): nothing is queued, the caller may try
// again.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "cannot read the message: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// Message is a message whose header section has been read and whose body
// is still waiting in the input, to be streamed once by WriteTo.
type Message struct {
	Envelope queue.Envelope
	// Warnings are things the caller should hear about but that did not
	// stop the submission (a header address that could not be parsed).
	Warnings []string

	in       *bufio.Reader
	dotEnds  bool
	fields   []field
	ended    bool // the input ended inside the header section
	fullName string
	site     Site
}

// Read reads the header section from r and builds the envelope. It fails
// with *Error when the options or the header cannot be accepted (no
// recipient, a line break in -f, -F or a recipient, an oversized header)
// and with *ReadError when r fails.
func Read(r io.Reader, opts *Options, site *Site) (*Message, error) {
	// What the options alone decide is checked before anything is read:
	// a caller without recipients hears it at once, as with Postfix.
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	sender := site.User + "@" + site.Hostname
	if opts.SenderGiven {
		var err error
		if sender, err = envelopeSender(opts.Sender); err != nil {
			return nil, err
		}
	}
	var explicit []queue.Recipient
	for _, rc := range opts.Recipients {
		addrs, err := Addresses(rc.Addr)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			explicit = append(explicit, queue.Recipient{Addr: a, Notify: rc.Notify, ORcpt: rc.ORcpt})
		}
	}
	if len(explicit) == 0 && !opts.FromHeaders {
		return nil, errNoRecipients
	}

	m := &Message{
		in:       bufio.NewReaderSize(r, 64<<10),
		dotEnds:  !opts.DotIsData,
		fullName: opts.FullName,
		site:     *site,
	}
	hr := headerReader{br: m.in, dotEnds: m.dotEnds}
	var err error
	if m.fields, m.ended, err = hr.read(); err != nil {
		return nil, err
	}
	// The envelope is written before the body streams by, so Body8Bit can
	// only reflect what is known now: -B8BITMIME, the header and the body
	// bytes already read. WriteTo sets it again once everything is seen.
	eightBit := opts.Body8BitMIME || !isASCII(buffered(m.in))
	for i := range m.fields {
		eightBit = eightBit || !isASCII(m.fields[i].raw)
	}
	m.Envelope = queue.Envelope{
		Sender:    sender,
		Ret:       opts.Ret,
		EnvID:     opts.EnvID,
		Body8Bit:  eightBit,
		SMTPUTF8:  !isASCII(sender),
		Submitted: time.Now(),
		UID:       site.UID,
		User:      site.User,
	}

	env := &m.Envelope
	seen := map[string]bool{}
	add := func(rc queue.Recipient) {
		key := strings.ToLower(rc.Addr)
		if seen[key] {
			return
		}
		seen[key] = true
		env.Recipients = append(env.Recipients, rc)
		env.SMTPUTF8 = env.SMTPUTF8 || !isASCII(rc.Addr)
	}
	if opts.FromHeaders {
		for _, f := range m.recipientFields() {
			addrs, bad := parseAddressList(f.value())
			for _, a := range addrs {
				add(queue.Recipient{Addr: a, Notify: opts.Notify})
			}
			for _, b := range bad {
				m.Warnings = append(m.Warnings, "ignoring "+f.name+" address "+quote(b)+": not an address")
			}
		}
	}
	for _, rc := range explicit {
		add(rc)
	}
	if len(env.Recipients) == 0 {
		return nil, errNoRecipients
	}
	return m, nil
}

var errNoRecipients = &Error{Kind: BadUsage, Msg: "no recipients: give addresses as arguments or use -t with To/Cc/Bcc"}

// checkOptions refuses line breaks where they would end up in a header or
// an SMTP command (header injection through -f, -F or a recipient).
func checkOptions(o *Options) error {
	check := func(what, v string) error {
		if strings.ContainsAny(v, "\r\n\x00") {
			return &Error{Kind: BadUsage, Msg: what + " contains a line break or NUL; refusing it (header injection?)"}
		}
		return nil
	}
	if err := check("the sender (-f)", o.Sender); err != nil {
		return err
	}
	if err := check("the full name (-F)", o.FullName); err != nil {
		return err
	}
	if err := check("the envelope ID (-V)", o.EnvID); err != nil {
		return err
	}
	for _, rc := range o.Recipients {
		if err := check("recipient "+quote(rc.Addr), rc.Addr); err != nil {
			return err
		}
	}
	return nil
}

// envelopeSender returns the address of -f: brackets removed, "<>" or
// nothing for the null sender.
func envelopeSender(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "<>" {
		return "", nil
	}
	addrs, bad := parseAddressList(s)
	if len(bad) > 0 || len(addrs) != 1 {
		return "", &Error{Kind: BadUsage, Msg: "sender (-f) " + quote(s) + " is not one address"}
	}
	return addrs[0], nil
}

// recipientFields returns the fields -t takes recipients from.
func (m *Message) recipientFields() []*field {
	names := []string{"To", "Cc", "Bcc"}
	for i := range m.fields {
		if len(m.fields[i].name) > 7 && strings.EqualFold(m.fields[i].name[:7], "Resent-") {
			names = []string{"Resent-To", "Resent-Cc", "Resent-Bcc"}
			break
		}
	}
	var out []*field
	for i := range m.fields {
		for _, n := range names {
			if m.fields[i].is(n) {
				out = append(out, &m.fields[i])
			}
		}
	}
	return out
}

// WriteTo writes the message as it is stored: the header section without
// Bcc and Resent-Bcc, missing Date, Message-ID and From added, a blank
// line, then the body streamed from the input. It can be called once. It
// fails with *Error (TooBig) past max_message_size, with *ReadError when
// the input fails, and with w's error as it is. It sets Envelope.Body8Bit
// when 8-bit bytes went through.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	bw, buffered := w.(*bufio.Writer)
	if !buffered {
		bw = bufio.NewWriterSize(w, 32<<10)
	}
	sw := &sizeWriter{w: bw, limit: m.site.MaxMessageSize}
	err := m.write(sw)
	if err == nil && !buffered {
		err = bw.Flush()
	}
	if sw.eightBit {
		m.Envelope.Body8Bit = true
	}
	return sw.n, err
}

func (m *Message) write(w io.Writer) error {
	has := map[string]bool{}
	for i := range m.fields {
		f := &m.fields[i]
		has[strings.ToLower(f.name)] = true
		if f.is("Bcc") || f.is("Resent-Bcc") {
			continue
		}
		if _, err := w.Write(f.raw); err != nil {
			return err
		}
	}
	var added []string
	if !has["date"] {
		added = append(added, "Date: "+time.Now().Format(time.RFC1123Z))
	}
	if !has["message-id"] {
		added = append(added, "Message-ID: "+m.messageID())
	}
	if !has["from"] {
		added = append(added, "From: "+formatAddress(m.fullName, m.fromAddress()))
	}
	for _, f := range added {
		if _, err := io.WriteString(w, f+"\n"); err != nil {
			return err
		}
	}
	if _, err := w.Write(newline); err != nil {
		return err
	}
	if m.ended {
		return nil
	}
	return copyBody(w, m.in, m.dotEnds)
}

// fromAddress is the address of an added From field: the envelope sender
// (the user for the null sender), a bare local name qualified.
func (m *Message) fromAddress() string {
	a := m.Envelope.Sender
	if a == "" {
		a = m.site.User
	}
	if !strings.Contains(a, "@") {
		a += "@" + m.site.Hostname
	}
	return a
}

// messageID returns a new <unique@hostname>: time plus 64 random bits.
func (m *Message) messageID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux ≥ 3.17
	return "<" + time.Now().UTC().Format("20060102150405") + "." + hex.EncodeToString(b[:]) + "@" + m.site.Hostname + ">"
}

// Enqueue queues the message in spool: it returns only once the entry is
// durable. On any error nothing is queued; the error is WriteTo's or the
// spool's (which wraps the system error: errors.Is(err, syscall.ENOSPC)).
func (m *Message) Enqueue(spool *queue.Spool) (string, error) {
	return spool.Enqueue(&m.Envelope, func(w io.Writer) error {
		_, err := m.WriteTo(w)
		return err
	})
}

// buffered returns what has been read from the input but not consumed.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// quote shows s in an error message: control characters escaped, long
// strings cut.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}
