package submission

import (
	"mime"
	"net/mail"
	"strings"
)

// Addresses returns the addresses of a recipient argument such as cron's
// MAILTO ("a@x, b@y", "root"), leniently; the error (*Error, BadUsage)
// names a piece that is not an address.
func Addresses(list string) ([]string, error) {
	addrs, bad := parseAddressList(list)
	if len(bad) > 0 {
		return nil, &Error{Kind: BadUsage, Msg: "recipient " + quote(bad[0]) + " is not an address"}
	}
	return addrs, nil
}

// parseAddressList returns the addresses of a list such as a To field or
// cron's MAILTO argument ("a@x,b@y"), leniently: RFC 5322 first, then
// piece by piece, so that a bare local name ("root", "root (Cron Daemon)")
// is an address too. "undisclosed-recipients:;" holds none. bad lists the
// pieces that hold no usable address.
func parseAddressList(s string) (addrs, bad []string) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if list, err := mail.ParseAddressList(s); err == nil {
		for _, a := range list {
			addrs = append(addrs, a.Address)
		}
		return addrs, nil
	}
	for _, piece := range splitList(s) {
		if a, err := mail.ParseAddress(piece); err == nil {
			addrs = append(addrs, a.Address)
			continue
		}
		switch a := looseAddress(piece); {
		case a == "":
		case strings.ContainsAny(a, " \t\"(),;<>\\") || hasControl(a):
			bad = append(bad, strings.TrimSpace(piece))
		default:
			addrs = append(addrs, a)
		}
	}
	return addrs, bad
}

// splitList splits at the commas that are outside quotes, angle brackets
// and comments.
func splitList(s string) []string {
	var out []string
	depth, angle, quoted, start := 0, false, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"' && depth == 0:
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// looseAddress digs the address out of one list piece that RFC 5322 does
// not accept: the part in angle brackets, else the text without comments,
// group name and quotes.
func looseAddress(piece string) string {
	s := stripComments(piece)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
		if strings.HasPrefix(s, "@") { // obsolete source route "@a,@b:user@c"
			if j := strings.IndexByte(s, ':'); j >= 0 {
				s = s[j+1:]
			}
		}
		return strings.TrimSpace(s)
	}
	if i := strings.IndexByte(s, ':'); i >= 0 && !strings.Contains(s[:i], "@") {
		s = s[i+1:] // "group: member" or "group:;"
	}
	s = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(s), ";"))
	return s
}

func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			b.WriteByte(c)
			i++
			c = s[i]
		case c == '"' && depth == 0:
			quoted = !quoted
		case !quoted && c == '(':
			depth++
			continue
		case !quoted && c == ')' && depth > 0:
			depth--
			continue
		}
		if depth == 0 {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func isASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// formatAddress writes name and address as a From field body: the name
// bare when it is made of atoms (CronDaemon <root@host>), quoted when it
// holds specials, RFC 2047 encoded when it is not ASCII.
func formatAddress(name, addr string) string {
	if name == "" {
		return addr
	}
	switch {
	case !isASCII(name):
		name = mime.QEncoding.Encode("utf-8", name)
	case !isPhrase(name):
		name = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
	}
	return name + " <" + addr + ">"
}

// isPhrase reports whether s is atoms separated by spaces (RFC 5322 atext).
func isPhrase(s string) bool {
	if strings.TrimSpace(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
