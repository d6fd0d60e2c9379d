package crashtest

import (
	"bytes"
	"fmt"
	"os/exec"
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

// TestPacingSharedByTwoFlushers: messages_per_minute is a limit of the
// mailbox, kept in a ledger on disk (state_dir/pace/) "so that successive
// queue runs and restarts share it". Two flushers running at once (the
// daemon and a `sendmail -q`, or two queue runs from cron) must share it
// too: together they may send at most 30 messages in any 60 s, and the
// emulator, enforcing Exchange's limits, must never refuse one
// (451 4.7.500). Each flusher uses one connection, so the three-connection
// limit is not in play. In 10 s (inside any 60 s window, however slow the
// machine) at most 30 of the 45 queued messages may arrive.
func TestPacingSharedByTwoFlushers(t *testing.T) {
	tn := newTenant(t, "messages_per_minute = 30\nmax_connections = 1", func(c *emulator.Config) { c.Limits = true })
	for i := range 45 {
		tn.enqueue(i)
	}
	var outs [2]bytes.Buffer
	var runs [2]*exec.Cmd
	for k := range runs {
		runs[k] = tn.command("-q")
		runs[k].Stdout, runs[k].Stderr = &outs[k], &outs[k]
		if err := runs[k].Start(); err != nil {
			t.Fatal(err)
		}
	}
	window := time.NewTimer(10 * time.Second)
	<-window.C
	for _, r := range runs {
		r.Process.Signal(syscall.SIGTERM)
	}
	for _, r := range runs {
		r.Wait()
	}
	st := tn.emu.Stats()
	n := len(tn.emu.Messages())
	t.Logf("accepted in the first 10 s: %d; throttling replies: %d; SMTP connections: %d", n, st.ThrottleReplies, st.SMTPConnections)
	if n > 30 {
		t.Errorf("two flushers sent %d messages for one mailbox within 10 s; messages_per_minute is 30: each paces by its own copy of the ledger", n)
	}
	if st.ThrottleReplies > 0 {
		t.Errorf("the emulator refused %d message(s) for exceeding 30 per minute", st.ThrottleReplies)
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
