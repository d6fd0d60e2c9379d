package flusher

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

const (
	clientID = "3f2a1c9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
	secret   = "emulated~secret.value_123"
)

// fixture is a tenant in the emulator and a configuration pointing at it.
type fixture struct {
	t    *testing.T
	emu  *emulator.Emulator
	dir  string
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFixture(t *testing.T, mutate func(*emulator.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := emulator.Config{
		Dir:    filepath.Join(dir, "emulator"),
		Tenant: "contoso.onmicrosoft.com",
		Apps: []emulator.App{{
			ClientID: clientID, Secrets: []emulator.Secret{{Value: secret}},
			SMTPRole: true, GraphRole: true, Mailboxes: []string{"alerts@contoso.com"},
		}},
		Mailboxes: []emulator.Mailbox{{Address: "alerts@contoso.com", SendAs: []string{"noreply@contoso.com"}}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	emu, err := emulator.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600)
	return &fixture{t: t, emu: emu, dir: dir, logs: &syncBuffer{}}
}

// config returns a configuration for the emulator; extra is appended to
// the account block.
func (fx *fixture) config(extra string) *conf.Config {
	src := fmt.Sprintf(`
spool_dir = "spool"
state_dir = "state"
hostname = "web1.contoso.com"
[queue]
retry_min = "1s"
retry_max = "2s"
[aliases]
root = "ops@contoso.com"
%s%s
`, fx.emu.AccountTOML("contoso", clientID, "secret", "alerts@contoso.com", "noreply@contoso.com"), extra)
	c, err := conf.Parse(filepath.Join(fx.dir, "sendmail.toml"), []byte(src))
	if err != nil {
		fx.t.Fatal(err)
	}
	return c
}

func (fx *fixture) flusher(c *conf.Config) *Flusher {
	return New(c, Options{Log: log.New(fx.logs, "", 0)})
}

func enqueue(t *testing.T, c *conf.Config, env queue.Envelope, msg string) string {
	t.Helper()
	if env.Submitted.IsZero() {
		env.Submitted = time.Now()
	}
	env.UID = os.Getuid()
	id, err := queue.Open(c.SpoolDir).Enqueue(&env, func(w io.Writer) error {
		_, err := io.WriteString(w, msg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func rcpts(addrs ...string) []queue.Recipient {
	var out []queue.Recipient
	for _, a := range addrs {
		out = append(out, queue.Recipient{Addr: a})
	}
	return out
}

// queued lists the queue, after picking up what waits in drop/.
func queued(t *testing.T, c *conf.Config) []string {
	t.Helper()
	s := queue.Open(c.SpoolDir)
	if _, _, err := s.Pickup(); err != nil {
		t.Fatal(err)
	}
	ids, err := s.IDs()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

const phpMessage = "To: root, someone@example.com\nSubject: disk almost full\nFrom: www-data@web1.contoso.com\n\nSpace is low.\n"

func TestDeliverRewritesAndRemoves(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("")
	enqueue(t, c, queue.Envelope{Sender: "www-data@web1.contoso.com", Recipients: rcpts("root", "someone@example.com", "hidden@example.com")}, phpMessage)
	if err := fx.flusher(c).RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := fx.emu.Messages()
	if len(msgs) != 1 {
		t.Fatalf("emulator got %d messages; log:\n%s", len(msgs), fx.logs)
	}
	m := msgs[0]
	if m.MailFrom != "alerts@contoso.com" || strings.Join(m.Rcpts, " ") != "ops@contoso.com someone@example.com hidden@example.com" {
		t.Errorf("envelope: from %s to %v", m.MailFrom, m.Rcpts)
	}
	data := string(m.Data)
	// A local sender (www-data@this host) is kept visible but is no useful
	// Reply-To.
	for _, want := range []string{`"www-data@web1.contoso.com" <alerts@contoso.com>`, "X-Original-From: www-data@web1.contoso.com", "To: ops@contoso.com", "Message-ID:", "Date:", "\r\n\r\nSpace is low.\r\n"} {
		if !strings.Contains(data, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(strings.ToLower(data), "bcc:") || strings.Contains(data, "hidden@") {
		t.Errorf("an envelope-only recipient leaked into the headers:\n%s", data)
	}
	if ids := queued(t, c); len(ids) != 0 {
		t.Errorf("delivered message still queued: %v", ids)
	}
	if !strings.Contains(fx.logs.String(), "status=sent") || !strings.Contains(fx.logs.String(), "orig_to=<root>") {
		t.Errorf("log lacks the delivery lines:\n%s", fx.logs)
	}
}

func TestRecipientFailuresRetryOnlyThoseAndBounce(t *testing.T) {
	fx := newFixture(t, nil)
	fx.emu.SetFaults(emulator.Faults{RcptTemp: []string{"later@example.com"}, RcptPerm: []string{"nobody@example.com"}})
	c := fx.config("")
	id := enqueue(t, c, queue.Envelope{Sender: "app@web1.contoso.com", Recipients: rcpts("ok@example.com", "later@example.com", "nobody@example.com")},
		"Subject: report\nFrom: app@web1.contoso.com\n\nbody\n")
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	st, _ := queue.Open(c.SpoolDir).LoadState(id)
	status := map[string]string{}
	for _, r := range st.Recipients {
		status[r.Addr] = r.Status
	}
	if status["ok@example.com"] != queue.Sent || status["later@example.com"] != queue.Pending || status["nobody@example.com"] != queue.Bounced {
		t.Fatalf("recipient states %v; log:\n%s", status, fx.logs)
	}
	// The bounce was queued for the sender; the retry goes to later@ only.
	fx.emu.SetFaults(emulator.Faults{})
	f.RunOnce(context.Background())
	var toLater, bounce int
	for _, m := range fx.emu.Messages() {
		switch {
		case len(m.Rcpts) == 1 && m.Rcpts[0] == "later@example.com":
			toLater++
		case len(m.Rcpts) == 1 && m.Rcpts[0] == "app@web1.contoso.com":
			bounce++
			if !strings.Contains(string(m.Data), "multipart/report") || !strings.Contains(string(m.Data), "nobody@example.com") || !strings.Contains(string(m.Data), "5.1.10") {
				t.Errorf("bounce lacks the report:\n%s", m.Data)
			}
		}
	}
	if toLater != 1 || bounce != 1 || len(fx.emu.Messages()) != 3 {
		t.Errorf("want 3 deliveries (first, retry to later@, one bounce), got %d (later %d, bounce %d)", len(fx.emu.Messages()), toLater, bounce)
	}
	if ids := queued(t, c); len(ids) != 0 {
		t.Errorf("queue not empty: %v", ids)
	}
}

func TestConfigErrorHoldsMailAndNeverBounces(t *testing.T) {
	fx := newFixture(t, nil)
	os.WriteFile(filepath.Join(fx.dir, "secret"), []byte("the-secret-ID-not-its-value\n"), 0o600)
	c := fx.config("")
	// Even a message past its lifetime is not bounced through a broken
	// account before the lifetime ends; this one is fresh.
	id := enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts("ops@contoso.com")}, "Subject: x\n\nx\n")
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	if n := len(fx.emu.Messages()); n != 0 {
		t.Fatalf("%d messages sent with a wrong secret", n)
	}
	if ids := queued(t, c); len(ids) != 1 || ids[0] != id {
		t.Fatalf("the message must stay queued: %v", ids)
	}
	st, _ := queue.Open(c.SpoolDir).LoadState(id)
	if st.ErrorClass != "configuration" || !strings.Contains(st.LastError, "7000215") {
		t.Errorf("state must say what is wrong: %+v", st)
	}
	status := AccountStatus(c, "contoso")
	if status == nil || !strings.Contains(status.Remedy+status.Error, "Value") {
		t.Errorf("account status must carry the remedy: %+v", status)
	}
	if strings.Contains(fx.logs.String(), "the-secret-ID-not-its-value") {
		t.Error("the secret reached the log")
	}
	if !strings.Contains(fx.logs.String(), "account contoso: delivery paused") {
		t.Errorf("one line must say the account is paused:\n%s", fx.logs)
	}
	// Fixed secret, new run: delivered.
	os.WriteFile(filepath.Join(fx.dir, "secret"), []byte(secret), 0o600)
	fx.flusher(c).RunOnce(context.Background())
	if len(fx.emu.Messages()) != 1 || len(queued(t, c)) != 0 {
		t.Errorf("after the fix: %d delivered, %d queued", len(fx.emu.Messages()), len(queued(t, c)))
	}
}

func TestLifetimeExpiryBouncesButNeverABounce(t *testing.T) {
	fx := newFixture(t, func(c *emulator.Config) { c.Apps[0].Secrets[0].Value = "other" })
	c := fx.config("")
	old := time.Now().Add(-6 * 24 * time.Hour)
	enqueue(t, c, queue.Envelope{Sender: "app@web1.contoso.com", Recipients: rcpts("x@example.com"), Submitted: old}, "Subject: old\n\nx\n")
	enqueue(t, c, queue.Envelope{Sender: "", IsDSN: true, Recipients: rcpts("y@example.com"), Submitted: old}, "Subject: a bounce\n\nx\n")
	enqueue(t, c, queue.Envelope{Sender: "app@web1.contoso.com", Recipients: []queue.Recipient{{Addr: "z@example.com", Notify: "NEVER"}}, Submitted: old}, "Subject: never\n\nx\n")
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	// All three expired and left the queue; only the first produced a DSN,
	// which now waits (the account is broken) addressed to the sender.
	ids := queued(t, c)
	if len(ids) != 1 {
		t.Fatalf("want only the DSN queued, got %v; log:\n%s", ids, fx.logs)
	}
	e, err := queue.Open(c.SpoolDir).Open(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	body, _ := io.ReadAll(e.Message())
	if !e.Envelope.IsDSN || e.Envelope.Sender != "" || e.Envelope.Recipients[0].Addr != "app@web1.contoso.com" ||
		!strings.Contains(string(body), "lifetime") {
		t.Errorf("DSN envelope %+v body:\n%s", e.Envelope, body)
	}
}

func TestTokenFetchedOnceAcrossRuns(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("")
	for i := range 10 {
		enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts(fmt.Sprintf("r%d@example.com", i))}, "Subject: x\n\nx\n")
		fx.flusher(c).RunOnce(context.Background()) // a new process each time, as sendmail -q is
	}
	if got := fx.emu.Stats().TokenRequests; got != 1 {
		t.Errorf("token requests = %d over 10 queue runs, want 1", got)
	}
	if len(fx.emu.Messages()) != 10 {
		t.Errorf("delivered %d of 10", len(fx.emu.Messages()))
	}
}

func TestConnectionReusedForABacklog(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("max_connections = 1")
	for i := range 20 {
		enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts(fmt.Sprintf("r%d@example.com", i))}, "Subject: x\n\nx\n")
	}
	fx.flusher(c).RunOnce(context.Background())
	st := fx.emu.Stats()
	if len(fx.emu.Messages()) != 20 || st.SMTPConnections != 1 {
		t.Errorf("20 messages over %d connections (want 1), %d delivered", st.SMTPConnections, len(fx.emu.Messages()))
	}
}

func TestGraphAccount(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config(`transport = "graph"`)
	enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts("root", "bcc-only@example.com")}, "To: root\nSubject: via graph\n\nx\n")
	fx.flusher(c).RunOnce(context.Background())
	msgs := fx.emu.Messages()
	if len(msgs) != 1 || msgs[0].Via != "graph" {
		t.Fatalf("messages %+v; log:\n%s", msgs, fx.logs)
	}
	if strings.Join(msgs[0].Rcpts, ",") != "ops@contoso.com,bcc-only@example.com" {
		t.Errorf("Graph recipients %v", msgs[0].Rcpts)
	}
}

func TestHeldMessageIsNotAttempted(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("")
	id := enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts("a@example.com")}, "Subject: x\n\nx\n")
	s := queue.Open(c.SpoolDir)
	s.Pickup()
	if err := s.SetHeld(id, true); err != nil {
		t.Fatal(err)
	}
	fx.flusher(c).RunOnce(context.Background())
	if len(fx.emu.Messages()) != 0 {
		t.Fatal("a held message was delivered")
	}
	s.SetHeld(id, false)
	fx.flusher(c).RunOnce(context.Background())
	if len(fx.emu.Messages()) != 1 {
		t.Fatal("a released message was not delivered")
	}
}

func TestDaemonPicksUpNewMail(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("")
	f := fx.flusher(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Daemon(ctx, DaemonOptions{}) }()
	// Wait until the daemon holds the lock, then queue.
	for !queue.Open(c.SpoolDir).FlusherRunning() {
		time.Sleep(5 * time.Millisecond)
	}
	if err := New(c, Options{}).Daemon(context.Background(), DaemonOptions{}); err != ErrRunning {
		t.Errorf("a second daemon: %v, want ErrRunning", err)
	}
	enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts("a@example.com")}, "Subject: x\n\nx\n")
	deadline := time.Now().Add(20 * time.Second)
	for len(fx.emu.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(fx.emu.Messages()) != 1 {
		t.Fatalf("the daemon did not deliver new mail; log:\n%s", fx.logs)
	}
}

