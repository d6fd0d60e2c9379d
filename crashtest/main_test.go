package crashtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// sendmailBin is the binary under test, built once by TestMain.
var sendmailBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crashtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sendmailBin = filepath.Join(dir, "sendmail")
	build := exec.Command("go", "build", "-o", sendmailBin, "github.com/exo-sendmail/exo-sendmail/cmd/sendmail")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building sendmail: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	clientID = "3f2a1c9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
	secret   = "emulated~secret.value_123"
	mailbox  = "alerts@contoso.com"
	sendAs   = "noreply@contoso.com"
)

// tenant is an emulated Exchange Online tenant and a sendmail.toml, on
// disk, that points at it.
type tenant struct {
	t      *testing.T
	emu    *emulator.Emulator
	dir    string
	config string // path of sendmail.toml
	spool  *queue.Spool
}

// newTenant starts the emulator and writes the configuration; account is
// appended to the [[account]] block (limits, max_connections...); tune
// changes the emulator's configuration.
func newTenant(t *testing.T, account string, tune ...func(*emulator.Config)) *tenant {
	t.Helper()
	dir := t.TempDir()
	ecfg := emulator.Config{
		Dir:    filepath.Join(dir, "emulator"),
		Tenant: "contoso.onmicrosoft.com",
		Apps: []emulator.App{{
			ClientID: clientID, Secrets: []emulator.Secret{{Value: secret}},
			SMTPRole: true, Mailboxes: []string{mailbox},
		}},
		Mailboxes: []emulator.Mailbox{{Address: mailbox, SendAs: []string{sendAs}}},
	}
	for _, f := range tune {
		f(&ecfg)
	}
	emu, err := emulator.Start(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// retry_min is short so that a daemon retries what a killed flusher
	// left within the test; auto_start is off so that no flusher runs
	// that the test did not start.
	cfg := fmt.Sprintf(`spool_dir = "spool"
state_dir = "state"
hostname = "web1.contoso.com"
[queue]
retry_min = "1s"
retry_max = "2s"
[flusher]
auto_start = false
%s%s
`, emu.AccountTOML("contoso", clientID, "secret", mailbox, sendAs), account)
	path := filepath.Join(dir, "sendmail.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	spool := queue.Open(filepath.Join(dir, "spool"))
	if err := spool.Init(); err != nil {
		t.Fatal(err)
	}
	return &tenant{t: t, emu: emu, dir: dir, config: path, spool: spool}
}

// messageID is the Message-ID header of test message n, as the emulator
// reports it.
func messageID(n int) string { return fmt.Sprintf("<crash-%04d@web1.contoso.com>", n) }

// rcpt is the recipient of test message n.
func rcpt(n int) string { return fmt.Sprintf("rcpt-%04d@example.com", n) }

func message(n int) string {
	return fmt.Sprintf("From: %s\nTo: rcpt-%04d@example.com\nSubject: crash test %d\nMessage-ID: %s\nDate: %s\n\nmessage %d\n",
		sendAs, n, n, messageID(n), time.Now().Format(time.RFC1123Z), n)
}

// enqueue queues message n directly, as sendmail would after reading it.
func (tn *tenant) enqueue(n int) {
	tn.t.Helper()
	env := &queue.Envelope{
		Sender:     "root@web1.contoso.com",
		Recipients: []queue.Recipient{{Addr: fmt.Sprintf("rcpt-%04d@example.com", n)}},
		Submitted:  time.Now(),
		UID:        os.Getuid(),
	}
	if _, err := tn.spool.Enqueue(env, func(w io.Writer) error {
		_, err := io.WriteString(w, message(n))
		return err
	}); err != nil {
		tn.t.Fatal(err)
	}
}

// submit queues message n through the built binary, as a PHP script or
// cron would (`sendmail -t -i`).
func (tn *tenant) submit(n int) error {
	cmd := tn.command("-t", "-i")
	cmd.Stdin = strings.NewReader(message(n))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sendmail -t -i (message %d): %v: %s", n, err, stderr.String())
	}
	return nil
}

// command is the binary with the tenant's configuration; its log goes to
// state/flusher.log (no syslog here, stderr is not a terminal).
func (tn *tenant) command(args ...string) *exec.Cmd {
	cmd := exec.Command(sendmailBin, append([]string{"-C", tn.config}, args...)...)
	cmd.Args[0] = "sendmail"
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG=", "JOURNAL_STREAM=")
	return cmd
}

// run runs the binary to completion.
func (tn *tenant) run(args ...string) {
	tn.t.Helper()
	cmd := tn.command(args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tn.t.Fatalf("sendmail %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// waiting returns the IDs still queued or waiting in drop/.
func (tn *tenant) waiting() []string {
	tn.t.Helper()
	ids, err := tn.spool.IDs()
	if err != nil {
		tn.t.Fatal(err)
	}
	dropped, err := tn.spool.Dropped()
	if err != nil {
		tn.t.Fatal(err)
	}
	return append(ids, dropped...)
}

// copies counts the delivered copies of each Message-ID.
func (tn *tenant) copies() map[string]int {
	n := map[string]int{}
	for _, m := range tn.emu.Messages() {
		n[m.ID]++
	}
	return n
}

// flusherLog is the flushers' log, for failure messages.
func (tn *tenant) flusherLog() string {
	b, _ := os.ReadFile(filepath.Join(tn.dir, "state", "flusher.log"))
	if len(b) > 8000 {
		b = append([]byte("...\n"), b[len(b)-8000:]...)
	}
	return string(b)
}

// leftovers lists the files left in the spool's directories, by
// directory, "spool/queue/X" style.
func (tn *tenant) leftovers() []string {
	tn.t.Helper()
	var out []string
	for _, d := range []string{queue.DropDir, queue.QueueDir, queue.QuarantineDir} {
		names, err := os.ReadDir(filepath.Join(tn.spool.Dir, d))
		if err != nil {
			tn.t.Fatal(err)
		}
		for _, n := range names {
			out = append(out, d+"/"+n.Name())
		}
	}
	return out
}
