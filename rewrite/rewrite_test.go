package rewrite

import (
	"bufio"
	"encoding/base64"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

const mailbox = "noreply@contoso.com"

func policy() Policy {
	aliases := map[string][]string{
		"root":     {"ops@contoso.com"},
		"www-data": {"web@contoso.com", "ops@contoso.com"},
		"nobody":   nil,
	}
	return Policy{
		Mailbox:  mailbox,
		SendAs:   []string{"*@contoso.com", "alerts@example.org"},
		Hostname: "web1.contoso.com",
		Resolve: func(addr string) []string {
			name, _, _ := strings.Cut(addr, "@")
			if a, ok := aliases[name]; ok {
				return a
			}
			return []string{name + "@web1.contoso.com"}
		},
		Date:    time.Date(2026, 11, 21, 15, 52, 18, 0, time.UTC),
		QueueID: "Q1234",
	}
}

// prepare runs Prepare and checks what every copy must satisfy: CRLF line
// ends, no line over 998 octets, Size exact, Open repeatable, Body8Bit true
// exactly when an octet ≥ 0x80 remains.
func prepare(t testing.TB, msg string, p Policy) (*Copy, string) {
	t.Helper()
	c, err := Prepare(strings.NewReader(msg), int64(len(msg)), p)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	out := open(t, c)
	if again := open(t, c); again != out {
		t.Fatalf("Open twice gave different bytes")
	}
	if int64(len(out)) != c.Size {
		t.Fatalf("Size %d, copy has %d octets", c.Size, len(out))
	}
	if c.Body8Bit != has8bit([]byte(out)) {
		t.Fatalf("Body8Bit = %v, copy disagrees", c.Body8Bit)
	}
	checkLines(t, out)
	return c, out
}

func open(t testing.TB, c *Copy) string {
	t.Helper()
	r, err := c.Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the copy: %v", err)
	}
	return string(b)
}

func checkLines(t testing.TB, out string) {
	t.Helper()
	if out != "" && !strings.HasSuffix(out, "\r\n") {
		t.Fatalf("copy does not end with CRLF: %q", tail(out))
	}
	for i, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(l) > maxLine {
			t.Fatalf("line %d has %d octets: %.60q…", i+1, len(l), l)
		}
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %.80q", i+1, l)
		}
	}
}

func tail(s string) string { return s[max(0, len(s)-40):] }

// headerOf parses the copy's header with go-message (strict) and returns it
// with the body.
func headerOf(t *testing.T, out string) (textproto.Header, string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(out))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatalf("go-message cannot read the header: %v\n%s", err, out)
	}
	body, _ := io.ReadAll(br)
	return h, string(body)
}

func lf(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

func TestClientFixtures(t *testing.T) {
	dirs, _ := filepath.Glob("/work/shared/clients/*/stdin.eml")
	if len(dirs) == 0 {
		t.Skip("no fixtures in /work/shared/clients")
	}
	for _, file := range dirs {
		name := filepath.Base(filepath.Dir(file))
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			msg := lf(string(raw)) // as the queue stores it
			c, out := prepare(t, msg, policy())
			h, body := headerOf(t, out)
			for _, k := range []string{"From", "Date", "Message-Id"} {
				if h.Get(k) == "" {
					t.Errorf("no %s in the copy", k)
				}
			}
			if h.Has("Bcc") {
				t.Errorf("Bcc left in the copy: %q", h.Get("Bcc"))
			}
			if c.From != mailbox {
				t.Errorf("From address %q, want the mailbox", c.From)
			}
			// The body is the queued body with CRLF line ends.
			_, qbody, _ := strings.Cut(msg, "\n\n")
			if lf(body) != qbody && lf(body) != qbody+"\n" {
				t.Errorf("body changed:\n%q\nwant\n%q", lf(body), qbody)
			}
			for _, v := range h.Values("To") {
				if !strings.Contains(v, "@") {
					t.Errorf("bare name left in To: %q", v)
				}
			}
		})
	}
}

