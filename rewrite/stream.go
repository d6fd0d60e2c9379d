package rewrite

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
)

// A plan describes the copy as segments over the queued message: literal
// bytes, spans copied with CRLF line ends, spans re-encoded while streaming,
// and part headers re-read and rewritten. Open replays it; nothing but the
// top-level header is held in memory.
type segment struct {
	kind       kind
	lit        []byte // literal: the bytes, CRLF line ends
	start, end int64  // the source span of the other kinds

	// header: the Content-Transfer-Encoding to set ("" = none), a
	// Content-Type to add when missing, and whether to add MIME-Version.
	cte, ct     string
	mimeVersion bool
}

type kind int

const (
	literal kind = iota
	text         // LF → CRLF; lines over 998 octets broken, lone CR and NUL dropped
	qp           // quoted-printable encoding of the span
	b64          // base64 encoding of the span
	rewrap       // base64 content: lines broken at 76 octets
	qpsoft       // quoted-printable content: soft line breaks added to over-long lines
	header       // a part header: re-read, Content-Transfer-Encoding set, folded
)

// encoder transforms a span while it streams through; close ends the span.
type encoder interface {
	write(out *bytes.Buffer, p []byte)
	close(out *bytes.Buffer)
}

func newEncoder(k kind) encoder {
	switch k {
	case qp:
		return &qpEncoder{}
	case b64:
		return &b64Encoder{}
	case rewrap:
		return &wrapper{width: 76}
	case qpsoft:
		return &qpSoft{}
	}
	return &wrapper{width: maxLine}
}

// reader replays a plan. It pulls the source in chunks, so the memory it holds
// is a chunk and its encoding, never the body.
type reader struct {
	src   io.ReaderAt
	segs  []segment
	i     int
	off   int64
	enc   encoder
	out   bytes.Buffer
	buf   []byte
	last  byte // the last octet produced, to end the copy with CRLF
	done  bool
	total int64
}

const chunk = 32 << 10

func (r *reader) Read(p []byte) (int, error) {
	for r.out.Len() == 0 {
		if r.done {
			return 0, io.EOF
		}
		if err := r.step(); err != nil {
			return 0, err
		}
		if n := r.out.Len(); n > 0 {
			r.last = r.out.Bytes()[n-1]
		}
	}
	n, _ := r.out.Read(p)
	r.total += int64(n)
	return n, nil
}

func (r *reader) Close() error { return nil }

func (r *reader) step() error {
	if r.i == len(r.segs) {
		r.done = true
		if r.total > 0 && r.last != '\n' {
			r.out.WriteString("\r\n") // SMTP DATA ends with a line break
		}
		return nil
	}
	s := &r.segs[r.i]
	switch s.kind {
	case literal:
		r.out.Write(s.lit)
		r.i++
		return nil
	case header:
		b := make([]byte, s.end-s.start)
		if err := r.readAt(b, s.start); err != nil {
			return err
		}
		writeFields(&r.out, setMIME(parseFields(b), s.cte, s.ct, s.mimeVersion))
		r.out.WriteString("\r\n")
		r.i++
		return nil
	}
	if r.enc == nil {
		r.enc, r.off = newEncoder(s.kind), s.start
	}
	if n := min(s.end-r.off, chunk); n > 0 {
		if int64(len(r.buf)) < n {
			r.buf = make([]byte, n) // a small message needs no 32 KB buffer
		}
		b := r.buf[:n]
		if err := r.readAt(b, r.off); err != nil {
			return err
		}
		r.off += n
		r.enc.write(&r.out, b)
	}
	if r.off == s.end {
		r.enc.close(&r.out)
		r.enc = nil
		r.i++
	}
	return nil
}

func (r *reader) readAt(b []byte, off int64) error {
	n, err := r.src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading the queued message at offset %d: %w", off, err)
}

// wrapper writes LF as CRLF and breaks lines longer than width. It is the
// plain copy too: on clean text it changes nothing but the line ends. A line
// it breaks never starts with "-", so it cannot become a MIME boundary.
type wrapper struct {
	width int
	col   int
}

func (w *wrapper) write(out *bytes.Buffer, p []byte) {
	for len(p) > 0 {
		n := bytes.IndexByte(p, '\n')
		line := p
		if n >= 0 {
			line = p[:n]
		}
		for len(line) > 0 {
			if w.col >= w.width {
				out.WriteString("\r\n")
				w.col = 0
				if line[0] == '-' {
					out.WriteByte(' ')
					w.col++
				}
			}
			k := min(len(line), w.width-w.col)
			piece := line[:k]
			line = line[k:]
			if bytes.IndexByte(piece, '\r') < 0 && bytes.IndexByte(piece, 0) < 0 {
				out.Write(piece)
				w.col += k
				continue
			}
			for _, c := range piece {
				if c != '\r' && c != 0 {
					out.WriteByte(c)
					w.col++
				}
			}
		}
		if n < 0 {
			return
		}
		out.WriteString("\r\n")
		w.col = 0
		p = p[n+1:]
	}
}

