package crashtest

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/emulator"
)

// TestTwoFlushersAtOnce runs the daemon (`sendmail -bd`) and a queue run
// (`sendmail -q`) over the same 200 freshly dropped messages: both pick up
// from drop/ and claim from queue/ at the same time. Every message must
// arrive exactly once, and neither flusher may fail. The races are
// narrow: a few rounds on fresh spools give them a fair chance.
func TestTwoFlushersAtOnce(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprintf("round%d", round), twoFlushers)
	}
}

func twoFlushers(t *testing.T) {
	const total = 200
	tn := newTenant(t, "messages_per_minute = 0\nrecipients_per_day = 0")
	// A small latency on every reply (not a failure) makes the 200
	// deliveries last long enough that the two flushers overlap on any
	// machine.
	tn.emu.SetFaults(emulator.Faults{Latency: 2 * time.Millisecond})
	for i := range total {
		tn.enqueue(i)
	}

	var daemonOut, runOut bytes.Buffer
	daemon := tn.command("-bd")
	daemon.Env = append(daemon.Env, "JOURNAL_STREAM=crashtest") // log to stderr
	daemon.Stdout, daemon.Stderr = &daemonOut, &daemonOut
	run := tn.command("-q")
	run.Env = append(run.Env, "JOURNAL_STREAM=crashtest")
	run.Stdout, run.Stderr = &runOut, &runOut
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		daemon.Process.Kill()
		t.Fatal(err)
	}
	runErr := run.Wait()
	// The daemon finishes what it has in flight on SIGTERM and exits.
	daemon.Process.Signal(syscall.SIGTERM)
	daemonErr := daemon.Wait()
	if runErr != nil {
		t.Errorf("sendmail -q beside the daemon failed: %v\n%s", runErr, tail(runOut.String()))
	}
	if daemonErr != nil {
		t.Errorf("sendmail -bd beside a queue run failed: %v\n%s", daemonErr, tail(daemonOut.String()))
	}
	bySelf := strings.Count(daemonOut.String(), "status=sent")
	byRun := strings.Count(runOut.String(), "status=sent")
	t.Logf("delivered by the daemon: %d, by sendmail -q: %d", bySelf, byRun)

	// What one flusher skipped because the other held it is delivered by a
	// last run alone.
	if len(tn.waiting()) > 0 {
		tn.run("-q")
	}
	copies := tn.copies()
	for i := range total {
		switch n := copies[messageID(i)]; {
		case n == 0:
			t.Errorf("message %d (%s) was never delivered", i, messageID(i))
		case n > 1:
			t.Errorf("message %d (%s) was delivered %d times by two flushers without any crash\ndaemon:\n%s\nsendmail -q:\n%s",
				i, messageID(i), n, linesWith(daemonOut.String(), rcpt(i)), linesWith(runOut.String(), rcpt(i)))
		}
	}
	if left := tn.waiting(); len(left) > 0 {
		t.Errorf("still queued: %v", left)
	}
	if left := tn.leftovers(); len(left) > 0 {
		t.Errorf("files left in the spool after every message was delivered: %v", left)
	}
}

// linesWith returns the lines of s that contain sub.
func linesWith(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// tail is the end of a long output, for a failure message.
func tail(s string) string {
	if len(s) > 4000 {
		return "...\n" + s[len(s)-4000:]
	}
	return s
}