// TestBounceGoesBackThroughTheSameAccount: when every account has senders,
// a bounce (null sender) must still leave, through the account of the
// message it reports on.
func TestBounceGoesBackThroughTheSameAccount(t *testing.T) {
	fx := newFixture(t, nil)
	fx.emu.SetFaults(emulator.Faults{RcptPerm: []string{"nobody@example.com"}})
	c := fx.config(fmt.Sprintf(`senders = ["app@web1.contoso.com"]

[[account]]
name = "other"
tenant = "contoso.onmicrosoft.com"
client_id = %q
client_secret_file = "secret"
mailbox = "alerts@contoso.com"
senders = ["someone-else@example.com"]
token_url = %q
smtp_server = %q
ca_file = %q
`, clientID, fx.emu.TokenURL, fx.emu.SMTPAddr, fx.emu.CAFile))
	enqueue(t, c, queue.Envelope{Sender: "app@web1.contoso.com", Recipients: rcpts("nobody@example.com")}, "Subject: x\n\nx\n")
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	f.RunOnce(context.Background()) // the bounce, picked up from drop/
	msgs := fx.emu.Messages()
	if len(msgs) != 1 || msgs[0].Rcpts[0] != "app@web1.contoso.com" || !strings.Contains(string(msgs[0].Data), "multipart/report") {
		t.Fatalf("want the bounce delivered to the sender, got %d messages; log:\n%s", len(msgs), fx.logs)
	}
	if ids := queued(t, c); len(ids) != 0 {
		t.Errorf("queue not empty: %v", ids)
	}
}