func (w *wrapper) close(*bytes.Buffer) {}

// qpEncoder is quoted-printable for text (RFC 2045 §6.7): LF is a hard line
// break, lines are at most 76 octets, white space before a line break is
// encoded, and "-" starting a soft-broken line is encoded so that the
// encoding can never produce a MIME boundary.
type qpEncoder struct {
	col     int
	pending byte // a space or tab that is literal unless a line break follows
	soft    bool // the current line began with a soft break
}

const hexDigits = "0123456789ABCDEF"

func (e *qpEncoder) emit(out *bytes.Buffer, c byte, encode bool) {
	n := 1
	if encode {
		n = 3
	}
	if e.col+n > 75 {
		out.WriteString("=\r\n")
		e.col, e.soft = 0, true
	}
	if e.col == 0 && e.soft && c == '-' && !encode {
		encode, n = true, 3
	}
	if encode {
		out.WriteByte('=')
		out.WriteByte(hexDigits[c>>4])
		out.WriteByte(hexDigits[c&15])
	} else {
		out.WriteByte(c)
	}
	e.col += n
}

func (e *qpEncoder) write(out *bytes.Buffer, p []byte) {
	for len(p) > 0 {
		// Fast path: a run of octets that stand for themselves, as much as fits.
		if n := literalRun(p); n > 0 && e.pending == 0 && !(e.col == 0 && e.soft && p[0] == '-') {
			if e.col >= 75 {
				out.WriteString("=\r\n")
				e.col, e.soft = 0, true
				continue
			}
			k := min(n, 75-e.col)
			out.Write(p[:k])
			e.col += k
			p = p[k:]
			continue
		}
		c := p[0]
		p = p[1:]
		if c == '\n' {
			if e.pending != 0 {
				e.emit(out, e.pending, true)
				e.pending = 0
			}
			out.WriteString("\r\n")
			e.col, e.soft = 0, false
			continue
		}
		if e.pending != 0 {
			e.emit(out, e.pending, false)
			e.pending = 0
		}
		switch {
		case c == ' ' || c == '\t':
			e.pending = c
		case c >= 33 && c <= 126 && c != '=':
			e.emit(out, c, false)
		default:
			e.emit(out, c, true)
		}
	}
}

func literalRun(p []byte) int {
	for i, c := range p {
		if c < 33 || c > 126 || c == '=' {
			return i
		}
	}
	return len(p)
}

func (e *qpEncoder) close(out *bytes.Buffer) {
	if e.pending != 0 {
		e.emit(out, e.pending, true)
		e.pending = 0
	}
}

// b64Encoder writes base64 in lines of 76 octets, CRLF between them.
type b64Encoder struct {
	buf   [57]byte
	n     int
	lines int
}

func (e *b64Encoder) write(out *bytes.Buffer, p []byte) {
	for len(p) > 0 {
		k := copy(e.buf[e.n:], p)
		e.n += k
		p = p[k:]
		if e.n == len(e.buf) {
			e.flush(out)
		}
	}
}

func (e *b64Encoder) flush(out *bytes.Buffer) {
	if e.n == 0 {
		return
	}
	if e.lines > 0 {
		out.WriteString("\r\n")
	}
	var line [76]byte
	base64.StdEncoding.Encode(line[:], e.buf[:e.n])
	out.Write(line[:base64.StdEncoding.EncodedLen(e.n)])
	e.n = 0
	e.lines++
}

func (e *b64Encoder) close(out *bytes.Buffer) { e.flush(out) }

// qpSoft repairs quoted-printable content with over-long lines by adding soft
// line breaks ("=" CRLF), never inside an "=XX" escape; the decoded octets
// stay the same. A lone CR or NUL (invalid there) is escaped.
type qpSoft struct {
	col int
	esc int // octets of an "=XX" escape still to come
}

func (e *qpSoft) write(out *bytes.Buffer, p []byte) {
	for _, c := range p {
		switch c {
		case '\n':
			out.WriteString("\r\n")
			e.col, e.esc = 0, 0
			continue
		case '\r', 0:
			e.breakIf(out, 3)
			out.WriteByte('=')
			out.WriteByte(hexDigits[c>>4])
			out.WriteByte(hexDigits[c&15])
			e.col += 3
			e.esc = 0
			continue
		}
		need := 1
		if c == '=' {
			need = 3
		}
		if e.esc == 0 && e.breakIf(out, need) && c == '-' {
			out.WriteString("=2D")
			e.col += 3
			continue
		}
		out.WriteByte(c)
		e.col++
		switch {
		case c == '=':
			e.esc = 2
		case e.esc > 0:
			e.esc--
		}
	}
}

// breakIf adds a soft line break when need more octets would not fit before
// the "=" of a soft break, and reports whether it did.
func (e *qpSoft) breakIf(out *bytes.Buffer, need int) bool {
	if e.col+need <= maxLine-1 {
		return false
	}
	out.WriteString("=\r\n")
	e.col = 0
	return true
}

func (e *qpSoft) close(*bytes.Buffer) {}
