// Package rewrite prepares the copy of a queued message that is delivered
// for an account: From made acceptable to Exchange's Send-As check, bare local
// names in To and Cc resolved, missing Date and Message-ID added, Bcc removed,
// and every line brought within SMTP's 998 octets by re-encoding, never by
// truncating. The queued bytes are never changed and the copy is never held in
// memory: it is streamed from the queued file each time it is opened.
package rewrite

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Policy says how to prepare a message for one account.
type Policy struct {
	Mailbox  string                     // the account's mailbox (XOAUTH2 user=, MAIL FROM)
	SendAs   []string                   // From addresses the mailbox may use, conf.MatchAddress patterns ("*@contoso.com")
	Hostname string                     // this host's name: qualifies bare names, ends a new Message-ID
	Resolve  func(addr string) []string // aliases: a bare local name → addresses (nil: names stay as written)

	// For the fields a caller forgot. Given the submission time and the queue
	// ID, a Message-ID added to the copy is the same on every attempt, so a
	// duplicate delivery can be recognised by the recipient.
	Date    time.Time // the Date of a message without one (zero: now)
	QueueID string    // part of the Message-ID of a message without one (empty: random)
}

// Copy is the prepared message.
type Copy struct {
	Size     int64                         // exact length of what Open returns
	Body8Bit bool                          // octets ≥ 0x80 remain (header or body): send with BODY=8BITMIME
	From     string                        // the From address after rewriting
	Open     func() (io.ReadCloser, error) // CRLF line ends, every line ≤ 998 octets; may be called repeatedly
}

// Prepare reads the queued message (src from offset 0 to size; header section,
// blank line, body, LF line ends) and returns the copy to send. It reads the
// message once; a message that needs re-encoding is read a second time to
// measure the copy. Errors reading src are returned as they are.
func Prepare(src io.ReaderAt, size int64, p Policy) (*Copy, error) {
	if p.Mailbox == "" {
		return nil, &failure.Error{Class: failure.Config,
			Err:    fmt.Errorf("rewrite: the account has no mailbox"),
			Remedy: "set mailbox in the account's section of sendmail.toml"}
	}
	s := newScanner(src, size)
	fields := s.top()
	bodyStart := s.offset()
	s.body(mimeInfoOf(fields), 0, 0)
	s.bounds = nil
	s.other(s.content()) // nothing is left unless the walk gave up early
	if s.err != nil {
		return nil, fmt.Errorf("reading the queued message: %w", s.err)
	}
	if s.pos != size {
		return nil, fmt.Errorf("reading the queued message: %d of %d octets: %w", s.pos, size, io.ErrUnexpectedEOF)
	}

	fields, from := p.header(fields)
	top := &s.segs[0]
	var h bytes.Buffer
	writeFields(&h, setMIME(fields, top.cte, top.ct, true))
	h.WriteString("\r\n")
	*top = segment{kind: literal, lit: h.Bytes()}

	c := &Copy{From: from}
	segs := s.segs
	if !s.changed {
		// Only the line ends change: the size is known without a second pass.
		segs = []segment{*top, {kind: text, start: bodyStart, end: size}}
		c.Size = int64(len(top.lit)) + size - bodyStart + s.lfs
		if size > bodyStart && !s.lastLF {
			c.Size += 2
		}
		c.Body8Bit = s.eight || has8bit(top.lit)
	} else {
		var m measure
		if _, err := io.Copy(&m, &reader{src: src, segs: segs}); err != nil {
			return nil, err
		}
		c.Size, c.Body8Bit = m.n, m.eight
	}
	c.Open = func() (io.ReadCloser, error) { return &reader{src: src, segs: segs}, nil }
	return c, nil
}

type measure struct {
	n     int64
	eight bool
}

func (m *measure) Write(p []byte) (int, error) {
	m.n += int64(len(p))
	m.eight = m.eight || has8bit(p)
	return len(p), nil
}

// header applies the policy to the message's own header fields and returns
// them with the From address that the copy carries.
func (p *Policy) header(in []field) ([]field, string) {
	has := func(name string) bool {
		for _, f := range in {
			if f.is(name) {
				return true
			}
		}
		return false
	}
	var out []field
	from := ""
	for _, f := range in {
		switch {
		case f.is("Bcc"), f.is("Resent-Bcc"), f.is("Return-Path"), f.is("Content-Length"):
			continue
		case f.is("From"):
			if from != "" {
				continue // one From only (RFC 5322 §3.6); Exchange judges the first
			}
			var fs []field
			fs, from = p.from(f, has("Reply-To"))
			out = append(out, fs...)
			continue
		case f.is("Sender"):
			if !p.allowed(firstAddr(f)) {
				continue // Exchange checks Sender against Send-As as well
			}
		case f.is("To"), f.is("Cc"):
			var keep bool
			if f, keep = p.resolve(f); !keep {
				continue
			}
		}
		out = append(out, f)
	}
	if from == "" {
		from = p.Mailbox
		out = append(out, newField("From", p.Mailbox))
	}
	date := p.Date
	if date.IsZero() {
		date = time.Now()
	}
	if !has("Date") {
		out = append(out, newField("Date", date.Format(time.RFC1123Z)))
	}
	if !has("Message-ID") {
		out = append(out, newField("Message-ID", p.messageID(date)))
	}
	return out, from
}

