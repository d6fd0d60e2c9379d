package queue

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEnvelope appends env as encoding/json would write it, byte for
// byte (FuzzEnvelopeEncoding checks that), without reflection: the first
// json.Marshal of a type builds its encoder, about a tenth of a
// millisecond that every sendmail process would pay, for one small
// struct. Entries are read back with json.Unmarshal.
func appendEnvelope(b []byte, env *Envelope) ([]byte, error) {
	b = append(b, `{"sender":`...)
	b = appendJSONString(b, env.Sender)
	b = append(b, `,"recipients":`...)
	if env.Recipients == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, r := range env.Recipients {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"addr":`...)
			b = appendJSONString(b, r.Addr)
			b = appendOptionalString(b, "notify", r.Notify)
			b = appendOptionalString(b, "orcpt", r.ORcpt)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendOptionalString(b, "ret", env.Ret)
	b = appendOptionalString(b, "envid", env.EnvID)
	b = appendOptionalTrue(b, "body8bit", env.Body8Bit)
	b = appendOptionalTrue(b, "smtputf8", env.SMTPUTF8)
	b = appendOptionalTrue(b, "dsn", env.IsDSN)
	b = appendOptionalString(b, "account", env.Account)
	b = append(b, `,"submitted":`...)
	b, err := appendJSONTime(b, env.Submitted)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"uid":`...)
	b = strconv.AppendInt(b, int64(env.UID), 10)
	b = appendOptionalString(b, "user", env.User)
	return append(b, '}'), nil
}

// appendOptionalString writes a field tagged omitempty.
func appendOptionalString(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, s)
}

// appendOptionalTrue writes a bool field tagged omitempty.
func appendOptionalTrue(b []byte, name string, v bool) []byte {
	if !v {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	return append(b, `":true`...)
}

// appendJSONTime writes t as time.Time.MarshalJSON does, with its limits.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, &Error{Op: "encode", Path: "envelope", Err: strconv.ErrRange}
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// appendJSONString quotes s as encoding/json does: ", \ and control
// characters escaped, <, > and & as \u00XX, U+2028 and U+2029 escaped,
// invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
