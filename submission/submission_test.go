package submission

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/exo-sendmail/exo-sendmail/queue"
)

var site = &Site{Hostname: "web1.example.com", MaxMessageSize: 35 * 1000 * 1000, UID: 1000, User: "alice"}

func to(addrs ...string) []queue.Recipient {
	var out []queue.Recipient
	for _, a := range addrs {
		out = append(out, queue.Recipient{Addr: a})
	}
	return out
}

// submit reads and writes one message as the spool would store it.
func submit(t *testing.T, in string, opts *Options) (*Message, string) {
	t.Helper()
	m, err := Read(strings.NewReader(in), opts, site)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var out bytes.Buffer
	n, err := m.WriteTo(&out)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(out.Len()) {
		t.Errorf("WriteTo counted %d bytes, wrote %d", n, out.Len())
	}
	return m, out.String()
}

// split returns the stored header section (without the blank line) and body.
func split(t *testing.T, stored string) (header, body string) {
	t.Helper()
	h, b, ok := strings.Cut(stored, "\n\n")
	if !ok {
		if strings.HasSuffix(stored, "\n") && strings.Count(stored, "\n") == 1 && stored == "\n" {
			return "", ""
		}
		t.Fatalf("no blank line after the header section:\n%s", stored)
	}
	return h + "\n", b
}

var (
	dateRe  = regexp.MustCompile(`(?m)^Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}$`)
	msgIDRe = regexp.MustCompile(`(?m)^Message-ID: <\d{14}\.[0-9a-f]{16}@web1\.example\.com>$`)
)

func addrs(env queue.Envelope) []string {
	var out []string
	for _, r := range env.Recipients {
		out = append(out, r.Addr)
	}
	return out
}

func TestPHPMixedLineEndsAndLoneDot(t *testing.T) {
	in := "To: to@example.com\r\nSubject: PHP subject\r\nFrom: PHP Sender <php@example.com>\r\n\r\n" +
		"line one\nline two\n.\nline after a lone dot\n\r\n"
	m, stored := submit(t, in, &Options{FromHeaders: true, DotIsData: true})
	h, b := split(t, stored)
	if b != "line one\nline two\n.\nline after a lone dot\n\n" {
		t.Errorf("body = %q", b)
	}
	if strings.Contains(h, "\r") {
		t.Errorf("CR left in header %q", h)
	}
	if !strings.HasPrefix(h, "To: to@example.com\nSubject: PHP subject\nFrom: PHP Sender <php@example.com>\n") {
		t.Errorf("header fields rewritten or reordered:\n%s", h)
	}
	if strings.Count(h, "From:") != 1 || !dateRe.MatchString(h) || !msgIDRe.MatchString(h) {
		t.Errorf("want one From and an added Date and Message-ID:\n%s", h)
	}
	if got := addrs(m.Envelope); len(got) != 1 || got[0] != "to@example.com" {
		t.Errorf("recipients = %v", got)
	}
	if m.Envelope.Sender != "alice@web1.example.com" || m.Envelope.UID != 1000 || m.Envelope.User != "alice" {
		t.Errorf("envelope = %+v", m.Envelope)
	}
}

func TestDotEndsInputWithoutI(t *testing.T) {
	in := "To: a@example.com\n\nfirst\n.\nnever read\n"
	_, stored := submit(t, in, &Options{FromHeaders: true})
	if _, b := split(t, stored); b != "first\n" {
		t.Errorf("body = %q, want only the line before the dot", b)
	}
	_, stored = submit(t, "To: a@example.com\r\n.\r\nnot a header\n", &Options{FromHeaders: true})
	if h, b := split(t, stored); b != "" || strings.Contains(h, "not a header") {
		t.Errorf("dot in the header section did not end the input: %q", stored)
	}
}

// A caller that ends its message with "." and keeps the pipe open must not
// leave sendmail waiting.
func TestDotLineDoesNotWaitForEOF(t *testing.T) {
	for _, in := range []string{"To: a@example.com\n\nbody\n.\n", "To: a@example.com\n.\n", ".\n"} {
		pr, pw := io.Pipe()
		go pw.Write([]byte(in)) // never closed
		m, err := Read(pr, &Options{Recipients: to("b@example.com"), FromHeaders: true}, site)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := m.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "\n.\n") {
			t.Errorf("%q: dot line stored", in)
		}
		pw.Close()
	}
}

