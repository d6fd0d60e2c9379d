package rewrite

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of the walk. Memory stays bounded whatever the input: a header
// section is held up to maxHeader octets; beyond maxDepth nested entities or
// maxParts parts, content is no longer walked but still kept within the line
// limit.
const (
	maxHeader = 1 << 20
	maxDepth  = 32
	maxParts  = 1000
)

// scanner reads the queued message once, line by line, walking the MIME tree
// on raw bytes (RFC 2046 §5.1), and builds the plan of the copy.
type scanner struct {
	br      *bufio.Reader
	pos     int64 // offset of the next octet br returns
	cur     line
	peeked  bool
	err     error
	headBuf []byte

	bounds []string // boundaries of the enclosing multiparts, outermost first
	crlf   bool     // the pending delimiter takes the LF that ends the content before it
	parts  int
	segs   []segment

	// For the plain copy, when no part needs more than CRLF line ends:
	changed bool  // some part needs re-encoding, folding or repair
	eight   bool  // an octet ≥ 0x80 was seen (since the body began)
	lfs     int64 // LFs seen (since the body began)
	lastLF  bool  // the last line read ended with LF
}

type line struct {
	start int64
	n     int64  // length without the LF
	lf    bool   // ends with LF (only the last line of the message may not)
	head  []byte // the line's octets when full; valid until the next read
	full  bool

	long, bad, eight, notUTF8 bool
	utf                       utf8Check
}

func newScanner(src io.ReaderAt, size int64) *scanner {
	return &scanner{br: bufio.NewReaderSize(io.NewSectionReader(src, 0, size), 16<<10)}
}

// offset is where the next line begins.
func (s *scanner) offset() int64 {
	if s.peeked {
		return s.cur.start
	}
	return s.pos
}

func (s *scanner) unread() { s.peeked = true }

// next returns the next line. Its octets are kept (l.full) when the line fits
// in one buffer, or when keep is set or it starts with "--" (a possible
// delimiter) and it is at most maxHeader long.
func (s *scanner) next(keep bool) (*line, bool) {
	if s.peeked {
		s.peeked = false
		return &s.cur, true
	}
	l := &s.cur
	*l = line{start: s.pos, full: true, utf: utf8Check{carry: l.utf.carry[:0]}}
	for i := 0; ; i++ {
		chunk, err := s.br.ReadSlice('\n')
		s.pos += int64(len(chunk))
		content := chunk
		if n := len(content); n > 0 && content[n-1] == '\n' {
			content, l.lf = content[:n-1], true
		}
		l.inspect(content)
		l.n += int64(len(content))
		switch {
		case i == 0 && err != bufio.ErrBufferFull:
			l.head = content
		case keep || (i == 0 && bytes.HasPrefix(content, []byte("--"))):
			keep = true
			if i == 0 {
				s.headBuf = s.headBuf[:0]
			}
			if len(s.headBuf)+len(content) <= maxHeader {
				s.headBuf = append(s.headBuf, content...)
			} else {
				l.full = false
			}
			l.head = s.headBuf
		default:
			l.full = false
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			s.err = err
			return nil, false
		}
		if l.n == 0 && !l.lf {
			return nil, false // the end
		}
		break
	}
	if !l.full {
		l.head = nil
	}
	l.long = l.n > maxLine
	l.notUTF8 = l.utf.end()
	if l.eight {
		s.eight = true
	}
	if l.lf {
		s.lfs++
	}
	s.lastLF = l.lf
	return l, true
}

