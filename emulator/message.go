package emulator

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// field is one header field as it appeared, continuation lines and line
// ending included, so a header can be rewritten without touching the rest.
type field struct {
	name string // empty for a line that is not a field (kept, never matched)
	raw  []byte
}

// splitHeader splits a message into its header fields and its body (what
// follows the blank line). It is lenient: a message without a blank line is
// all header, and a line that is not a field is kept as it is.
func splitHeader(data []byte) (fields []field, body []byte) {
	pos := 0
	for pos < len(data) {
		end := bytes.IndexByte(data[pos:], '\n') + 1
		if end == 0 {
			end = len(data) - pos
		}
		end += pos
		line := data[pos:end]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return fields, data[pos:]
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			last := &fields[len(fields)-1]
			last.raw = data[end-len(line)-len(last.raw) : end]
		} else {
			name := ""
			if i := bytes.IndexByte(line, ':'); i > 0 && !bytes.ContainsAny(line[:i], " \t") {
				name = string(line[:i])
			}
			fields = append(fields, field{name: name, raw: line})
		}
		pos = end
	}
	return fields, data[pos:]
}

// value returns the field's unfolded value.
func (f field) value() string {
	_, v, _ := strings.Cut(string(f.raw), ":")
	v = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(v)
	return strings.TrimSpace(v)
}

// values returns the unfolded values of every field called name.
func values(fields []field, name string) []string {
	var out []string
	for _, f := range fields {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value())
		}
	}
	return out
}

// addressParser reads address lists without failing on unknown charsets in
// display names: only the addresses matter here.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// addresses parses the address lists of the fields called name.
func addresses(fields []field, name string) ([]string, error) {
	var out []string
	for _, v := range values(fields, name) {
		if strings.TrimSpace(v) == "" {
			continue
		}
		list, err := addressParser.ParseList(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, v, err)
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

// messageID returns the message's Message-ID, or a new one as Exchange
// assigns when the message has none.
func messageID(fields []field) string {
	for _, v := range values(fields, "Message-ID") {
		if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") && !strings.ContainsAny(v, " \t") {
			return v
		}
	}
	return "<" + strings.ToUpper(strings.ReplaceAll(newGUID(), "-", "")) + "@emulator.prod.outlook.com>"
}

// deliver stores an accepted message: a copy in each recipient's Maildir
// first (so a disk error can still be refused), then in Messages().
func (e *Emulator) deliver(m Message) error {
	for _, rcpt := range m.Rcpts {
		if err := e.writeMaildir(rcpt, m.MailFrom, m.Data); err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.messages = append(e.messages, m)
	e.mu.Unlock()
	e.submitted(m.Via, m.Mailbox, len(m.Rcpts))
	return nil
}

var maildirSeq atomic.Int64

// writeMaildir delivers one copy the Maildir way: written in tmp/, renamed
// into new/, with Return-Path and Delivered-To before the message as received.
func (e *Emulator) writeMaildir(rcpt, from string, data []byte) error {
	dir := e.Maildir(rcpt)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	now := time.Now()
	name := fmt.Sprintf("%d.M%dP%dQ%d.emulator", now.Unix(), now.Nanosecond()/1000, os.Getpid(), maildirSeq.Add(1))
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", from, rcpt)
	buf.Write(data)
	tmp := filepath.Join(dir, "tmp", name)
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "new", name))
}

// maildirName turns an address into a safe directory name: lower case,
// anything but letters, digits and @._+=- replaced, never "." or "..".
func maildirName(addr string) string {
	addr = strings.ToLower(addr)
	var b strings.Builder
	for _, r := range addr {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', strings.ContainsRune("@._+=-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 200 {
			break
		}
	}
	name := b.String()
	if name == "" || name[0] == '.' {
		name = "_" + name
	}
	return name
}