func TestBccRemovedWithContinuations(t *testing.T) {
	in := "To: a@example.com\nBcc: hidden@example.com,\n  other@example.com\nbcc: third@example.com\n" +
		"Subject: s\n  folded subject\n\nbody\n"
	m, stored := submit(t, in, &Options{FromHeaders: true, DotIsData: true})
	h, _ := split(t, stored)
	// Field names and addresses, not "bcc" anywhere: the Message-ID's
	// random hex may spell it.
	if strings.Contains(strings.ToLower("\n"+h), "\nbcc:") || strings.Contains(h, "hidden@") || strings.Contains(h, "other@") || strings.Contains(h, "third@") {
		t.Errorf("Bcc left in the stored header:\n%s", h)
	}
	if !strings.Contains(h, "Subject: s\n  folded subject\n") {
		t.Errorf("folded Subject damaged:\n%s", h)
	}
	want := []string{"a@example.com", "hidden@example.com", "other@example.com", "third@example.com"}
	if got := addrs(m.Envelope); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("recipients = %v, want %v", got, want)
	}
}

func TestResentFieldsChooseRecipients(t *testing.T) {
	in := "To: orig@example.com\nResent-From: x@example.com\nResent-To: new@example.com\nResent-Bcc: secret@example.com\n\nbody\n"
	m, stored := submit(t, in, &Options{FromHeaders: true})
	if got := addrs(m.Envelope); strings.Join(got, " ") != "new@example.com secret@example.com" {
		t.Errorf("recipients = %v", got)
	}
	if strings.Contains(stored, "secret@") {
		t.Errorf("Resent-Bcc stored:\n%s", stored)
	}
}

func TestRecipients(t *testing.T) {
	cases := []struct {
		name   string
		header string
		opts   Options
		want   string
	}{
		{"cron MAILTO as one argument", "", Options{Recipients: to("a@x.example, b@y.example,root")}, "a@x.example b@y.example root"},
		{"bare local name kept", "", Options{Recipients: to("root")}, "root"},
		{"-t adds argument recipients", "To: a@example.com\n", Options{FromHeaders: true, Recipients: to("b@example.com")}, "a@example.com b@example.com"},
		{"duplicates removed", "To: A@example.com, a@example.com\nCc: <a@EXAMPLE.com>\n", Options{FromHeaders: true, Recipients: to("a@example.com")}, "A@example.com"},
		{"mailutils brackets", "To: <to1@example.com>,<to2@example.com>\n", Options{FromHeaders: true}, "to1@example.com to2@example.com"},
		{"display names and groups", "To: Two <b@example.com>, \"Doe, J\" <j@example.com>, team: c@example.com;\n", Options{FromHeaders: true}, "b@example.com j@example.com c@example.com"},
		{"bare name with comment", "To: root (Cron Daemon), www-data\n", Options{FromHeaders: true}, "root www-data"},
		{"undisclosed plus argument", "To: undisclosed-recipients:;\n", Options{FromHeaders: true, Recipients: to("z@example.com")}, "z@example.com"},
		{"no -t ignores the header", "To: a@example.com\n", Options{Recipients: to("b@example.com")}, "b@example.com"},
		{"8-bit display name", "To: Jörg <j@example.com>\n", Options{FromHeaders: true}, "j@example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, _ := submit(t, c.header+"\nbody\n", &c.opts)
			if got := strings.Join(addrs(m.Envelope), " "); got != c.want {
				t.Errorf("recipients = %q, want %q", got, c.want)
			}
		})
	}
}