// from returns the From field for the copy, with X-Original-From and Reply-To
// when it had to be rewritten. A From the mailbox may send as is kept (bare
// names qualified with the host name); any other becomes the mailbox, with
// the original name and address in the display name:
//
//	From: "PHP Sender (php-sender@example.com)" <mailbox@contoso.com>
//	X-Original-From: PHP Sender <php-sender@example.com>
//	Reply-To: PHP Sender <php-sender@example.com>
//
// Reply-To is added only when the message has none and the original address
// can receive replies: it has a domain with a dot that is not this host's name
// nor a local one (root, root@web1, root@web1.contoso.com on web1 cannot).
func (p *Policy) from(f field, hasReplyTo bool) ([]field, string) {
	var boxes []item
	for _, it := range parseList(f.value()) {
		if !it.groupStart && !it.groupEnd {
			boxes = append(boxes, it)
		}
	}
	allowed := len(boxes) > 0
	for _, it := range boxes {
		allowed = allowed && p.allowed(it.addr)
	}
	if allowed {
		qualified := false
		for i, it := range boxes {
			if q := p.qualify(it.addr); q != it.addr {
				boxes[i].raw, qualified = it.raw[:it.at]+q+it.raw[it.end:], true
			}
		}
		if qualified {
			f = newField(f.name, formatList(boxes, len(f.name)+2))
		}
		return []field{f}, p.qualify(boxes[0].addr)
	}

	var labels []string
	var replyTo []item
	for _, it := range boxes {
		orig := p.qualify(it.addr)
		name := displayName(it.phrase)
		if name == "" {
			name = displayName(it.comment)
		}
		switch {
		case orig == "" && name == "":
			continue
		case name == "" || strings.EqualFold(name, orig):
			labels = append(labels, orig)
		case orig == "":
			labels = append(labels, name)
		default:
			labels = append(labels, name+" ("+orig+")")
		}
		if p.real(orig) {
			replyTo = append(replyTo, it)
		}
	}
	value := p.Mailbox
	if len(labels) > 0 {
		value = phrase(strings.Join(labels, ", ")) + " <" + p.Mailbox + ">"
	}
	orig := f.raw[bytes.IndexByte(f.raw, ':')+1:]
	out := []field{
		newField("From", value),
		{name: "X-Original-From", raw: append([]byte("X-Original-From:"), orig...)},
	}
	if !hasReplyTo && len(replyTo) > 0 {
		out = append(out, newField("Reply-To", formatList(replyTo, len("Reply-To: "))))
	}
	return out, p.Mailbox
}

// resolve replaces bare local names in a To or Cc field by their aliases,
// keeping display names and comments. keep is false when nothing is left.
func (p *Policy) resolve(f field) (field, bool) {
	if p.Resolve == nil {
		return f, true
	}
	items := parseList(f.value())
	var out []item
	changed := false
	for _, it := range items {
		if it.groupStart || it.groupEnd || !p.local(it.addr) {
			out = append(out, it)
			continue
		}
		changed = true
		for _, a := range p.Resolve(it.addr) {
			n := it
			n.raw = it.raw[:it.at] + a + it.raw[it.end:]
			out = append(out, n)
		}
	}
	if !changed {
		return f, true
	}
	if len(out) == 0 {
		return field{}, false
	}
	return newField(f.name, formatList(out, len(f.name)+2)), true
}

// local reports whether addr names a local user: no domain, or this host's name.
func (p *Policy) local(addr string) bool {
	if addr == "" || strings.ContainsAny(addr, " \t\"<>()") {
		return false
	}
	at := strings.LastIndexByte(addr, '@')
	return at < 0 || (p.Hostname != "" && strings.EqualFold(addr[at+1:], p.Hostname))
}

// qualify adds the host name to a bare name: root → root@web1.contoso.com.
func (p *Policy) qualify(addr string) string {
	if addr == "" || strings.Contains(addr, "@") || p.Hostname == "" {
		return addr
	}
	return addr + "@" + p.Hostname
}

// allowed reports whether the mailbox may send as addr: it is the mailbox, or
// it matches a send_as pattern (as written or qualified).
func (p *Policy) allowed(addr string) bool {
	if addr == "" {
		return false
	}
	q := p.qualify(addr)
	if strings.EqualFold(q, p.Mailbox) {
		return true
	}
	return conf.MatchAddress(p.SendAs, q) || conf.MatchAddress(p.SendAs, addr)
}

// real reports whether replies to addr could reach someone (see from).
func (p *Policy) real(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return false
	}
	d := strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
	if !strings.Contains(d, ".") || strings.EqualFold(d, p.Hostname) {
		return false
	}
	for _, local := range []string{".localhost", ".localdomain", ".local"} {
		if strings.HasSuffix(d, local) {
			return false
		}
	}
	return true
}

func (p *Policy) messageID(date time.Time) string {
	host := p.Hostname
	if host == "" {
		if at := strings.LastIndexByte(p.Mailbox, '@'); at >= 0 {
			host = p.Mailbox[at+1:]
		}
	}
	if host == "" {
		host = "localhost"
	}
	id := strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f && !strings.ContainsRune(`()<>[]:;@\,."`, r) {
			return r
		}
		return -1
	}, p.QueueID)
	if id == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	return "<" + date.UTC().Format("20060102150405") + "." + id + "@" + host + ">"
}

func firstAddr(f field) string {
	for _, it := range parseList(f.value()) {
		if !it.groupStart && !it.groupEnd {
			return it.addr
		}
	}
	return ""
}