func (l *line) inspect(b []byte) {
	if !l.bad && (bytes.IndexByte(b, '\r') >= 0 || bytes.IndexByte(b, 0) >= 0) {
		l.bad = true
	}
	eight := has8bit(b)
	l.eight = l.eight || eight
	if eight || len(l.utf.carry) > 0 {
		l.utf.write(b)
	}
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// utf8Check validates UTF-8 across the chunks of one line.
type utf8Check struct {
	carry   []byte
	invalid bool
}

func (u *utf8Check) write(b []byte) {
	if u.invalid {
		return
	}
	if len(u.carry) > 0 {
		b = append(u.carry, b...)
		u.carry = u.carry[:0]
	}
	cut := len(b)
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(b[:cut]) {
		u.invalid = true
		return
	}
	u.carry = append(u.carry, b[cut:]...)
}

// end reports whether the line was not valid UTF-8.
func (u *utf8Check) end() bool { return u.invalid || len(u.carry) > 0 }

// delimiter reports which enclosing multipart l is a delimiter of (the
// innermost; -1 if none) and whether it closes it. Transport padding (white
// space) after the boundary is allowed.
func (s *scanner) delimiter(l *line) (level int, closing bool) {
	if len(s.bounds) == 0 || !l.full || !bytes.HasPrefix(l.head, []byte("--")) {
		return -1, false
	}
	for i := len(s.bounds) - 1; i >= 0; i-- {
		rest, ok := bytes.CutPrefix(l.head[2:], []byte(s.bounds[i]))
		if !ok {
			continue
		}
		rest, closing = bytes.CutPrefix(rest, []byte("--"))
		if len(bytes.Trim(rest, " \t\r")) == 0 {
			return i, closing
		}
	}
	return -1, false
}

// region is a span of content lines and what they hold.
type region struct {
	start, end              int64
	long, bad, eight, notU8 bool
}

// content reads lines up to the next delimiter of an enclosing multipart
// (left unread) or the end. The LF that ends the line before a delimiter
// belongs to the delimiter (RFC 2046 §5.1.1), so it is not in the span.
func (s *scanner) content() region {
	r := region{start: s.offset()}
	for {
		l, ok := s.next(false)
		if !ok {
			r.end, s.crlf = s.pos, false
			return r
		}
		if lv, _ := s.delimiter(l); lv >= 0 {
			s.unread()
			r.end, s.crlf = r.start, l.start > r.start
			if s.crlf {
				r.end = l.start - 1
			}
			return r
		}
		r.long = r.long || l.long
		r.bad = r.bad || l.bad
		r.eight = r.eight || l.eight
		r.notU8 = r.notU8 || l.notUTF8
	}
}

// header reads a header section: field and continuation lines up to the
// blank line, which it consumes. A line that is neither (a body without the
// blank line), a delimiter, the end, or the maxHeader limit ends it too, and
// is left for the body. clean is false when a line needs folding or repair.
func (s *scanner) header() (raw []byte, start int64, clean bool) {
	start, clean = s.offset(), true
	for {
		l, ok := s.next(true)
		if !ok {
			return raw, start, clean
		}
		if l.lf && (l.n == 0 || (l.n == 1 && l.head[0] == '\r')) {
			clean = clean && l.n == 0
			return raw, start, clean
		}
		if lv, _ := s.delimiter(l); lv >= 0 || !l.full || len(raw)+len(l.head)+1 > maxHeader {
			s.unread()
			s.crlf = false
			return raw, start, clean
		}
		if isWSP(l.head[0]) && len(raw) > 0 {
			// a continuation line
		} else if _, ok := fieldName(l.head); !ok {
			s.unread()
			return raw, start, clean
		}
		raw = append(append(raw, l.head...), '\n')
		clean = clean && !l.long && !l.bad
	}
}

func (s *scanner) add(seg segment) int {
	s.segs = append(s.segs, seg)
	return len(s.segs) - 1
}

// top reads the message's own header. A leading mbox "From " line is an
// envelope line, not part of the message, and is dropped.
func (s *scanner) top() []field {
	if l, ok := s.next(true); ok {
		if _, field := fieldName(l.head); field || !l.full || !bytes.HasPrefix(l.head, []byte("From ")) {
			s.unread()
		}
	}
	raw, start, _ := s.header()
	s.add(segment{kind: header, start: start, end: s.offset(), mimeVersion: true})
	// From here on count for the body only; the unread line is the body's first.
	s.eight, s.lfs, s.lastLF = false, 0, false
	if s.peeked {
		s.eight, s.lastLF = s.cur.eight, s.cur.lf
		if s.cur.lf {
			s.lfs = 1
		}
	}
	return parseFields(raw)
}

func identity(cte string) bool { return cte != "base64" && cte != "quoted-printable" }

// body walks the body of an entity whose header is segment hdr.
func (s *scanner) body(m mimeInfo, hdr, depth int) {
	composite := strings.HasPrefix(m.mediaType, "multipart/") ||
		m.mediaType == "message/rfc822" || m.mediaType == "message/global"
	switch {
	case !composite || !identity(m.cte) || depth >= maxDepth:
		s.leaf(m, hdr, composite)
	case strings.HasPrefix(m.mediaType, "multipart/"):
		if m.boundary == "" {
			s.leaf(m, hdr, true)
			return
		}
		s.multipart(m, depth)
	default:
		raw, start, clean := s.header()
		s.changed = s.changed || !clean
		h := s.add(segment{kind: header, start: start, end: s.offset(), mimeVersion: true})
		s.body(mimeInfoOf(parseFields(raw)), h, depth+1)
	}
}

func (s *scanner) multipart(m mimeInfo, depth int) {
	level := len(s.bounds)
	s.bounds = append(s.bounds, m.boundary)
	defer func() { s.bounds = s.bounds[:level] }()
	s.other(s.content()) // the preamble
	for {
		l, ok := s.next(false)
		if !ok {
			return
		}
		lv, closing := s.delimiter(l)
		if lv != level {
			s.unread() // an enclosing multipart's delimiter: this one was not closed
			return
		}
		lit := "--" + m.boundary
		if s.crlf {
			lit = "\r\n" + lit
		}
		if closing {
			lit += "--"
		}
		if l.lf {
			lit += "\r\n"
		}
		s.add(segment{kind: literal, lit: []byte(lit)})
		s.changed = s.changed || l.long || l.bad
		if s.parts++; closing || s.parts > maxParts {
			// The epilogue, or past the limit the rest of this multipart, as it is.
			s.bounds = s.bounds[:level]
			s.other(s.content())
			return
		}
		raw, start, clean := s.header()
		s.changed = s.changed || !clean
		pm := mimeInfoOf(parseFields(raw))
		if pm.mediaType == "" && m.mediaType == "multipart/digest" {
			pm.mediaType = "message/rfc822" // RFC 2046 §5.1.5
		}
		h := s.add(segment{kind: header, start: start, end: s.offset()})
		s.body(pm, h, depth+1)
	}
}

// other adds content that is no part's body (preamble, epilogue, what is past
// the limits): copied, with lines over the limit broken.
func (s *scanner) other(r region) {
	if r.end > r.start {
		s.add(segment{kind: text, start: r.start, end: r.end})
	}
	s.changed = s.changed || r.long || r.bad
}

// leaf adds the body of a discrete part. A part with over-long lines, a lone
// CR or NUL, or "binary" content is re-encoded: quoted-printable for text,
// base64 for the rest. Parts already encoded are only re-wrapped.
func (s *scanner) leaf(m mimeInfo, hdr int, composite bool) {
	r := s.content()
	k := text
	switch m.cte {
	case "base64":
		if r.long || r.bad {
			k = rewrap
		}
	case "quoted-printable":
		if r.long || r.bad {
			k = qpsoft
		}
	default:
		if composite || !(r.long || r.bad || m.cte == "binary") {
			break
		}
		h := &s.segs[hdr]
		mt := m.mediaType
		if mt == "" || strings.HasPrefix(mt, "text/") || strings.HasPrefix(mt, "message/") {
			k, h.cte = qp, "quoted-printable"
			if mt == "" && !r.notU8 {
				h.ct = "text/plain; charset=UTF-8"
			}
		} else {
			k, h.cte = b64, "base64"
		}
	}
	s.changed = s.changed || k != text || r.long || r.bad
	if r.end > r.start {
		s.add(segment{kind: k, start: r.start, end: r.end})
	}
}
