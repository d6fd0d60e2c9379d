package transport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// graphPlan is what a first pass over the message learns before the upload:
// the Bcc header to add and the exact size of the copy sent, so that the size
// limit is checked before anything is sent and Content-Length is exact.
type graphPlan struct {
	bcc  []byte // "Bcc: ...\r\n" for envelope-only recipients, or nil
	size int64  // bytes of the copy sent: bcc + the message with CRLF line ends
}

// Headers beyond this are not searched for recipients (a prepared message's
// header is far smaller); the message is still sent whole.
const maxHeaderScan = 1 << 20

func planGraph(msg *Message) (*graphPlan, error) {
	rc, err := msg.Open()
	if err != nil {
		return nil, failure.Wrap(failure.Temporary, fmt.Errorf("open queued message: %w", err))
	}
	defer rc.Close()
	count := &crlfWriter{w: io.Discard}
	br := bufio.NewReaderSize(io.TeeReader(rc, count), 64<<10)
	present, err := headerRecipients(br)
	if err == nil {
		_, err = io.Copy(io.Discard, br)
	}
	if err != nil {
		return nil, failure.Wrap(failure.Temporary, bodyReadError{err})
	}
	var missing []string
	seen := map[string]bool{}
	for _, rc := range msg.Recipients {
		k := strings.ToLower(rc.Addr)
		if !present[k] && !seen[k] {
			seen[k] = true
			missing = append(missing, rc.Addr)
		}
	}
	p := &graphPlan{}
	if len(missing) > 0 {
		// One address per line keeps every line far below 998 octets.
		p.bcc = []byte("Bcc: " + strings.Join(missing, ",\r\n ") + "\r\n")
	}
	p.size = int64(len(p.bcc)) + count.n
	return p, nil
}

// stream writes the base64 of the copy sent to w.
func (p *graphPlan) stream(w io.Writer, msg *Message) error {
	rc, err := msg.Open()
	if err != nil {
		return bodyReadError{err}
	}
	defer rc.Close()
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := base64.NewEncoder(base64.StdEncoding, bw)
	if _, err := enc.Write(p.bcc); err != nil {
		return err
	}
	src := &readErrReader{r: rc}
	if _, err := io.Copy(&crlfWriter{w: enc}, src); err != nil {
		if src.err != nil {
			return bodyReadError{src.err}
		}
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// crlfWriter turns bare LF line ends into CRLF and counts what it writes.
type crlfWriter struct {
	w      io.Writer
	n      int64
	prevCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	start := 0 // p[start:] is not written yet
	for i := 0; i < len(p); {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		k := i + j
		if k == 0 && !c.prevCR || k > 0 && p[k-1] != '\r' {
			if err := c.put(p[start:k]); err != nil {
				return 0, err
			}
			if err := c.put([]byte("\r\n")); err != nil {
				return 0, err
			}
			start = k + 1
		}
		i = k + 1
	}
	c.prevCR = p[len(p)-1] == '\r'
	return len(p), c.put(p[start:])
}

func (c *crlfWriter) put(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

// headerRecipients reads the header (up to the blank line) and returns the
// lower-cased addresses of its To, Cc and Bcc fields.
func headerRecipients(br *bufio.Reader) (map[string]bool, error) {
	present := map[string]bool{}
	var name, value string
	flush := func() {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "to", "cc", "bcc":
			for _, a := range addresses(value) {
				present[strings.ToLower(a)] = true
			}
		}
		name, value = "", ""
	}
	for scanned := 0; scanned < maxHeaderScan; {
		line, err := br.ReadSlice('\n')
		scanned += len(line)
		if errors.Is(err, bufio.ErrBufferFull) {
			break // not a header line of a prepared message: stop looking
		}
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		text := strings.TrimRight(string(line), "\r\n")
		if text == "" {
			break
		}
		if text[0] == ' ' || text[0] == '\t' {
			value += " " + strings.TrimSpace(text)
			continue
		}
		flush()
		n, v, ok := strings.Cut(text, ":")
		if !ok {
			break
		}
		name, value = n, v
		if err == io.EOF {
			break
		}
	}
	flush()
	return present, nil
}

var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	// The display names do not matter here, only the addresses: accept any charset.
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// addresses returns the addresses of an address-list field; when it does not
// parse, every word that looks like an address.
func addresses(value string) []string {
	if list, err := addressParser.ParseList(value); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out
	}
	var out []string
	for _, w := range strings.FieldsFunc(value, func(r rune) bool {
		return strings.ContainsRune("<>,;:\"() \t", r)
	}) {
		if strings.Contains(w, "@") {
			out = append(out, w)
		}
	}
	return out
}
