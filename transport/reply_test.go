package transport

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"250 2.0.0 OK <id@host> [Hostname=x]\r\n", "250 2.0.0 OK <id@host> [Hostname=x]", ""},
		{"554-5.2.0 first\r\n554-5.2.0 second\r\n554 5.2.0 third\r\n", "554 5.2.0 first second third", ""},
		{"535 Authentication failed\r\n", "535 Authentication failed", ""},
		{"250 4.0.0 not an enhanced code of this class\r\n", "250 4.0.0 not an enhanced code of this class", ""},
		{"220\r\n", "220", ""},
		{"25O oops\r\n", "", "malformed"},
		{"250-first\r\n451 other\r\n", "", "does not continue"},
		{"250-" + strings.Repeat("x", maxReplyLine) + "\r\n", "", "longer than"},
		{strings.Repeat("250-x\r\n", maxReplyLines+2), "", "more than"},
		{"250-unterminated", "", "EOF"},
	} {
		s := &session{br: bufio.NewReaderSize(strings.NewReader(tc.in), maxReplyLine)}
		r, err := s.readReply()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.String() != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, r.String(), err, tc.want)
		}
	}
}

func TestXtextAndNotify(t *testing.T) {
	if got := xtext("a+b=c d\x7f"); got != "a+2Bb+3Dc+20d+7F" {
		t.Errorf("xtext %q", got)
	}
	for in, want := range map[string]string{"": "", "never": "NEVER", "success, failure": "SUCCESS,FAILURE",
		"SUCCESS,SUCCESS": "", "NEVER,DELAY": "", "sometimes": ""} {
		if got := notifyValue(in); got != want {
			t.Errorf("notifyValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseReply(t *testing.T) {
	for in, want := range map[string]string{
		"535 5.7.3 Authentication unsuccessful [host]": "535|5.7.3|Authentication unsuccessful [host]",
		"250 OK":      "250||OK",
		"421":         "421||",
		"550 4.1.1 x": "550||4.1.1 x", // an enhanced code of another class is text
	} {
		r, ok := ParseReply(in)
		if got := fmt.Sprintf("%d|%s|%s", r.Code, r.Enhanced, r.text()); !ok || got != want || r.String() != in {
			t.Errorf("ParseReply(%q) = %s, %v (%q); want %s", in, got, ok, r.String(), want)
		}
	}
	for _, in := range []string{"", "HTTP 403 Forbidden", "99 x", "5355 x", "250-more"} {
		if _, ok := ParseReply(in); ok {
			t.Errorf("ParseReply(%q) accepted", in)
		}
	}
}