// TestNoBounceForAReport: a delivery report submitted by a local program
// with a real sender is not answered with another report.
func TestNoBounceForAReport(t *testing.T) {
	fx := newFixture(t, nil)
	fx.emu.SetFaults(emulator.Faults{RcptPerm: []string{"nobody@example.com"}})
	c := fx.config("")
	enqueue(t, c, queue.Envelope{Sender: "app@web1.contoso.com", Recipients: rcpts("nobody@example.com")},
		"Subject: Undelivered Mail\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n\nx\n--b--\n")
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	f.RunOnce(context.Background())
	if n := len(fx.emu.Messages()); n != 0 {
		t.Errorf("%d messages sent: a report was bounced", n)
	}
	if ids := queued(t, c); len(ids) != 0 {
		t.Errorf("queue not empty: %v", ids)
	}
}

// TestRecipientsSplitPerMessageLimit: more recipients than
// recipients_per_message go out in several transactions.
func TestRecipientsSplitPerMessageLimit(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("recipients_per_message = 2")
	var to []string
	for i := range 5 {
		to = append(to, fmt.Sprintf("r%d@example.com", i))
	}
	enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts(to...)}, "Subject: x\n\nx\n")
	fx.flusher(c).RunOnce(context.Background())
	msgs := fx.emu.Messages()
	if len(msgs) != 3 || len(msgs[0].Rcpts) != 2 || len(msgs[1].Rcpts) != 2 || len(msgs[2].Rcpts) != 1 {
		t.Fatalf("want transactions of 2, 2, 1 recipients, got %d messages", len(msgs))
	}
	if ids := queued(t, c); len(ids) != 0 {
		t.Errorf("queue not empty: %v", ids)
	}
}

