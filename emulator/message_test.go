package emulator

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzSplitHeader: whatever the input, the fields and the body put back
// together are the input, byte for byte (Bcc removal relies on it).
func FuzzSplitHeader(f *testing.F) {
	for _, s := range []string{
		graphMIME, testMessage, "", "\r\n", "no colon\r\n\r\nbody", " leading space: x\r\n", "A: b\n c\n\nbody",
		"From: a@b\r\nTo: c@d", "X: y\r\n\t\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, body := splitHeader(data)
		var back bytes.Buffer
		for _, fl := range fields {
			back.Write(fl.raw)
		}
		back.Write(body)
		if !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("fields+body = %q, want %q", back.Bytes(), data)
		}
	})
}

func TestHeaderValues(t *testing.T) {
	fields, body := splitHeader([]byte(graphMIME))
	if got := values(fields, "bcc"); len(got) != 1 || got[0] != "hidden@fabrikam.com,  hidden2@fabrikam.com" {
		t.Errorf("folded Bcc = %q", got)
	}
	if string(body) != "\r\nbody\r\n" {
		t.Errorf("body = %q", body)
	}
	to, err := addresses(fields, "To")
	if err != nil || strings.Join(to, " ") != "ops@fabrikam.com dev@fabrikam.com" {
		t.Errorf("To = %q, %v", to, err)
	}
	// An unknown charset in a display name does not hide the address.
	f, _ := splitHeader([]byte("From: =?x-unknown?q?Caf=E9?= <cafe@contoso.com>\r\n\r\n"))
	if a, err := addresses(f, "From"); err != nil || len(a) != 1 || a[0] != "cafe@contoso.com" {
		t.Errorf("From = %q, %v", a, err)
	}
}

func TestMaildirNameIsSafe(t *testing.T) {
	for in, want := range map[string]string{
		"Ops@Contoso.com":  "ops@contoso.com",
		"../../etc/passwd": "_.._.._etc_passwd",
		"..":               "_..",
		"":                 "_",
		"a/b@c\x00d":       "a_b@c_d",
		"\"quoted\"@x.com": "_quoted_@x.com",
	} {
		if got := maildirName(in); got != want {
			t.Errorf("maildirName(%q) = %q, want %q", in, got, want)
		}
	}
}