func TestSender(t *testing.T) {
	cases := []struct {
		opts       Options
		sender     string
		fromHeader string
	}{
		{Options{}, "alice@web1.example.com", "From: alice@web1.example.com"},
		{Options{Sender: "<bounce@example.com>", SenderGiven: true}, "bounce@example.com", "From: bounce@example.com"},
		{Options{Sender: "root", SenderGiven: true, FullName: "CronDaemon"}, "root", "From: CronDaemon <root@web1.example.com>"},
		{Options{Sender: "<>", SenderGiven: true}, "", "From: alice@web1.example.com"},
		{Options{FullName: "Cron Daemon"}, "alice@web1.example.com", "From: Cron Daemon <alice@web1.example.com>"},
		{Options{FullName: "Doe, John"}, "alice@web1.example.com", `From: "Doe, John" <alice@web1.example.com>`},
		{Options{FullName: "Jörg"}, "alice@web1.example.com", "From: =?utf-8?q?J=C3=B6rg?= <alice@web1.example.com>"},
	}
	for _, c := range cases {
		c.opts.Recipients = to("x@example.com")
		m, stored := submit(t, "Subject: s\n\nbody\n", &c.opts)
		if m.Envelope.Sender != c.sender {
			t.Errorf("%+v: sender = %q, want %q", c.opts, m.Envelope.Sender, c.sender)
		}
		if !strings.Contains(stored, "\n"+c.fromHeader+"\n") {
			t.Errorf("%+v: want %q in\n%s", c.opts, c.fromHeader, stored)
		}
	}
	// A From in the message is never replaced.
	_, stored := submit(t, "From: root (Cron Daemon)\n\nbody\n", &Options{Recipients: to("x@example.com"), FullName: "CronDaemon"})
	if strings.Count(stored, "From:") != 1 || !strings.Contains(stored, "From: root (Cron Daemon)\n") {
		t.Errorf("From rewritten:\n%s", stored)
	}
}

func TestMessagesWithoutHeader(t *testing.T) {
	cases := map[string]string{
		"plain text":         "hello world\nsecond line\n",
		"leading space":      "  indented: first\n",
		"mbox From line":     "From alice Sat Nov 21 15:52:18 2026\nhello: not a field? yes it is\n",
		"binary":             "\x00\x01\xff\xfe:\n\x80",
		"empty":              "",
		"colon after 1000 b": strings.Repeat("a", 1200) + ": x\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, stored := submit(t, in, &Options{Recipients: to("x@example.com"), DotIsData: true})
			h, _ := split(t, stored)
			if !dateRe.MatchString(h) || !msgIDRe.MatchString(h) || !strings.Contains(h, "From: alice@web1.example.com\n") {
				t.Errorf("headers not added:\n%s", stored)
			}
			if strings.HasPrefix(stored, "From alice") {
				t.Errorf("mbox From line stored")
			}
		})
	}
	_, stored := submit(t, "hello world\n", &Options{Recipients: to("x@example.com")})
	if _, b := split(t, stored); b != "hello world\n" {
		t.Errorf("body = %q", b)
	}
	// "From :" (white space before the colon) is a field, not an mbox line.
	_, stored = submit(t, "From : a@example.com\nSubject: s\n\nbody\n", &Options{Recipients: to("x@example.com")})
	if !strings.HasPrefix(stored, "From : a@example.com\nSubject: s\n") || strings.Count(stored, "From") != 1 {
		t.Errorf("stored %q", stored)
	}
	// A line that is not a field ends the header section: it starts the body.
	_, stored = submit(t, "Subject: s\nnot a field\nX: y\n", &Options{Recipients: to("x@example.com")})
	if h, b := split(t, stored); !strings.HasPrefix(h, "Subject: s\n") || b != "not a field\nX: y\n" {
		t.Errorf("stored %q", stored)
	}
}

func TestBytesKept(t *testing.T) {
	long := strings.Repeat("x", 200000) // crosses the 64 KiB read buffer
	body := "nul\x00byte\n8-bit \xe9t\xe9\n" + long + "\r\nlone\rCR\n" + strings.Repeat("y", 5000) + "\n"
	m, stored := submit(t, "To: a@example.com\n\n"+body, &Options{FromHeaders: true})
	_, b := split(t, stored)
	want := strings.ReplaceAll(body, "\r\n", "\n")
	if b != want {
		t.Errorf("body changed: got %d bytes, want %d", len(b), len(want))
	}
	if !m.Envelope.Body8Bit {
		t.Error("Body8Bit not set for an 8-bit body")
	}
	m, _ = submit(t, "To: a@example.com\n\nascii\n", &Options{FromHeaders: true})
	if m.Envelope.Body8Bit {
		t.Error("Body8Bit set for ASCII")
	}
	m, _ = submit(t, "To: a@example.com\n\nascii\n", &Options{FromHeaders: true, Body8BitMIME: true})
	if !m.Envelope.Body8Bit {
		t.Error("-B8BITMIME did not set Body8Bit")
	}
	// Known before the envelope is written: the header and what was read.
	m, err := Read(strings.NewReader("Subject: caf\xc3\xa9\n\nbody\n"), &Options{Recipients: to("a@example.com")}, site)
	if err != nil || !m.Envelope.Body8Bit {
		t.Errorf("8-bit header: Body8Bit = %v, %v", m != nil && m.Envelope.Body8Bit, err)
	}
}