func TestFromRewrite(t *testing.T) {
	for _, tc := range []struct {
		name, from, extra string
		want              string // the From field body in the copy
		wantFrom          string // Copy.From
		original          bool   // X-Original-From present
		replyTo           string // "" = none
	}{
		{"mailbox itself", "Web <noreply@contoso.com>", "", "Web <noreply@contoso.com>", mailbox, false, ""},
		{"send-as pattern", "Sales <sales@Contoso.com>", "", "Sales <sales@Contoso.com>", "sales@Contoso.com", false, ""},
		{"other domain", "PHP Sender <php-sender@example.com>", "",
			`"PHP Sender (php-sender@example.com)" <noreply@contoso.com>`, mailbox, true, "PHP Sender <php-sender@example.com>"},
		{"bare root with comment", "root (Cron Daemon)", "",
			`"Cron Daemon (root@web1.contoso.com)" <noreply@contoso.com>`, mailbox, true, ""},
		{"local host domain", "www-data@web1.contoso.com", "",
			`"www-data@web1.contoso.com" <noreply@contoso.com>`, mailbox, true, ""},
		{"unqualified host", "root@web1", "", `"root@web1" <noreply@contoso.com>`, mailbox, true, ""},
		{"reply-to kept", "a@example.com", "Reply-To: b@example.com\n",
			`"a@example.com" <noreply@contoso.com>`, mailbox, true, ""},
		{"quoted name with specials", `"Doe, \"JD\" John" <jd@example.com>`, "",
			`"Doe, \"JD\" John (jd@example.com)" <noreply@contoso.com>`, mailbox, true, `"Doe, \"JD\" John" <jd@example.com>`},
		{"empty", "", "", "noreply@contoso.com", mailbox, true, ""},
		{"bare allowed name qualified", "alerts@example.org", "", "alerts@example.org", "alerts@example.org", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := "From: " + tc.from + "\nTo: x@example.com\nSubject: s\n" + tc.extra + "\nbody\n"
			c, out := prepare(t, msg, policy())
			h, _ := headerOf(t, out)
			if got := h.Get("From"); got != tc.want {
				t.Errorf("From: %s, want %s", got, tc.want)
			}
			if c.From != tc.wantFrom {
				t.Errorf("Copy.From %q, want %q", c.From, tc.wantFrom)
			}
			if got := h.Get("X-Original-From"); tc.original != (got != "" || h.Has("X-Original-From")) || (tc.original && got != tc.from) {
				t.Errorf("X-Original-From %q (present %v), want %q", got, h.Has("X-Original-From"), tc.from)
			}
			rt := h.Values("Reply-To")
			switch {
			case tc.extra != "":
				if len(rt) != 1 || rt[0] != "b@example.com" {
					t.Errorf("Reply-To %q, want the message's own only", rt)
				}
			case tc.replyTo == "" && len(rt) > 0:
				t.Errorf("Reply-To %q added for an address replies cannot reach", rt)
			case tc.replyTo != "" && (len(rt) != 1 || rt[0] != tc.replyTo):
				t.Errorf("Reply-To %q, want %q", rt, tc.replyTo)
			}
		})
	}
}

func TestFromNonASCII(t *testing.T) {
	for _, from := range []string{
		"Café Ünïcode <owner@example.com>",                            // raw UTF-8, as PHP writes it
		"=?UTF-8?Q?Caf=C3=A9_=C3=9Cn=C3=AFcode?= <owner@example.com>", // encoded word
		"=?ISO-8859-1?Q?Caf=E9_=DCn=EFcode?= <owner@example.com>",
	} {
		_, out := prepare(t, "From: "+from+"\nSubject: x\n\nhi\n", policy())
		h, _ := headerOf(t, out)
		raw := h.Get("From")
		if has8bit([]byte(raw)) {
			t.Errorf("From not encoded: %q", raw)
		}
		name, addr, ok := strings.Cut(raw, " <")
		if !ok || addr != mailbox+">" {
			t.Fatalf("From %q", raw)
		}
		got, err := new(mime.WordDecoder).DecodeHeader(name)
		if err != nil || got != "Café Ünïcode (owner@example.com)" {
			t.Errorf("From display name decodes to %q (%v)", got, err)
		}
	}
}

