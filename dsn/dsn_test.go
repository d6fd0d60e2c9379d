package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/exo-sendmail/exo-sendmail/rewrite"
)

const original = "From: PHP Sender <php-sender@example.com>\n" +
	"To: missing@contoso.com, other@contoso.com\n" +
	"Subject: Invoice café\n" +
	"Message-ID: <orig-1@web1.contoso.com>\n" +
	"\n" +
	"SECRET BODY line 1\nline 2\n"

var (
	arrival = time.Date(2026, 11, 21, 15, 52, 18, 0, time.UTC)
	attempt = time.Date(2026, 11, 21, 15, 53, 1, 0, time.UTC)
)

func report() Report {
	return Report{
		ReportingMTA: "web1.contoso.com",
		QueueID:      "4F3A2B",
		Arrival:      arrival,
		EnvID:        "env-77",
		Sender:       "bounce@example.com",
		Reason:       "The server refused the recipients below.",
		Recipients: []Recipient{
			{Addr: "missing@contoso.com", Action: "failed", Status: "5.1.10",
				Diagnostic: "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
				RemoteMTA:  "smtp.office365.com", LastAttempt: attempt},
			{Addr: "other@contoso.com", ORcpt: "rfc822;Other@Contoso.com", Action: "failed",
				Diagnostic: "550-5.7.1 first line\r\n550 5.7.1 second line", RemoteMTA: "smtp.office365.com", LastAttempt: attempt},
		},
		Original: strings.NewReader(original),
		Date:     attempt,
	}
}

func write(t *testing.T, r Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out := b.String()
	if strings.Contains(out, "\r") {
		t.Errorf("the report has CR octets; queued messages have LF line ends")
	}
	return out
}

// parts reads the report with go-message and returns its three parts.
func parts(t *testing.T, out string) (*message.Entity, []*message.Entity, [][]byte) {
	t.Helper()
	e, err := message.Read(strings.NewReader(out))
	if err != nil {
		t.Fatalf("go-message cannot read the report: %v", err)
	}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatalf("the report is not multipart")
	}
	var ps []*message.Entity
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the parts: %v", err)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("reading a part: %v", err)
		}
		ps = append(ps, p)
		bodies = append(bodies, b)
	}
	return e, ps, bodies
}

// statusBlocks parses a message/delivery-status body: a per-message block,
// then one block per recipient, each like a header section.
func statusBlocks(t *testing.T, body []byte) []textproto.Header {
	t.Helper()
	var blocks []textproto.Header
	br := bufio.NewReader(bytes.NewReader(body))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return blocks
		}
		h, err := textproto.ReadHeader(br)
		if err != nil {
			t.Fatalf("delivery-status block %d: %v\n%s", len(blocks), err, body)
		}
		blocks = append(blocks, h)
	}
}