func TestRefused(t *testing.T) {
	big := &Site{Hostname: "h.example", MaxMessageSize: 1000, User: "alice"}
	cases := []struct {
		name string
		in   string
		opts Options
		site *Site
		kind Kind
		msg  string
	}{
		{"no recipients", "Subject: s\n\nb\n", Options{}, site, BadUsage, "no recipients: give addresses as arguments or use -t with To/Cc/Bcc"},
		{"-t without addresses", "To: undisclosed-recipients:;\n\nb\n", Options{FromHeaders: true}, site, BadUsage, "no recipients"},
		{"LF in -f", "", Options{Sender: "a@b\nBcc: x@y", SenderGiven: true, Recipients: to("r@x")}, site, BadUsage, "the sender (-f) contains a line break"},
		{"CR in -F", "", Options{FullName: "Name\rBcc: x@y", Recipients: to("r@x")}, site, BadUsage, "the full name (-F) contains a line break"},
		{"LF in recipient", "", Options{Recipients: to("r@x\nBcc: y@z")}, site, BadUsage, `recipient "r@x\nBcc: y@z" contains a line break`},
		{"not an address", "", Options{Recipients: to("two words")}, site, BadUsage, `recipient "two words" is not an address`},
		{"two senders", "", Options{Sender: "a@x, b@y", SenderGiven: true, Recipients: to("r@x")}, site, BadUsage, "is not one address"},
		{"1 MB header line", "X-Big: " + strings.Repeat("a", 1<<20) + "\n\nb\n", Options{Recipients: to("r@x")}, site, BadMessage, "a header line is longer than 1 MB"},
		{"1 MB header section", strings.Repeat("X-Many: "+strings.Repeat("a", 990)+"\n", 1100) + "\nb\n", Options{Recipients: to("r@x")}, site, BadMessage, "the header section is larger than 1 MB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(c.in), &c.opts, c.site)
			var e *Error
			if !errors.As(err, &e) || e.Kind != c.kind || !strings.Contains(e.Msg, c.msg) {
				t.Fatalf("err = %v, want kind %d %q", err, c.kind, c.msg)
			}
		})
	}
	// Without -t and without arguments, nothing is read: a caller at a
	// terminal hears at once.
	pr, pw := io.Pipe()
	defer pw.Close()
	if _, err := Read(pr, &Options{Recipients: to(" ")}, site); err != errNoRecipients {
		t.Errorf("no recipients: err = %v", err)
	}
	m, err := Read(strings.NewReader("Subject: s\n\n"+strings.Repeat("line of text\n", 100)), &Options{Recipients: to("r@x")}, big)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.WriteTo(io.Discard)
	var e *Error
	if !errors.As(err, &e) || e.Kind != TooBig || e.Msg != "message exceeds max_message_size (1 kB)" {
		t.Errorf("oversized: err = %v", err)
	}
}

type failingWriter struct{ after int }

var errDiskFull = errors.New("injected: no space left")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errDiskFull
	}
	return len(p), nil
}