func TestSender(t *testing.T) {
	msg := "From: a@contoso.com\nSender: www-data@web1.contoso.com\nSubject: x\n\nhi\n"
	_, out := prepare(t, msg, policy())
	if h, _ := headerOf(t, out); h.Has("Sender") {
		t.Errorf("a Sender the mailbox may not use is kept: %q", h.Get("Sender"))
	}
	msg = "From: a@contoso.com\nSender: b@contoso.com\nSubject: x\n\nhi\n"
	_, out = prepare(t, msg, policy())
	if h, _ := headerOf(t, out); h.Get("Sender") != "b@contoso.com" {
		t.Errorf("an allowed Sender was changed: %q", h.Get("Sender"))
	}
}

func TestAliasesInToCc(t *testing.T) {
	msg := "From: noreply@contoso.com\n" +
		"To: Root User <root>, www-data (web server),\n  boss@example.com, root@web1.contoso.com\n" +
		"Cc: alice, undisclosed:;, nobody\n" +
		"Cc: ext@example.com\n" +
		"Resent-To: root\n" +
		"\nbody\n"
	_, out := prepare(t, msg, policy())
	h, _ := headerOf(t, out)
	want := map[string]string{
		"To": "Root User <ops@contoso.com>, web@contoso.com (web server), ops@contoso.com (web server), boss@example.com, ops@contoso.com",
	}
	if got := strings.ReplaceAll(h.Get("To"), "\r\n", ""); got != want["To"] {
		t.Errorf("To:\n %s\nwant\n %s", got, want["To"])
	}
	cc := h.Values("Cc")
	if len(cc) != 2 || cc[0] != "alice@web1.contoso.com, undisclosed:;" || cc[1] != "ext@example.com" {
		t.Errorf("Cc: %q", cc)
	}
	if h.Get("Resent-To") != "root" {
		t.Errorf("Resent-To changed: %q (only To and Cc are resolved)", h.Get("Resent-To"))
	}
	// Without Resolve, names stay as written.
	p := policy()
	p.Resolve = nil
	_, out = prepare(t, msg, p)
	if h, _ := headerOf(t, out); !strings.HasPrefix(h.Get("To"), "Root User <root>,") {
		t.Errorf("To changed without Resolve: %q", h.Get("To"))
	}
}

func TestHeaderKeptInOrder(t *testing.T) {
	msg := "Received: from x\n\tby y; Sat, 21 Nov 2026 15:52:18 +0000\n" +
		"From: a@contoso.com\n" +
		"Subject: =?UTF-8?B?w6k=?=  two  spaces \n" +
		"Bcc: secret@example.com\n" +
		"Return-Path: <bounce@example.com>\n" +
		"Resent-Bcc: x@example.com\n" +
		"X-Weird:value-without-space\n" +
		"Date: Sat, 21 Nov 2026 15:52:18 +0000\n" +
		"Message-ID: <a@b>\n" +
		"\nbody\n"
	_, out := prepare(t, msg, policy())
	want := "Received: from x\r\n\tby y; Sat, 21 Nov 2026 15:52:18 +0000\r\n" +
		"From: a@contoso.com\r\n" +
		"Subject: =?UTF-8?B?w6k=?=  two  spaces \r\n" +
		"X-Weird:value-without-space\r\n" +
		"Date: Sat, 21 Nov 2026 15:52:18 +0000\r\n" +
		"Message-ID: <a@b>\r\n" +
		"\r\nbody\r\n"
	if out != want {
		t.Errorf("copy:\n%s\nwant:\n%s", out, want)
	}
}