func TestWriteFailedHeadersOnly(t *testing.T) {
	out := write(t, report())
	e, ps, bodies := parts(t, out)

	h := e.Header
	for k, want := range map[string]string{
		"From":           "Mail Delivery System <MAILER-DAEMON@web1.contoso.com>",
		"To":             "bounce@example.com",
		"Subject":        "Undelivered Mail Returned to Sender",
		"Auto-Submitted": "auto-replied",
		"Mime-Version":   "1.0",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if d, err := mail.ParseDate(h.Get("Date")); err != nil || !d.Equal(attempt) {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@web1.contoso.com>") {
		t.Errorf("Message-ID %q", id)
	}
	mt, params, _ := h.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("Content-Type %q %v", mt, params)
	}
	if len(ps) != 3 {
		t.Fatalf("%d parts, want 3", len(ps))
	}

	// 1: for people.
	if mt, params, _ := ps[0].Header.ContentType(); mt != "text/plain" || params["charset"] != "utf-8" {
		t.Errorf("text part: %s %v", mt, params)
	}
	for _, s := range []string{"could not be delivered", "The server refused", "<missing@contoso.com>: failed",
		"RecipientNotFound", "Queue ID: 4F3A2B", "header of your message is attached"} {
		if !bytes.Contains(bodies[0], []byte(s)) {
			t.Errorf("text part lacks %q:\n%s", s, bodies[0])
		}
	}

	// 2: the delivery status.
	if mt, _, _ := ps[1].Header.ContentType(); mt != "message/delivery-status" {
		t.Errorf("second part is %s", mt)
	}
	blocks := statusBlocks(t, bodies[1])
	if len(blocks) != 3 {
		t.Fatalf("%d delivery-status blocks, want 3:\n%s", len(blocks), bodies[1])
	}
	msg := blocks[0]
	for k, want := range map[string]string{
		"Reporting-MTA":        "dns; web1.contoso.com",
		"X-Queue-ID":           "4F3A2B",
		"Original-Envelope-Id": "env-77",
	} {
		if got := msg.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if d, err := mail.ParseDate(msg.Get("Arrival-Date")); err != nil || !d.Equal(arrival) {
		t.Errorf("Arrival-Date %q: %v", msg.Get("Arrival-Date"), err)
	}
	want := []map[string]string{{
		"Final-Recipient": "rfc822; missing@contoso.com",
		"Action":          "failed",
		"Status":          "5.1.10",
		"Remote-MTA":      "dns; smtp.office365.com",
		"Diagnostic-Code": "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
	}, {
		"Original-Recipient": "rfc822; Other@Contoso.com",
		"Final-Recipient":    "rfc822; other@contoso.com",
		"Action":             "failed",
		"Status":             "5.7.1", // from the reply's enhanced code
		"Diagnostic-Code":    "smtp; 550-5.7.1 first line 550 5.7.1 second line",
	}}
	for i, w := range want {
		rb := blocks[i+1]
		for k, v := range w {
			if got := strings.Join(strings.Fields(rb.Get(k)), " "); got != v {
				t.Errorf("recipient %d %s: %q, want %q", i, k, got, v)
			}
		}
		if d, err := mail.ParseDate(rb.Get("Last-Attempt-Date")); err != nil || !d.Equal(attempt) {
			t.Errorf("recipient %d Last-Attempt-Date %q: %v", i, rb.Get("Last-Attempt-Date"), err)
		}
	}

	// 3: the original's header, not its body.
	if mt, _, _ := ps[2].Header.ContentType(); mt != "text/rfc822-headers" {
		t.Errorf("third part is %s", mt)
	}
	if bytes.Contains(bodies[2], []byte("SECRET BODY")) {
		t.Errorf("headers-only report contains the body")
	}
	if wantH, _, _ := strings.Cut(original, "\n\n"); strings.TrimSpace(string(bodies[2])) != wantH {
		t.Errorf("returned header:\n%s\nwant\n%s", bodies[2], wantH)
	}
	if ps[2].Header.Get("Content-Transfer-Encoding") != "8bit" || e.Header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("8-bit original not declared 8bit")
	}
}

func TestWriteFull(t *testing.T) {
	r := report()
	r.Ret = "FULL"
	_, ps, bodies := parts(t, write(t, r))
	if mt, _, _ := ps[2].Header.ContentType(); mt != "message/rfc822" {
		t.Fatalf("third part is %s, want message/rfc822", mt)
	}
	if string(bodies[2]) != original {
		t.Errorf("returned message:\n%q\nwant\n%q", bodies[2], original)
	}
	inner, err := message.Read(bytes.NewReader(bodies[2]))
	if err != nil || inner.Header.Get("Message-Id") != "<orig-1@web1.contoso.com>" {
		t.Errorf("returned message unreadable: %v", err)
	}

	// Over the cap: the header only.
	r = report()
	r.Ret, r.MaxOriginal = "FULL", 100
	out := write(t, r)
	_, ps, bodies = parts(t, out)
	if mt, _, _ := ps[2].Header.ContentType(); mt != "text/rfc822-headers" || bytes.Contains(bodies[2], []byte("SECRET")) {
		t.Errorf("an original over MaxOriginal was returned whole (%s)", mt)
	}
	if !strings.Contains(out, "The header of your message is attached.") {
		t.Errorf("text part does not say only the header is attached")
	}
}

