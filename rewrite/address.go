package rewrite

import (
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"
)

// item is one entry of an address list as written: a mailbox, or the start
// ("name:") or end (";") of a group. The parser is lenient on purpose: sendmail
// callers write "root", "root (Cron Daemon)" and raw UTF-8 names, which
// net/mail rejects.
type item struct {
	raw        string // the mailbox as written (unfolded, trimmed), or the group name
	addr       string // the address, without angle brackets and comments
	at, end    int    // where addr sits in raw, to substitute it
	phrase     string // the display name as written, "" if none
	comment    string // the first comment, used as the name when there is no phrase
	groupStart bool
	groupEnd   bool
}

// lexer follows quoted strings and (nested) comments through a field
// body, so that a scanner sees only the characters that give it structure.
type lexer struct {
	depth  int // comment nesting
	quoted bool
}

// skip reports whether s[*i] is part of a quoted string or a comment (or
// opens one), stepping *i over a quoted pair.
func (l *lexer) skip(s string, i *int) bool {
	c := s[*i]
	switch {
	case l.quoted:
		if c == '\\' {
			*i++
		} else if c == '"' {
			l.quoted = false
		}
	case l.depth > 0:
		if c == '\\' {
			*i++
		} else if c == '(' {
			l.depth++
		} else if c == ')' {
			l.depth--
		}
	case c == '"':
		l.quoted = true
	case c == '(':
		l.depth = 1
	default:
		return false
	}
	return true
}

// parseList splits an address-list field body into items.
func parseList(v string) []item {
	var items []item
	var lx lexer
	angle, literal := false, false
	begin := 0
	flush := func(end int) {
		if s := strings.TrimSpace(v[begin:end]); s != "" {
			items = append(items, parseMailbox(s))
		}
		begin = end + 1
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if literal { // a domain literal holds neither quotes nor comments
			literal = c != ']'
			continue
		}
		if lx.skip(v, &i) {
			continue
		}
		switch {
		case c == '[':
			literal = true
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case angle:
		case c == ',':
			flush(i)
		case c == ':':
			items = append(items, item{raw: strings.TrimSpace(v[begin:i]), groupStart: true})
			begin = i + 1
		case c == ';':
			flush(i)
			items = append(items, item{groupEnd: true})
		}
	}
	flush(len(v))
	return items
}

// parseMailbox reads "phrase <addr>", "addr (comment)" or a bare "addr".
func parseMailbox(s string) item {
	it := item{raw: s}
	if lt, gt := angleAddr(s); lt >= 0 {
		inner := s[lt+1 : gt]
		it.at = lt + 1 + (len(inner) - len(strings.TrimLeft(inner, " \t")))
		it.end = gt - (len(inner) - len(strings.TrimRight(inner, " \t")))
		if it.end < it.at {
			it.end = it.at
		}
		it.addr = s[it.at:it.end]
		if r := strings.LastIndexByte(it.addr, ':'); strings.HasPrefix(it.addr, "@") && r > 0 {
			it.addr = it.addr[r+1:] // obsolete source route "@a,@b:user@c"
		}
		it.phrase = strings.TrimSpace(s[:lt])
		return it
	}
	// addr-spec with comments: the address is what lies outside them.
	it.at, it.end = -1, -1
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				depth++
			} else if c == ')' {
				if depth--; depth == 0 && it.comment == "" {
					it.comment = strings.TrimSpace(s[commentStart(s, i):i])
				}
			}
		case c == '(':
			depth = 1
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if it.at < 0 {
				it.at = i
			}
			i = min(j, len(s)-1)
			it.end = i + 1
		case !isWSP(c):
			if it.at < 0 {
				it.at = i
			}
			it.end = i + 1
		}
	}
	if it.at < 0 {
		it.at, it.end = 0, 0
	}
	it.addr = s[it.at:it.end]
	return it
}

// commentStart finds the "(" that opens the comment closed at s[end].
func commentStart(s string, end int) int {
	depth := 0
	for i := end; i >= 0; i-- {
		switch s[i] {
		case ')':
			depth++
		case '(':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return 0
}

// angleAddr finds the "<...>" of s outside quotes and comments.
func angleAddr(s string) (lt, gt int) {
	var lx lexer
	lt = -1
	for i := 0; i < len(s); i++ {
		if lx.skip(s, &i) {
			continue
		}
		switch c := s[i]; {
		case c == '<' && lt < 0:
			lt = i
		case c == '>' && lt >= 0:
			return lt, i
		}
	}
	return -1, -1
}

// formatList writes items back as an address-list field body, folded at
// about 78 columns between mailboxes (nameLen is the length of "Name: ").
func formatList(items []item, nameLen int) string {
	var b strings.Builder
	col := nameLen
	needComma := false
	for _, it := range items {
		var tok string
		switch {
		case it.groupStart:
			tok = it.raw + ":"
		case it.groupEnd:
			b.WriteString(";")
			col++
			needComma = true
			continue
		default:
			tok = it.raw
		}
		if needComma {
			b.WriteString(",")
			col++
		}
		if b.Len() > 0 {
			if col+1+len(tok) > 78 {
				b.WriteString("\n")
				col = 0
			}
			b.WriteString(" ")
			col++
		}
		b.WriteString(tok)
		col += len(tok)
		needComma = !it.groupStart
	}
	return b.String()
}

// displayName decodes a phrase (quoted strings, encoded words, raw 8-bit
// octets) or comment into plain text; "" when it cannot be decoded.
func displayName(phrase string) string {
	var b strings.Builder
	for i := 0; i < len(phrase); i++ {
		c := phrase[i]
		switch {
		case c == '"':
			continue
		case c == '\\' && i+1 < len(phrase):
			i++
			b.WriteByte(phrase[i])
		default:
			b.WriteByte(c)
		}
	}
	s := b.String()
	if !utf8.ValidString(s) {
		s = latin1(s)
	}
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		return ""
	}
	return strings.Join(strings.FieldsFunc(d, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
}

// latin1 reads octets that are not UTF-8 as ISO-8859-1, the usual legacy charset.
func latin1(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// phrase formats a display name: a quoted string when it is ASCII, else
// RFC 2047 "B" encoded words (safe in a phrase, unlike "Q" with its specials).
func phrase(name string) string {
	ascii := true
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		return strings.Join(encodeWords([]byte(name)), " ")
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
}