func TestAddedFields(t *testing.T) {
	_, out := prepare(t, "Subject: x\n\nhi\n", policy())
	h, _ := headerOf(t, out)
	if got := h.Get("Date"); got != "Sat, 21 Nov 2026 15:52:18 +0000" {
		t.Errorf("Date %q, want the submission time", got)
	}
	if got := h.Get("Message-Id"); got != "<20261121155218.Q1234@web1.contoso.com>" {
		t.Errorf("Message-ID %q, want one derived from the queue ID", got)
	}
	if got := h.Get("From"); got != mailbox {
		t.Errorf("From %q, want the mailbox", got)
	}
}

func html(n int) string {
	var b strings.Builder
	b.WriteString("<html><body>")
	for b.Len() < n-len("</body></html>") {
		b.WriteString(`<td class="c">café — ünïcode</td> `)
	}
	b.WriteString("</body></html>")
	return b.String()[:n]
}

func TestLongLineSinglePart(t *testing.T) {
	long := html(5000) + "  " // trailing white space must survive too
	body := "short line\n" + long + "\n=literal equals\n-- \nend"
	for _, tc := range []struct{ name, header, ct string }{
		{"no MIME header", "Subject: x\n", "text/plain; charset=UTF-8"},
		{"html 8bit", "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n", "text/html; charset=utf-8"},
		{"html binary", "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: binary\n", "text/html; charset=utf-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, out := prepare(t, "From: a@contoso.com\n"+tc.header+"\n"+body, policy())
			if c.Body8Bit {
				t.Errorf("8-bit octets remain after quoted-printable")
			}
			h, _ := headerOf(t, out)
			if h.Get("Content-Transfer-Encoding") != "quoted-printable" || h.Get("Mime-Version") != "1.0" || h.Get("Content-Type") != tc.ct {
				t.Errorf("MIME fields: CTE %q, MIME-Version %q, Content-Type %q",
					h.Get("Content-Transfer-Encoding"), h.Get("Mime-Version"), h.Get("Content-Type"))
			}
			if n := len(h.Values("Content-Transfer-Encoding")); n != 1 {
				t.Errorf("%d Content-Transfer-Encoding fields", n)
			}
			e, err := message.Read(strings.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(e.Body)
			// The copy ends with a line break even where the queued message did not.
			if want := strings.ReplaceAll(body, "\n", "\r\n") + "\r\n"; string(got) != want {
				t.Errorf("decoded body differs:\n%q\nwant\n%q", tail(string(got)), tail(want))
			}
		})
	}
}

const multipartMsg = `From: a@contoso.com
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

plain café
--inner
Content-Type: text/html; charset=utf-8

LONGHTML
--inner--
--outer
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

B64LONG
--outer
Content-Type: message/rfc822

From: inner@example.com
Subject: attached

LONGTEXT
--outer
Content-Type: application/x-data
Content-Transfer-Encoding: 8bit

DATALONG
--outer--
epilogue
`