func TestWriteDelayed(t *testing.T) {
	r := report()
	r.Original = nil
	r.RetryUntil = arrival.Add(5 * 24 * time.Hour)
	r.Recipients = []Recipient{{Addr: "slow@contoso.com", Action: "Delayed", Diagnostic: "421 4.3.2 Service not available"},
		{Addr: "x@contoso.com", Action: "delayed", Diagnostic: "connection refused"}}
	e, ps, bodies := parts(t, write(t, r))
	if got := e.Header.Get("Subject"); got != "Delayed Mail (still being retried)" {
		t.Errorf("Subject %q", got)
	}
	if len(ps) != 2 {
		t.Errorf("%d parts without an original, want 2", len(ps))
	}
	blocks := statusBlocks(t, bodies[1])
	if blocks[1].Get("Action") != "delayed" || blocks[1].Get("Status") != "4.3.2" {
		t.Errorf("delayed recipient: %v %v", blocks[1].Get("Action"), blocks[1].Get("Status"))
	}
	if blocks[2].Get("Status") != "4.0.0" || blocks[2].Get("Diagnostic-Code") != "X-exo-sendmail; connection refused" {
		t.Errorf("status without a reply: %q %q", blocks[2].Get("Status"), blocks[2].Get("Diagnostic-Code"))
	}
	if d, err := mail.ParseDate(blocks[1].Get("Will-Retry-Until")); err != nil || !d.Equal(r.RetryUntil) {
		t.Errorf("Will-Retry-Until %q", blocks[1].Get("Will-Retry-Until"))
	}
	if !bytes.Contains(bodies[0], []byte("you do not need to send it again")) {
		t.Errorf("text part of a delay:\n%s", bodies[0])
	}
}

func TestNonASCII(t *testing.T) {
	r := report()
	r.Reason = "Lebensdauer von 5 Tagen überschritten — letzte Antwort unten"
	r.Recipients[0].Diagnostic = "smtp; 550 5.1.10 Empfänger unbekannt: müller@contoso.com"
	r.Recipients[0].Addr = "müller@contoso.com"
	out := write(t, r)
	_, ps, bodies := parts(t, out)
	if ps[0].Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("non-ASCII text part not quoted-printable")
	}
	if !bytes.Contains(bodies[0], []byte("Tagen überschritten")) || !bytes.Contains(bodies[0], []byte("Empfänger unbekannt")) {
		t.Errorf("text part does not decode to the UTF-8 text:\n%s", bodies[0])
	}
	for _, c := range bodies[1] {
		if c >= 0x80 {
			t.Fatalf("delivery-status part is not 7-bit:\n%s", bodies[1])
		}
	}
	blocks := statusBlocks(t, bodies[1])
	if got := blocks[1].Get("Diagnostic-Code"); got != `smtp; 550 5.1.10 Empf\x{E4}nger unbekannt: m\x{FC}ller@contoso.com` {
		t.Errorf("Diagnostic-Code %q", got)
	}
	if got := blocks[1].Get("Final-Recipient"); got != `rfc822; m\x{FC}ller@contoso.com` {
		t.Errorf("Final-Recipient %q", got)
	}
}

func TestLongDiagnostic(t *testing.T) {
	r := report()
	r.Recipients[0].Diagnostic = "smtp; 550 5.0.0 " + strings.Repeat("word ", 300) + strings.Repeat("x", 2500)
	out := write(t, r)
	head, _, _ := strings.Cut(out, "Content-Type: text/rfc822-headers")
	for i, l := range strings.Split(head, "\n") {
		if len(l) > 998 {
			t.Errorf("report line %d has %d octets", i+1, len(l))
		}
	}
	_, _, bodies := parts(t, out)
	blocks := statusBlocks(t, bodies[1])
	if got := strings.ReplaceAll(blocks[1].Get("Diagnostic-Code"), " ", ""); got != strings.ReplaceAll(r.Recipients[0].Diagnostic, " ", "") {
		t.Errorf("long Diagnostic-Code lost octets")
	}
}