// TestDailyRecipientBudget: past recipients_per_day the rest waits, and
// says until when, instead of running into Exchange's quota.
func TestDailyRecipientBudget(t *testing.T) {
	fx := newFixture(t, nil)
	c := fx.config("recipients_per_day = 3\nrecipients_per_message = 1")
	id := enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts("a@example.com", "b@example.com", "c@example.com", "d@example.com")}, "Subject: x\n\nx\n")
	fx.flusher(c).RunOnce(context.Background())
	if n := len(fx.emu.Messages()); n != 3 {
		t.Fatalf("%d delivered, want 3 within the budget", n)
	}
	st, _ := queue.Open(c.SpoolDir).LoadState(id)
	if !strings.Contains(st.LastError, "recipients_per_day limit of 3") || st.NextAttempt.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("the rest must wait a day and say why: %+v", st)
	}
	// The ledger is on disk: a new process (queue run) respects it too.
	fx.flusher(c).RunOnce(context.Background())
	if n := len(fx.emu.Messages()); n != 3 {
		t.Errorf("%d delivered after a second run, want still 3", n)
	}
}

// TestConnectionLimitBacksOff: with more connections configured than
// Exchange allows, the 4th gets 432 4.3.2; the flusher gives that
// connection up and everything is still delivered.
func TestConnectionLimitBacksOff(t *testing.T) {
	fx := newFixture(t, func(c *emulator.Config) { c.Limits = true })
	c := fx.config("max_connections = 6\nmessages_per_minute = 0\nrecipients_per_day = 0")
	// Fewer than Exchange's 30 a minute, which the emulator also enforces.
	const n = 24
	for i := range n {
		enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts(fmt.Sprintf("r%d@example.com", i))}, "Subject: x\n\nx\n")
	}
	f := fx.flusher(c)
	f.RunOnce(context.Background())
	if fx.emu.Stats().ThrottleReplies == 0 {
		t.Fatal("the emulator never refused a connection: the test proves nothing")
	}
	// Throttled messages wait for the pause; a later run delivers them.
	for range 5 {
		if len(queued(t, c)) == 0 {
			break
		}
		fx.flusher(c).RunOnce(context.Background())
	}
	if got, q := len(fx.emu.Messages()), len(queued(t, c)); got != n || q != 0 {
		t.Errorf("delivered %d of %d, %d still queued; log:\n%s", got, n, q, fx.logs)
	}
}

