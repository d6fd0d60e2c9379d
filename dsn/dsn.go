// Package dsn writes delivery status notifications (RFC 3464, in a
// multipart/report of RFC 6522) and recognises messages that are themselves
// bounces or automatic replies, so that a bounce is never bounced.
//
// Write produces the message with LF line ends, like every message in the
// queue: it is queued and then prepared for delivery like any other message
// (package rewrite turns the line ends into CRLF and re-encodes long lines of
// the returned original).
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Recipient is the fate of one recipient.
type Recipient struct {
	Addr        string    // the envelope recipient (Final-Recipient)
	ORcpt       string    // the original recipient (DSN ORCPT), "rfc822;addr" or a bare address; "" if none
	Action      string    // "failed" | "delayed" | "delivered" | "relayed"
	Status      string    // "5.1.10"; when empty, taken from the diagnostic's enhanced code, else 5.0.0, 4.0.0 or 2.0.0
	Diagnostic  string    // the server's full reply: "smtp; 550 5.1.10 RecipientNotFound ..." ("smtp; " is added to a bare reply)
	RemoteMTA   string    // "smtp.office365.com"; "" if no server was reached
	LastAttempt time.Time // zero: not reported
}

// Report is one notification, for the envelope sender of one queued message.
type Report struct {
	ReportingMTA string    // this host's name
	QueueID      string    // X-Queue-ID
	Arrival      time.Time // when the message was queued
	EnvID        string    // DSN ENVID (Original-Envelope-Id); "" if none
	Sender       string    // the envelope sender, who gets the report (To:)
	From         string    // the report's From address; "" = MAILER-DAEMON@ReportingMTA
	Recipients   []Recipient
	Reason       string    // an explanation for people: "lifetime of 5 days expired", a held account's error
	Original     io.Reader // the queued message; nil: not included
	Ret          string    // "FULL": return the whole message (message/rfc822), else its header (text/rfc822-headers)
	MaxOriginal  int64     // a larger message is returned as its header only; ≤ 0: DefaultMaxOriginal

	Date       time.Time // the report's Date; zero: now
	RetryUntil time.Time // for delayed recipients: when delivery stops being attempted (Will-Retry-Until)
}

// DefaultMaxOriginal is the largest original returned whole when Ret is FULL.
const DefaultMaxOriginal = 1 << 20

// maxHeader bounds the returned header section of the original.
const maxHeader = 1 << 20