func TestRefused(t *testing.T) {
	r := report()
	r.Sender = ""
	if err := Write(io.Discard, r); err == nil {
		t.Errorf("Write notified the null sender")
	}
	r = report()
	r.Recipients = nil
	if err := Write(io.Discard, r); err == nil {
		t.Errorf("Write accepted a report without recipients")
	}
	r = report()
	r.Original = io.MultiReader(strings.NewReader("Subject: x\n"), errReader{})
	if err := Write(io.Discard, r); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("an error reading the original was not returned: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestIsBounce(t *testing.T) {
	first := write(t, report())
	if !IsBounce(strings.NewReader(first)) {
		t.Errorf("our own report is not recognised")
	}
	// A report about a report (e.g. one that came back through sendmail).
	r := report()
	r.Original, r.Ret = strings.NewReader(first), "FULL"
	second := write(t, r)
	if !IsBounce(strings.NewReader(second)) {
		t.Errorf("a DSN of a DSN is not recognised")
	}
	_, _, bodies := parts(t, second)
	if !IsBounce(bytes.NewReader(bodies[2])) {
		t.Errorf("the returned DSN is not recognised")
	}
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{original, false},
		{"Content-Type: multipart/report;\n report-type=\"delivery-status\";\n\tboundary=\"x\"\nFrom: postmaster@contoso.com\n\n", true},
		{"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\n\n", true},
		{"Content-Type: multipart/report; report-type=feedback-report; boundary=x\n\n", false},
		{"Auto-Submitted: auto-replied (vacation)\nSubject: Out of office\n\n", true},
		{"Auto-Submitted: auto-generated\nSubject: Cron <root@web1>\n\n", false},
		{"Auto-Submitted: no\n\n", false},
		{"Subject: x\n\nContent-Type: multipart/report; report-type=delivery-status\n", false}, // in the body
		{"", false},
		{"\x00\xff junk", false},
	} {
		if got := IsBounce(strings.NewReader(tc.header)); got != tc.want {
			t.Errorf("IsBounce(%.50q) = %v", tc.header, got)
		}
	}
}

// The report is delivered like any queued message: rewrite prepares it, and
// a returned original with an over-long line is re-encoded inside it.
func TestReportThroughRewrite(t *testing.T) {
	r := report()
	r.Ret = "FULL"
	long := strings.Repeat("<p>long html</p>", 400)
	r.Original = strings.NewReader("From: a@example.com\nSubject: s\n\n" + long + "\n")
	out := write(t, r)
	c, err := rewrite.Prepare(strings.NewReader(out), int64(len(out)), rewrite.Policy{Mailbox: "noreply@contoso.com", Hostname: "web1.contoso.com"})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := c.Open()
	copied, _ := io.ReadAll(rc)
	for i, l := range strings.Split(string(copied), "\r\n") {
		if len(l) > 998 {
			t.Fatalf("copy line %d has %d octets", i+1, len(l))
		}
	}
	e, ps, bodies := parts(t, string(copied))
	if !IsBounce(bytes.NewReader(copied)) || e.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("the prepared report no longer looks like a report")
	}
	inner, err := message.Read(bytes.NewReader(bodies[2]))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(inner.Body)
	if string(got) != long+"\r\n" || len(ps) != 3 {
		t.Errorf("returned original changed by re-encoding")
	}
}

func FuzzWrite(f *testing.F) {
	f.Add(original, "smtp; 550 5.1.10 RecipientNotFound", "FULL")
	f.Add("\x00\xff\n\n", "Empfänger\r\nunbekannt", "HDRS")
	f.Add("Subject: "+strings.Repeat("x", 3000)+"\n\nbody", strings.Repeat("y", 2000), "")
	f.Fuzz(func(t *testing.T, orig, diag, ret string) {
		r := report()
		r.Original, r.Ret, r.MaxOriginal = strings.NewReader(orig), ret, 512
		r.Recipients[0].Diagnostic = diag
		var b bytes.Buffer
		if err := Write(&b, r); err != nil {
			t.Fatal(err)
		}
		if !IsBounce(bytes.NewReader(b.Bytes())) {
			t.Fatalf("report not recognised as a bounce")
		}
		_, ps, bodies := parts(t, b.String())
		if len(ps) != 3 {
			t.Fatalf("%d parts", len(ps))
		}
		for _, c := range bodies[1] {
			if c >= 0x80 {
				t.Fatalf("delivery-status part not 7-bit")
			}
		}
		statusBlocks(t, bodies[1])
		IsBounce(strings.NewReader(orig))
	})
}
