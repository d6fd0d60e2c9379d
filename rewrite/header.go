package rewrite

import (
	"bytes"
	"encoding/base64"
	"mime"
	"strings"
	"unicode/utf8"
)

// maxLine is the longest line SMTP allows, without its CRLF (RFC 5322 §2.1.1).
const maxLine = 998

// field is one header field as stored: its name and the raw bytes of all its
// lines (the first one starting with the name), LF-separated, without the final LF.
type field struct {
	name string
	raw  []byte
}

func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value returns the field body unfolded: the bytes after the colon with the
// line breaks of continuation lines removed (RFC 5322 §2.2.3).
func (f field) value() string {
	v := f.raw
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(strings.ReplaceAll(string(v), "\n", ""))
}

// newField builds a field from a name and a value that may already contain
// "\n " folds.
func newField(name, value string) field {
	return field{name: name, raw: []byte(name + ": " + value)}
}

// fieldName returns the name of the field that line starts ("Name:" or the
// obsolete "Name :"), or false when line does not start a field. A name too
// long for a line cannot be folded, so it does not make a field either.
func fieldName(line []byte) (string, bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	if i == 0 || i >= maxLine {
		return "", false
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j == len(line) || line[j] != ':' {
		return "", false
	}
	return string(line[:i]), true
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// parseFields splits a header section (LF line ends) into fields. The scanner
// has already decided which lines belong to the header, so every line is a
// field, a continuation or the blank line that ends the section.
func parseFields(b []byte) []field {
	var fields []field
	for len(b) > 0 {
		line := b
		next := len(b)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, next = b[:i], i+1
		}
		if len(line) == 0 {
			break
		}
		if isWSP(line[0]) && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.raw = append(append(f.raw, '\n'), line...)
		} else if name, ok := fieldName(line); ok {
			fields = append(fields, field{name: name, raw: append([]byte(nil), line...)})
		}
		b = b[next:]
	}
	return fields
}

// unstructured fields may carry RFC 2047 encoded words anywhere in their body,
// so an over-long word in them can be encoded instead of split.
var unstructured = map[string]bool{
	"subject": true, "comments": true, "content-description": true, "thread-topic": true,
}

// writeFields writes fields with CRLF line ends, every line at most maxLine
// octets. Lines that fit are written as they are, except that a lone CR or NUL
// (never valid in a header) becomes a space.
func writeFields(dst *bytes.Buffer, fields []field) {
	for _, f := range fields {
		text := unstructured[strings.ToLower(f.name)]
		for i, line := range bytes.Split(f.raw, []byte("\n")) {
			if i > 0 && len(bytes.Trim(line, " \t")) == 0 {
				continue // a blank continuation adds nothing, and some readers take it for the end of the header
			}
			start := 0
			if i == 0 {
				start = bytes.IndexByte(line, ':') + 1
			}
			fold(dst, sanitize(line), start, text)
		}
	}
}

func sanitize(line []byte) []byte {
	if bytes.IndexByte(line, '\r') < 0 && bytes.IndexByte(line, 0) < 0 {
		return line
	}
	out := append([]byte(nil), line...)
	for i, c := range out {
		if c == '\r' || c == 0 {
			out[i] = ' '
		}
	}
	return out
}

// fold writes one physical header line whose field body begins at start (after
// the colon on a field's first line, 0 on a continuation line), breaking it
// into lines of at most maxLine octets: at white space; else, in unstructured
// fields, by turning over-long words into encoded words; else after a comma or
// semicolon or between ">" and "<", adding a space; else anywhere, adding a
// space (the only change of meaning, and only for a token longer than a line).
func fold(dst *bytes.Buffer, line []byte, start int, text bool) {
	encoded := false
	for len(line) > maxLine {
		if i := wspBreak(line, start); i > 0 {
			dst.Write(line[:i])
			dst.WriteString("\r\n")
			line, start = line[i:], 0
			if len(bytes.TrimLeft(line, " \t")) == 0 {
				return // only trailing white space was left
			}
			continue
		}
		if text && !encoded {
			line, encoded = encodeLongWords(line, start), true
			continue
		}
		i := punctBreak(line, start)
		if i <= 0 {
			i = maxLine
			for k := 0; k < 3 && i > start+1 && line[i]&0xc0 == 0x80; k++ {
				i-- // do not split a UTF-8 sequence
			}
		}
		dst.Write(line[:i])
		dst.WriteString("\r\n")
		line, start = append([]byte{' '}, line[i:]...), 0
	}
	dst.Write(line)
	dst.WriteString("\r\n")
}

// wspBreak returns the largest i ≤ maxLine at which line can be folded: white
// space, with something besides white space before it on a continuation line.
func wspBreak(line []byte, start int) int {
	lo := start
	if start == 0 {
		for lo < len(line) && isWSP(line[lo]) {
			lo++
		}
		lo++
	}
	for i := maxLine; i >= lo && i > 0; i-- {
		if isWSP(line[i]) {
			return i
		}
	}
	return -1
}