func TestFailures(t *testing.T) {
	body := strings.Repeat("0123456789\n", 20000)
	m, err := Read(strings.NewReader("Subject: s\n\n"+body), &Options{Recipients: to("r@x")}, site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteTo(&failingWriter{after: 100000}); !errors.Is(err, errDiskFull) {
		t.Errorf("write failure: err = %v, want the writer's error", err)
	}

	broken := errors.New("injected: pipe broke")
	r := io.MultiReader(strings.NewReader("Subject: s\n\nfirst part\n"), iotest.ErrReader(broken))
	m, err = Read(r, &Options{Recipients: to("r@x")}, site)
	if err == nil {
		_, err = m.WriteTo(io.Discard)
	}
	var re *ReadError
	if !errors.As(err, &re) || !errors.Is(err, broken) {
		t.Errorf("read failure: err = %v, want *ReadError", err)
	}
	_, err = Read(iotest.ErrReader(broken), &Options{Recipients: to("r@x")}, site)
	if !errors.As(err, &re) {
		t.Errorf("read failure in the header: err = %v", err)
	}
}

// The header reader peeks byte by byte on a slow reader: the result must
// not depend on how the input arrives.
func TestReaderChunking(t *testing.T) {
	in := "From mbox line\nTo: a@example.com,\n b@example.com\nBcc: c@example.com\nX-Obs : v\n\r\n.\nbody\r\n\r\nend"
	opts := Options{FromHeaders: true, DotIsData: true}
	want := storeNormalized(t, strings.NewReader(in), opts)
	got := storeNormalized(t, iotest.OneByteReader(strings.NewReader(in)), opts)
	if got != want {
		t.Errorf("one byte at a time:\n%q\nall at once:\n%q", got, want)
	}
	if !strings.Contains(want, "X-Obs : v\n") || !strings.HasSuffix(want, "\n.\nbody\n\nend\n") {
		t.Errorf("stored %q", want)
	}
}

var addedRe = regexp.MustCompile(`(?m)^(Date|Message-ID): .*\n`)

func storeNormalized(t testing.TB, r io.Reader, opts Options) string {
	m, err := Read(r, &opts, site)
	if err != nil {
		return "error: " + err.Error()
	}
	var out bytes.Buffer
	if _, err := m.WriteTo(&out); err != nil {
		return "error: " + err.Error()
	}
	return addedRe.ReplaceAllString(out.String(), "")
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("To: a@example.com\r\nBcc: b@example.com\r\n\r\nbody\n.\nafter\n"), true)
	f.Add([]byte("From x\nSubject: s\n folded\nno colon\n\n"), false)
	f.Add([]byte(".\r"), false)
	f.Add([]byte("\x00\xff: \r\r\n\n"), true)
	f.Add([]byte("To: root (Cron Daemon), \"q\\\"x\" <a@b>, g:;,<<>>\n\n"), true)
	f.Fuzz(func(t *testing.T, in []byte, dotIsData bool) {
		opts := Options{FromHeaders: true, Recipients: to("r@example.com"), DotIsData: dotIsData}
		whole := storeNormalized(t, bytes.NewReader(in), opts)
		bytewise := storeNormalized(t, iotest.OneByteReader(bytes.NewReader(in)), opts)
		if whole != bytewise {
			t.Fatalf("result depends on read sizes:\n%q\n%q", whole, bytewise)
		}
		if strings.HasPrefix(whole, "error: ") {
			return
		}
		header, _, ok := strings.Cut(whole, "\n\n")
		if !ok && !strings.HasSuffix(whole, "\n") {
			t.Fatalf("no header section end: %q", whole)
		}
		for _, line := range strings.Split(header, "\n") {
			name, _, isField := strings.Cut(line, ":")
			name = strings.ToLower(strings.TrimRight(name, " \t"))
			if isField && (name == "bcc" || name == "resent-bcc") {
				t.Fatalf("Bcc stored: %q", whole)
			}
		}
		if !strings.HasSuffix(whole, "\n") {
			t.Fatalf("stored message does not end in LF: %q", whole)
		}
	})
}

// referenceBody is the body rule written the obvious, in-memory way.
func referenceBody(in []byte, dotEnds bool) string {
	var out strings.Builder
	lines := strings.SplitAfter(string(in), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		content := strings.TrimSuffix(l, "\n")
		if dotEnds && (content == "." || content == ".\r") {
			break
		}
		out.WriteString(strings.TrimSuffix(content, "\r") + "\n")
	}
	return out.String()
}

func FuzzCopyBody(f *testing.F) {
	f.Add([]byte("a\r\nb\n.\nc\rd\r"), true)
	f.Add([]byte(strings.Repeat("x", 15)+"\r\n"+strings.Repeat("y", 16)+"\r"+"\n"), false)
	f.Add([]byte("\r\r\n.\r"), true)
	f.Fuzz(func(t *testing.T, in []byte, dotEnds bool) {
		var out bytes.Buffer
		// The smallest buffer bufio allows: lines and CRLFs split across reads.
		if err := copyBody(&out, bufio.NewReaderSize(bytes.NewReader(in), 16), dotEnds); err != nil {
			t.Fatal(err)
		}
		if want := referenceBody(in, dotEnds); out.String() != want {
			t.Fatalf("copyBody(%q) = %q, want %q", in, out.String(), want)
		}
	})
}