func TestLongLinesInParts(t *testing.T) {
	htmlLine := html(5000)
	data := []byte(strings.Repeat("binary\x00data\r", 500))
	b64 := base64.StdEncoding.EncodeToString(data) // one line of 8,000 octets
	text := strings.Repeat("word ", 400) + strings.Repeat("x", 2000)
	msg := strings.NewReplacer("LONGHTML", htmlLine, "B64LONG", b64, "LONGTEXT", text, "DATALONG", string(data)).Replace(multipartMsg)
	c, out := prepare(t, msg, policy())
	if !c.Body8Bit {
		t.Errorf("the untouched 8bit part should leave Body8Bit set")
	}
	if !strings.Contains(out, "\r\n--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain café\r\n--inner\r\n") {
		t.Errorf("the part without long lines changed:\n%s", out)
	}
	e, err := message.Read(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	var walk func(e *message.Entity)
	walk = func(e *message.Entity) {
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("multipart: %v", err)
				}
				walk(p)
			}
		}
		if mt, _, _ := e.Header.ContentType(); mt == "message/rfc822" {
			inner, err := message.Read(e.Body)
			if err != nil {
				t.Fatalf("attached message: %v", err)
			}
			e = inner
		}
		b, _ := io.ReadAll(e.Body)
		parts = append(parts, e.Header.Get("Content-Transfer-Encoding")+"|"+string(b))
	}
	walk(e)
	want := []string{
		"8bit|plain café",
		"quoted-printable|" + htmlLine,
		"base64|" + string(data),
		"quoted-printable|" + text,
		"base64|" + string(data),
	}
	if len(parts) != len(want) {
		t.Fatalf("%d parts, want %d", len(parts), len(want))
	}
	for i := range want {
		if parts[i] != want[i] {
			t.Errorf("part %d:\n%.120q…\nwant\n%.120q…", i, parts[i], want[i])
		}
	}
	// The attached message's body was re-encoded inside it.
	if !strings.Contains(out, "Subject: attached\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n") {
		t.Errorf("attached message not re-encoded:\n%s", out)
	}
	if !strings.HasSuffix(out, "\r\n--outer--\r\nepilogue\r\n") || !strings.Contains(out, "\r\n\r\npreamble\r\n--outer\r\n") {
		t.Errorf("preamble or epilogue lost")
	}
}

func TestLongHeaders(t *testing.T) {
	subject := strings.Repeat("Ä", 1500) // 3,000 octets, no white space
	var to []string
	for i := range 200 {
		to = append(to, "user"+strings.Repeat("x", i%7)+"@example.com")
	}
	refs := strings.Repeat("<id@example.com>", 100)
	msg := "From: a@contoso.com\nSubject: " + subject + "\nTo: " + strings.Join(to, ", ") +
		"\nReferences: " + refs + "\nX-Token: " + strings.Repeat("t", 3000) + "\n\nbody\n"
	_, out := prepare(t, msg, policy())
	h, _ := headerOf(t, out)
	if got, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject")); err != nil || got != subject {
		t.Errorf("Subject decodes to %d octets (%v), want the original", len(got), err)
	}
	if got := strings.Join(strings.Fields(h.Get("To")), " "); got != strings.Join(to, ", ") {
		t.Errorf("To changed beyond folding")
	}
	if got := strings.ReplaceAll(h.Get("References"), " ", ""); got != refs {
		t.Errorf("References changed beyond folding: %.80q", got)
	}
	if got := strings.ReplaceAll(h.Get("X-Token"), " ", ""); got != strings.Repeat("t", 3000) {
		t.Errorf("X-Token lost octets")
	}
}

func TestOddMessages(t *testing.T) {
	for _, tc := range []struct{ name, msg, body string }{
		{"no header at all", "just a line of text\nand another\n", "just a line of text\r\nand another\r\n"},
		{"empty", "", ""},
		{"header only", "Subject: x", ""},
		{"no blank line", "Subject: x\nthis is body\n", "this is body\r\n"},
		{"mbox From line", "From someone Sat Nov 21 15:52:18 2026\nSubject: x\n\nbody", "body\r\n"},
		{"leading white space", " indented\nSubject: no\n", " indented\r\nSubject: no\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out := prepare(t, tc.msg, policy())
			h, body := headerOf(t, out)
			if h.Get("From") != mailbox || h.Get("Date") == "" || h.Get("Message-Id") == "" {
				t.Errorf("missing fields not added:\n%s", out)
			}
			if body != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
		})
	}
	// Junk: NUL, lone CR, invalid UTF-8 in a body → quoted-printable, octets kept.
	junk := "Subject: junk\n\nnul\x00 cr\r here \xff\xfe\n"
	c, out := prepare(t, junk, policy())
	e, err := message.Read(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(e.Body)
	if string(got) != "nul\x00 cr\r here \xff\xfe\r\n" || c.Body8Bit || e.Header.Get("Content-Type") != "" {
		t.Errorf("junk body: %q, Body8Bit %v, Content-Type %q", got, c.Body8Bit, e.Header.Get("Content-Type"))
	}
}