// Write writes the report as a complete message: From, To, Subject, Date,
// Message-ID, Auto-Submitted: auto-replied and a multipart/report with a
// text for people, the message/delivery-status, and the original (whole or
// its header). It refuses a report without a sender (never notify the null
// sender) or without recipients. Errors reading Original or writing w are
// returned as they are.
func Write(w io.Writer, r Report) error {
	if r.Sender == "" {
		return errors.New("dsn: no sender to notify (the null sender never gets a report)")
	}
	if len(r.Recipients) == 0 {
		return errors.New("dsn: a report needs at least one recipient")
	}
	host := r.ReportingMTA
	if host == "" {
		host = "localhost"
	}
	from := r.From
	if from == "" {
		from = "MAILER-DAEMON@" + host
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	rcpts := make([]Recipient, len(r.Recipients))
	for i, rc := range r.Recipients {
		rcpts[i] = normalize(rc)
	}
	original, full, err := readOriginal(r)
	if err != nil {
		return fmt.Errorf("dsn: reading the original message: %w", err)
	}

	var token [16]byte
	_, _ = rand.Read(token[:])
	boundary := "=_exo-sendmail_" + hex.EncodeToString(token[:])
	eight := has8bit(original)

	var b bytes.Buffer
	field(&b, "From", "Mail Delivery System <"+from+">")
	field(&b, "To", r.Sender)
	field(&b, "Subject", subject(rcpts))
	field(&b, "Date", date.Format(time.RFC1123Z))
	field(&b, "Message-ID", "<"+date.UTC().Format("20060102150405")+"."+hex.EncodeToString(token[:6])+".dsn@"+host+">")
	field(&b, "Auto-Submitted", "auto-replied")
	field(&b, "MIME-Version", "1.0")
	field(&b, "Content-Type", "multipart/report; report-type=delivery-status;\n\tboundary=\""+boundary+"\"")
	if eight {
		field(&b, "Content-Transfer-Encoding", "8bit")
	}
	b.WriteString("\nThis is a MIME-encapsulated message.\n")

	b.WriteString("\n--" + boundary + "\n")
	writeText(&b, r, rcpts, host, full)

	b.WriteString("\n--" + boundary + "\n")
	field(&b, "Content-Description", "Delivery report")
	field(&b, "Content-Type", "message/delivery-status")
	b.WriteString("\n")
	writeStatus(&b, r, rcpts, host)

	if r.Original != nil {
		b.WriteString("\n--" + boundary + "\n")
		if full {
			field(&b, "Content-Description", "Undelivered message")
			field(&b, "Content-Type", "message/rfc822")
		} else {
			field(&b, "Content-Description", "Undelivered message headers")
			field(&b, "Content-Type", "text/rfc822-headers")
		}
		if eight {
			field(&b, "Content-Transfer-Encoding", "8bit")
		}
		b.WriteString("\n")
		b.Write(original)
		if len(original) > 0 && original[len(original)-1] != '\n' {
			b.WriteString("\n")
		}
	}
	b.WriteString("\n--" + boundary + "--\n")
	_, err = w.Write(b.Bytes())
	return err
}

func field(b *bytes.Buffer, name, value string) {
	b.WriteString(name + ": " + value + "\n")
}

func subject(rcpts []Recipient) string {
	delayed := false
	for _, rc := range rcpts {
		switch rc.Action {
		case "failed":
			return "Undelivered Mail Returned to Sender"
		case "delayed":
			delayed = true
		}
	}
	if delayed {
		return "Delayed Mail (still being retried)"
	}
	return "Successful Mail Delivery Report"
}

var (
	enhanced   = lazyRegexp(`(?:^|[\s;(\[])([245]\.\d{1,3}\.\d{1,3})(?:$|[\s;:,.)\]])`)
	statusCode = lazyRegexp(`^[245]\.\d{1,3}\.\d{1,3}$`)
	typed      = lazyRegexp(`^[A-Za-z][A-Za-z0-9-]*;`) // "smtp; …"
	smtpReply  = lazyRegexp(`^[2-5]\d\d\b`)
)

// normalize fills Action, Status and the diagnostic type.
func normalize(rc Recipient) Recipient {
	rc.Action = strings.ToLower(strings.TrimSpace(rc.Action))
	switch rc.Action {
	case "failed", "delayed", "delivered", "relayed", "expanded":
	default:
		rc.Action = "failed"
	}
	if !statusCode().MatchString(rc.Status) {
		rc.Status = ""
		if m := enhanced().FindStringSubmatch(rc.Diagnostic); m != nil {
			rc.Status = m[1]
		}
	}
	if rc.Status == "" {
		switch rc.Action {
		case "failed":
			rc.Status = "5.0.0"
		case "delayed":
			rc.Status = "4.0.0"
		default:
			rc.Status = "2.0.0"
		}
	}
	d := strings.Join(strings.Fields(rc.Diagnostic), " ") // multi-line replies on one line
	if d != "" && !typed().MatchString(d) {
		if smtpReply().MatchString(d) {
			d = "smtp; " + d
		} else {
			d = "X-exo-sendmail; " + d
		}
	}
	rc.Diagnostic = d
	return rc
}

// readOriginal returns what of the original is included, and whether it is
// the whole message.
func readOriginal(r Report) ([]byte, bool, error) {
	if r.Original == nil {
		return nil, false, nil
	}
	limit := r.MaxOriginal
	if limit <= 0 {
		limit = DefaultMaxOriginal
	}
	if strings.EqualFold(r.Ret, "FULL") {
		b, err := io.ReadAll(io.LimitReader(r.Original, limit+1))
		if err != nil {
			return nil, false, err
		}
		if int64(len(b)) <= limit {
			return b, true, nil
		}
		return headerSection(bufio.NewReader(bytes.NewReader(b)))
	}
	return headerSection(bufio.NewReader(io.LimitReader(r.Original, maxHeader+1)))
}

// headerSection reads the header fields of a message leniently: up to the
// blank line, or up to the first line that is no field (the body of a message
// without a blank line), at most maxHeader octets.
func headerSection(br *bufio.Reader) ([]byte, bool, error) {
	var h []byte
	for len(h) < maxHeader {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A field longer than the buffer: take it whole, within the limit.
			rest, err2 := br.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		text := bytes.TrimRight(line, "\r\n")
		if len(text) == 0 || !(isWSP(text[0]) && len(h) > 0 || isField(text)) || len(h)+len(line) > maxHeader {
			return h, false, ignoreEOF(err)
		}
		h = append(h, text...)
		h = append(h, '\n')
		if err != nil {
			return h, false, ignoreEOF(err)
		}
	}
	return h, false, nil
}

func ignoreEOF(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

func isField(line []byte) bool {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(line) && isWSP(line[i]) {
		i++
	}
	return i < len(line) && line[i] == ':'
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// writeText writes the part for people: UTF-8, quoted-printable when it is
// not ASCII.
func writeText(b *bytes.Buffer, r Report, rcpts []Recipient, host string, full bool) {
	var t strings.Builder
	fmt.Fprintf(&t, "This is the mail system (exo-sendmail) at %s.\n\n", host)
	switch subject(rcpts) {
	case "Undelivered Mail Returned to Sender":
		t.WriteString("Your message could not be delivered to one or more recipients.\n")
	case "Delayed Mail (still being retried)":
		t.WriteString("Your message has not been delivered yet to one or more recipients.\n")
		if !r.RetryUntil.IsZero() {
			fmt.Fprintf(&t, "Delivery will be attempted until %s; you do not need to send it again.\n",
				r.RetryUntil.Format(time.RFC1123Z))
		}
	default:
		t.WriteString("Your message was delivered to the recipients below.\n")
	}
	if r.Reason != "" {
		t.WriteString("\n" + wrap(r.Reason, "") + "\n")
	}
	if r.QueueID != "" || !r.Arrival.IsZero() {
		t.WriteString("\n")
		if r.QueueID != "" {
			fmt.Fprintf(&t, "Queue ID: %s\n", oneLine(r.QueueID))
		}
		if !r.Arrival.IsZero() {
			fmt.Fprintf(&t, "Queued:   %s\n", r.Arrival.Format(time.RFC1123Z))
		}
	}
	for _, rc := range rcpts {
		fmt.Fprintf(&t, "\n<%s>: %s\n", oneLine(rc.Addr), rc.Action)
		if rc.Diagnostic != "" {
			t.WriteString(wrap(rc.Diagnostic, "    ") + "\n")
		}
	}
	if r.Original != nil {
		if full {
			t.WriteString("\nYour message is attached.\n")
		} else {
			t.WriteString("\nThe header of your message is attached.\n")
		}
	}

	text := t.String()
	field(b, "Content-Description", "Notification")
	field(b, "Content-Type", "text/plain; charset=utf-8")
	if !has8bit([]byte(text)) {
		b.WriteString("\n" + text)
		return
	}
	field(b, "Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\n")
	var q bytes.Buffer
	qw := quotedprintable.NewWriter(&q)
	_, _ = qw.Write([]byte(text))
	_ = qw.Close()
	b.Write(bytes.ReplaceAll(q.Bytes(), []byte("\r\n"), []byte("\n")))
	if !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteString("\n")
	}
}

// wrap breaks text into lines of about 76 characters at spaces, each with indent.
func wrap(text, indent string) string {
	var lines []string
	for _, para := range strings.Split(text, "\n") {
		line := indent
		for _, w := range words(para) {
			if len(line) > len(indent) && len(line)+1+len(w) > 76 {
				lines = append(lines, line)
				line = indent
			}
			if len(line) > len(indent) {
				line += " "
			}
			line += w
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// words splits text at white space, and words too long for a line into
// pieces, so that no line of the report exceeds SMTP's limit.
func words(text string) []string {
	var out []string
	for _, w := range strings.Fields(text) {
		for len(w) > 900 {
			out, w = append(out, w[:900]), w[900:]
		}
		out = append(out, w)
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// writeStatus writes the message/delivery-status body: the per-message
// fields, then one block per recipient (RFC 3464 §2.2, §2.3), in 7-bit text.
func writeStatus(b *bytes.Buffer, r Report, rcpts []Recipient, host string) {
	statusField(b, "Reporting-MTA", "dns; "+host)
	if r.QueueID != "" {
		statusField(b, "X-Queue-ID", r.QueueID)
	}
	if r.EnvID != "" {
		statusField(b, "Original-Envelope-Id", r.EnvID)
	}
	if !r.Arrival.IsZero() {
		statusField(b, "Arrival-Date", r.Arrival.Format(time.RFC1123Z))
	}
	for _, rc := range rcpts {
		b.WriteString("\n")
		if rc.ORcpt != "" {
			t, a, ok := strings.Cut(rc.ORcpt, ";")
			if !ok {
				t, a = "rfc822", rc.ORcpt
			}
			statusField(b, "Original-Recipient", strings.TrimSpace(t)+"; "+strings.TrimSpace(a))
		}
		statusField(b, "Final-Recipient", "rfc822; "+rc.Addr)
		statusField(b, "Action", rc.Action)
		statusField(b, "Status", rc.Status)
		if rc.RemoteMTA != "" {
			statusField(b, "Remote-MTA", "dns; "+rc.RemoteMTA)
		}
		if rc.Diagnostic != "" {
			statusField(b, "Diagnostic-Code", rc.Diagnostic)
		}
		if !rc.LastAttempt.IsZero() {
			statusField(b, "Last-Attempt-Date", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if rc.Action == "delayed" && !r.RetryUntil.IsZero() {
			statusField(b, "Will-Retry-Until", r.RetryUntil.Format(time.RFC1123Z))
		}
	}
}

// statusField writes one delivery-status field: on one logical line, 7-bit (other
// characters as \x{HHHH}, the notation of RFC 6533 §3), folded at spaces.
func statusField(b *bytes.Buffer, name, value string) {
	var v strings.Builder
	for _, r := range oneLine(value) {
		switch {
		case r == '\\':
			v.WriteString(`\\`)
		case r < ' ' || r >= 0x7f:
			fmt.Fprintf(&v, `\x{%X}`, r)
		default:
			v.WriteRune(r)
		}
	}
	line := name + ":"
	col := len(line)
	for _, w := range words(v.String()) {
		if col > len(name)+1 && col+1+len(w) > 78 {
			b.WriteString(line + "\n")
			line, col = "", 0
		}
		line += " " + w
		col += 1 + len(w)
	}
	b.WriteString(line + "\n")
}

// IsBounce reports whether the message whose header r starts is itself a
// delivery or disposition report (multipart/report; report-type
// delivery-status, global-delivery-status, disposition-notification, …) or an
// automatic reply (Auto-Submitted: auto-replied). Such a message never gets a
// report of its own. "auto-generated" messages (cron output, monitoring) do:
// their failures must reach someone, and RFC 3834 §2 leaves reports out of
// its rules for automatic responses. It reads at most the header section.
func IsBounce(r io.Reader) bool {
	h, _, _ := headerSection(bufio.NewReader(io.LimitReader(r, maxHeader+1)))
	for _, f := range fields(h) {
		name, value, _ := strings.Cut(f, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		switch name {
		case "content-type":
			mt, params, err := mime.ParseMediaType(value)
			if err != nil && mt == "" {
				continue
			}
			switch strings.ToLower(params["report-type"]) {
			case "delivery-status", "global-delivery-status", "disposition-notification", "global-disposition-notification":
				if mt == "multipart/report" {
					return true
				}
			}
		case "auto-submitted":
			// The keyword, without parameters or comments (RFC 3834 §5).
			kind := strings.TrimLeft(value, " \t")
			if i := strings.IndexFunc(kind, func(r rune) bool { return r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) }); i >= 0 {
				kind = kind[:i]
			}
			if strings.EqualFold(kind, "auto-replied") {
				return true
			}
		}
	}
	return false
}

// fields unfolds a header section into "Name: value" strings.
func fields(h []byte) []string {
	var out []string
	for _, line := range strings.Split(string(h), "\n") {
		switch {
		case line == "":
		case isWSP(line[0]) && len(out) > 0:
			out[len(out)-1] += line
		default:
			out = append(out, line)
		}
	}
	return out
}

// lazyRegexp compiles a pattern on first use. sendmail links this
// package but never bounces, and its start-up time is measured in milliseconds.
func lazyRegexp(pattern string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(pattern) })
}
