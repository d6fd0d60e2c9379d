package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// tenantSite is a site whose configuration has an account at an
// in-process Exchange Online emulator.
func tenantSite(t *testing.T, flusher string) (*site, *emulator.Emulator) {
	t.Helper()
	dir, err := os.MkdirTemp("", "exo-sendmail-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	const clientID, secret = "3f2a1c9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", "emulated~secret"
	emu, err := emulator.Start(emulator.Config{
		Dir: filepath.Join(dir, "emulator"), Tenant: "contoso.onmicrosoft.com",
		Apps:      []emulator.App{{ClientID: clientID, Secrets: []emulator.Secret{{Value: secret}}, SMTPRole: true, Mailboxes: []string{"alerts@contoso.com"}}},
		Mailboxes: []emulator.Mailbox{{Address: "alerts@contoso.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret), 0o600)
	s := &site{dir: dir, config: filepath.Join(dir, "sendmail.toml"), spool: filepath.Join(dir, "spool")}
	toml := fmt.Sprintf(`spool_dir = "spool"
state_dir = "state"
hostname = %q
[aliases]
root = "ops@contoso.com"
[flusher]
%s
%s`, testHostname, flusher, emu.AccountTOML("contoso", clientID, "secret", "alerts@contoso.com"))
	if err := os.WriteFile(s.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, emu
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-F]{19})`)

// submit queues a message with sendmail -t -i -v and returns its ID.
func (s *site) submit(t *testing.T, msg string) string {
	t.Helper()
	r := s.run(t, invocation{argv: []string{"sendmail", "-t", "-i", "-v"}, stdin: []byte(msg)})
	m := queuedAs.FindStringSubmatch(r.stderr)
	if r.code != 0 || m == nil {
		t.Fatalf("sendmail: exit %d, %s", r.code, r.stderr)
	}
	return m[1]
}

// TestAutoStartedFlusherDelivers: single-user mode as a container runs it:
// no daemon; sendmail starts a flusher itself, which delivers and exits
// once the queue is empty.
func TestAutoStartedFlusherDelivers(t *testing.T) {
	s, emu := tenantSite(t, "auto_start = true")
	r := s.run(t, invocation{argv: []string{"sendmail", "-t", "-i"}, stdin: []byte("To: root\nSubject: cron output\n\nhello\n"),
		env: []string{idleExitEnv + "=300ms"}})
	if r.code != 0 {
		t.Fatalf("sendmail: exit %d, %s", r.code, r.stderr)
	}
	spool := queue.Open(s.spool)
	deadline := time.Now().Add(30 * time.Second)
	for (len(emu.Messages()) == 0 || spool.FlusherRunning()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(emu.Messages()); n != 1 || emu.Messages()[0].Rcpts[0] != "ops@contoso.com" {
		t.Fatalf("the auto-started flusher delivered %d messages", n)
	}
	if spool.FlusherRunning() {
		t.Error("the auto-started flusher did not exit once the queue was empty")
	}
	if ids, _ := spool.IDs(); len(ids) != 0 {
		t.Errorf("queue not empty: %v", ids)
	}
}

// TestQueueAdministration: mailq, hold, release, show, retry, delete, and a
// queue run, through the binary as an administrator uses them.
func TestQueueAdministration(t *testing.T) {
	s, emu := tenantSite(t, "auto_start = false")
	keep := s.submit(t, "To: someone@example.com\nSubject: keep me\n\nbody\n")
	drop := s.submit(t, "To: other@example.com\nSubject: delete me\n\nbody\n")
	admin := func(args ...string) result {
		return s.run(t, invocation{argv: append([]string{"exo-sendmail", "-C", s.config}, args...)})
	}
	if r := admin("queue", "hold", keep); r.code != 0 || r.stdout != keep+": held\n" {
		t.Fatalf("hold: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r := s.run(t, invocation{argv: []string{"mailq"}})
	if !strings.Contains(r.stdout, keep+"!") || !strings.Contains(r.stdout, "held by the administrator") || !strings.Contains(r.stdout, "in 2 Requests") {
		t.Errorf("mailq after hold:\n%s", r.stdout)
	}
	if r := admin("queue", "show", drop); r.code != 0 || !strings.Contains(r.stdout, "Subject: delete me") || !strings.Contains(r.stdout, "recipient:    other@example.com") {
		t.Errorf("show: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := admin("queue", "delete", drop); r.code != 0 {
		t.Errorf("delete: exit %d %s", r.code, r.stderr)
	}
	if r := admin("queue", "show", drop); r.code == 0 || !strings.Contains(r.stderr, "no such message") {
		t.Errorf("show after delete: exit %d %s", r.code, r.stderr)
	}
	// A queue run skips the held message.
	if r := s.run(t, invocation{argv: []string{"sendmail", "-q"}}); r.code != 0 || len(emu.Messages()) != 0 {
		t.Fatalf("queue run: exit %d, %d delivered (the held one must wait; the deleted one is gone)", r.code, len(emu.Messages()))
	}
	if r := admin("queue", "release", keep); r.code != 0 {
		t.Fatalf("release: exit %d %s", r.code, r.stderr)
	}
	if r := s.run(t, invocation{argv: []string{"sendmail", "-q"}}); r.code != 0 || len(emu.Messages()) != 1 {
		t.Fatalf("queue run after release: exit %d, %d delivered", r.code, len(emu.Messages()))
	}
	if r := s.run(t, invocation{argv: []string{"mailq"}}); r.stdout != "Mail queue is empty\n" {
		t.Errorf("mailq at the end: %q", r.stdout)
	}
	if r := admin("queue", "frobnicate"); r.code != exUsage {
		t.Errorf("unknown queue command: exit %d", r.code)
	}
}

// TestQueueRunRefusedToOthers: a user who is neither root nor the spool's
// owner cannot flush with the secrets or read the queue.
func TestQueueRunRefusedToOthers(t *testing.T) {
	s, emu := tenantSite(t, "auto_start = false")
	s.submit(t, "To: someone@example.com\nSubject: x\n\nbody\n")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, argv := range [][]string{{"sendmail", "-q"}, {"mailq"}, {"exo-sendmail", "queue", "list"}} {
		r := s.run(t, invocation{argv: argv, cred: nobody})
		if r.code != exNoPerm || !strings.Contains(r.stderr, "permission denied: only root and root may") {
			t.Errorf("%v as nobody: exit %d, %q", argv, r.code, r.stderr)
		}
	}
	if n := len(emu.Messages()); n != 0 {
		t.Errorf("%d messages delivered by an unprivileged queue run", n)
	}
}

// daemon starts `sendmail -bd` for the site; stop it with SIGTERM.
func (s *site) daemon(t *testing.T) *exec.Cmd {
	t.Helper()
	// Root runs the queue of an existing spool only (it does not create one
	// that would then belong to root).
	if err := queue.Open(s.spool).Init(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "sendmail"), "-bd")
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config, "JOURNAL_STREAM=test")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", out.String())
		}
	})
	waitFor(t, "the daemon to take the flusher lock", queue.Open(s.spool).FlusherRunning)
	return cmd
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSIGTERMFinishesTheTransaction: stopping the daemon while it is in
// the middle of a transaction lets that transaction end: the message is
// delivered once and gone from the queue, and the daemon exits 0.
func TestSIGTERMFinishesTheTransaction(t *testing.T) {
	s, emu := tenantSite(t, "auto_start = false")
	emu.SetFaults(emulator.Faults{Latency: 200 * time.Millisecond})
	d := s.daemon(t)
	s.submit(t, "To: someone@example.com\nSubject: in flight\n\nbody\n")
	// Past EHLO, STARTTLS, EHLO, AUTH: the transaction is under way.
	waitFor(t, "the transaction to start", func() bool { return emu.Stats().SMTPCommands >= 5 })
	d.Process.Signal(syscall.SIGTERM)
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon after SIGTERM: %v", err)
	}
	if n := len(emu.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want the one in flight", n)
	}
	if ids, _ := queue.Open(s.spool).IDs(); len(ids) != 0 {
		t.Errorf("delivered message still queued: %v", ids)
	}
}

// TestSIGHUPRetriesHeldMailAtOnce: an account paused for its configuration
// (a mailbox the app may not use: 535 5.7.3) delivers as soon as the
// configuration is fixed and the daemon reloaded, not when the pause ends.
func TestSIGHUPRetriesHeldMailAtOnce(t *testing.T) {
	s, emu := tenantSite(t, "auto_start = false")
	good, _ := os.ReadFile(s.config)
	bad := strings.Replace(string(good), `mailbox = "alerts@contoso.com"`, `mailbox = "wrong@contoso.com"`, 1)
	os.WriteFile(s.config, []byte(bad), 0o644)
	d := s.daemon(t)
	id := s.submit(t, "To: someone@example.com\nSubject: held\n\nbody\n")
	waitFor(t, "the account to be paused", func() bool {
		st, _ := queue.Open(s.spool).LoadState(id)
		return st.ErrorClass == "configuration"
	})
	r := s.run(t, invocation{argv: []string{"mailq"}})
	if !strings.Contains(r.stdout, "account contoso paused until") || !strings.Contains(r.stdout, "535 5.7.3") {
		t.Errorf("mailq must say why the message waits:\n%s", r.stdout)
	}
	os.WriteFile(s.config, good, 0o644)
	d.Process.Signal(syscall.SIGHUP)
	// The pause lasts retry_min (a minute) at least: delivery within 30 s
	// can only come from the reload.
	waitFor(t, "delivery after the reload", func() bool { return len(emu.Messages()) == 1 })
	// The 250 reaches the emulator a moment before the flusher removes it.
	waitFor(t, "the queue to empty", func() bool { ids, _ := queue.Open(s.spool).IDs(); return len(ids) == 0 })
	if n := len(emu.Messages()); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
}