func TestMailboxRequired(t *testing.T) {
	if _, err := Prepare(strings.NewReader("x"), 1, Policy{}); err == nil || !strings.Contains(err.Error(), "mailbox") {
		t.Errorf("Prepare without a mailbox: %v", err)
	}
}

func TestShortSource(t *testing.T) {
	if _, err := Prepare(strings.NewReader("Subject: x\n\nbody"), 100, policy()); err == nil {
		t.Errorf("Prepare accepted a source shorter than its size")
	}
}

func FuzzPrepare(f *testing.F) {
	f.Add(multipartMsg)
	f.Add("Subject: x\n\n" + html(3000))
	f.Add("From: root (Cron Daemon)\nTo: root, Root <root>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n" + strings.Repeat("y", 1200) + "\n--b--\n")
	f.Add("Content-Type: message/rfc822\n\nSubject: " + strings.Repeat("z", 1500) + "\n\nx")
	f.Add("\x00\r\r\n\n\xff")
	f.Fuzz(func(t *testing.T, msg string) {
		_, out := prepare(t, msg, policy())
		if _, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(out))); err != nil {
			t.Fatalf("header unreadable: %v\n%q", err, out)
		}
	})
}

func benchmarkPrepare(b *testing.B, msg string) {
	src := strings.NewReader(msg)
	p := policy()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		c, err := Prepare(src, int64(len(msg)), p)
		if err != nil {
			b.Fatal(err)
		}
		r, _ := c.Open()
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// A typical 2 KB message from PHP: only the header changes.
func BenchmarkPrepare2KB(b *testing.B) {
	benchmarkPrepare(b, "From: PHP Sender <php-sender@example.com>\nTo: root\nSubject: report\n\n"+strings.Repeat("a line of text in the body\n", 75))
}

// 5 MB of HTML on long lines: re-encoded as quoted-printable while streaming.
func BenchmarkPrepareLongLines5MB(b *testing.B) {
	benchmarkPrepare(b, "Subject: x\nContent-Type: text/html\n\n"+strings.Repeat(html(5000)+"\n", 1000))
}

func TestCleanMultipartUnchanged(t *testing.T) {
	msg := strings.NewReplacer("LONGHTML", "<p>short</p>", "B64LONG", "aGVsbG8=", "LONGTEXT", "text", "DATALONG", "dätä").Replace(multipartMsg)
	_, out := prepare(t, msg, policy())
	_, body := headerOf(t, out)
	_, want, _ := strings.Cut(msg, "\n\n")
	if lf(body) != want {
		t.Errorf("a multipart message that needs nothing changed was altered:\n%s", body)
	}
}

func TestLimits(t *testing.T) {
	long := strings.Repeat("z", 3000)
	// Nested deeper than maxDepth: the innermost long line is still broken.
	var b strings.Builder
	b.WriteString("Subject: deep\n")
	for i := range maxDepth + 8 {
		b.WriteString("Content-Type: multipart/mixed; boundary=b" + strconv.Itoa(i) + "\n\n--b" + strconv.Itoa(i) + "\n")
	}
	b.WriteString("\n" + long + "\n")
	prepare(t, b.String(), policy())

	// More parts than maxParts, each with a long line.
	b.Reset()
	b.WriteString("Content-Type: multipart/mixed; boundary=p\n\n")
	for range maxParts + 50 {
		b.WriteString("--p\nContent-Type: text/plain\n\n" + long + "\n")
	}
	b.WriteString("--p--\n")
	_, out := prepare(t, b.String(), policy())
	if n := strings.Count(out, "Content-Transfer-Encoding: quoted-printable"); n != maxParts {
		t.Errorf("%d parts re-encoded, want the first %d", n, maxParts)
	}
}