func punctBreak(line []byte, start int) int {
	for i := maxLine; i > start+1; i-- {
		if c := line[i-1]; c == ',' || c == ';' || (c == '>' && line[i] == '<') {
			return i
		}
	}
	return -1
}

// encodeLongWords replaces the words of line (after start) that are too long
// to fold by RFC 2047 encoded words, which decode back to the same octets:
// white space between adjacent encoded words is not part of the text (RFC 2047 §6.2).
func encodeLongWords(line []byte, start int) []byte {
	out := append([]byte(nil), line[:start]...)
	rest := line[start:]
	for len(rest) > 0 {
		n := 0
		for n < len(rest) && !isWSP(rest[n]) {
			n++
		}
		if n == 0 {
			out = append(out, rest[0])
			rest = rest[1:]
			continue
		}
		if n > 200 {
			if len(out) > 0 && !isWSP(out[len(out)-1]) {
				out = append(out, ' ')
			}
			out = append(out, strings.Join(encodeWords(rest[:n]), " ")...)
		} else {
			out = append(out, rest[:n]...)
		}
		rest = rest[n:]
	}
	return out
}

// encodeWords encodes b as RFC 2047 "B" encoded words of at most 75 octets:
// UTF-8 when b is valid UTF-8 (never splitting a character), else ISO-8859-1,
// in which every octet is a character.
func encodeWords(b []byte) []string {
	charset := "UTF-8"
	if !utf8.Valid(b) {
		charset = "ISO-8859-1"
	}
	limit := 45 // "=?UTF-8?B?" + 60 + "?=" = 72 octets
	if charset != "UTF-8" {
		limit = 42 // "=?ISO-8859-1?B?" + 56 + "?=" = 73 octets
	}
	var words []string
	for len(b) > 0 {
		n := min(limit, len(b))
		if charset == "UTF-8" {
			for n < len(b) && n > 0 && !utf8.RuneStart(b[n]) {
				n--
			}
			if n == 0 {
				n = min(limit, len(b))
			}
		}
		words = append(words, "=?"+charset+"?B?"+base64.StdEncoding.EncodeToString(b[:n])+"?=")
		b = b[n:]
	}
	return words
}

// mimeInfo is what the body walk needs from an entity's header.
type mimeInfo struct {
	mediaType string // lower case; "" when there is no Content-Type
	boundary  string
	cte       string // lower case; "" when there is no Content-Transfer-Encoding
}

func mimeInfoOf(fields []field) mimeInfo {
	var m mimeInfo
	for _, f := range fields {
		switch {
		case f.is("Content-Type") && m.mediaType == "":
			m.mediaType, m.boundary = parseContentType(f.value())
		case f.is("Content-Transfer-Encoding") && m.cte == "":
			m.cte = strings.ToLower(strings.TrimSpace(f.value()))
		}
	}
	return m
}

// parseContentType is lenient: a media type with broken parameters still has
// a type, and a boundary is found even when another parameter is malformed.
func parseContentType(v string) (mediaType, boundary string) {
	mt, params, err := mime.ParseMediaType(v)
	if mt == "" {
		mt, _, _ = strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	boundary = params["boundary"]
	if err != nil && boundary == "" {
		boundary = looseParam(v, "boundary")
	}
	if len(boundary) > 200 || strings.ContainsAny(boundary, "\r\n") {
		boundary = "" // RFC 2046 allows 70; a longer one is not a boundary we can trust
	}
	return mt, boundary
}

func looseParam(v, name string) string {
	key := name + "="
	for i := 0; i+len(key) <= len(v); i++ {
		if !strings.EqualFold(v[i:i+len(key)], key) {
			continue
		}
		s := v[i+len(key):]
		if strings.HasPrefix(s, `"`) {
			if j := strings.IndexByte(s[1:], '"'); j >= 0 {
				return s[1 : j+1]
			}
			return ""
		}
		if j := strings.IndexAny(s, "; \t"); j >= 0 {
			s = s[:j]
		}
		return s
	}
	return ""
}

// setMIME returns fields with the Content-Transfer-Encoding set to cte (in
// place of the first one, the others removed), a Content-Type ct added when
// there is none, and MIME-Version added when asked and missing.
func setMIME(fields []field, cte, ct string, mimeVersion bool) []field {
	if cte == "" {
		return fields
	}
	out := make([]field, 0, len(fields)+3)
	var haveCTE, haveCT, haveVersion bool
	for _, f := range fields {
		switch {
		case f.is("Content-Transfer-Encoding"):
			if haveCTE {
				continue
			}
			haveCTE = true
			f = newField(f.name, cte)
		case f.is("Content-Type"):
			haveCT = true
		case f.is("MIME-Version"):
			haveVersion = true
		}
		out = append(out, f)
	}
	if mimeVersion && !haveVersion {
		out = append(out, newField("MIME-Version", "1.0"))
	}
	if ct != "" && !haveCT {
		out = append(out, newField("Content-Type", ct))
	}
	if !haveCTE {
		out = append(out, newField("Content-Transfer-Encoding", cte))
	}
	return out
}