// TestUnreachableEntraPausesTheAccount: with the token endpoint down, a
// backlog costs one token request, not one per message; everything waits
// with the reason, and goes out once Entra answers again.
func TestUnreachableEntraPausesTheAccount(t *testing.T) {
	fx := newFixture(t, nil)
	fx.emu.SetFaults(emulator.Faults{TokenDown: true})
	c := fx.config("")
	var ids []string
	for i := range 20 {
		ids = append(ids, enqueue(t, c, queue.Envelope{Sender: "root", Recipients: rcpts(fmt.Sprintf("r%d@example.com", i))}, "Subject: x\n\nx\n"))
	}
	fx.flusher(c).RunOnce(context.Background())
	// At most one per connection: they start in parallel.
	if n := fx.emu.Stats().TokenRequests; n > c.Accounts[0].MaxConnections {
		t.Errorf("%d token requests for a backlog of 20 while Entra is down: the account must pause", n)
	}
	for _, id := range ids {
		st, _ := queue.Open(c.SpoolDir).LoadState(id)
		if st.LastError == "" || st.NextAttempt.Before(time.Now()) {
			t.Fatalf("%s waits without a reason or a next attempt: %+v", id, st)
		}
	}
	fx.emu.SetFaults(emulator.Faults{})
	fx.flusher(c).RunOnce(context.Background())
	if n, q := len(fx.emu.Messages()), len(queued(t, c)); n != 20 || q != 0 {
		t.Errorf("after Entra came back: %d delivered, %d queued", n, q)
	}
}
