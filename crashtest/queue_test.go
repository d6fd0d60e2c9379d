package crashtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/queue"
)

// The two flushers of TestTwoFlushersAtOnce meet in the queue package:
// both pick up from drop/, both claim entries from queue/. These tests
// drive those two operations from two goroutines, the way two processes
// do, so that a failure points at the operation rather than at a run.

// TestPickupBesideAnotherPickup: the daemon picks up on every inotify
// event while a `sendmail -q` (or a second daemon start) picks up too.
// An entry the other one moved first is not an error of this one: both
// must succeed, every entry must end in queue/ exactly once, and nothing
// may be quarantined.
func TestPickupBesideAnotherPickup(t *testing.T) {
	const total = 300
	spool := queue.Open(t.TempDir())
	if err := spool.Init(); err != nil {
		t.Fatal(err)
	}
	for i := range total {
		enqueueTo(t, spool, i, 1)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	picked := make([][]string, 2)
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var quarantined []queue.Quarantined
			picked[k], quarantined, errs[k] = spool.Pickup()
			for _, q := range quarantined {
				t.Errorf("pickup %d quarantined %s: %s", k, q.ID, q.Reason)
			}
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("pickup %d failed beside another pickup (a flusher would stop, or a queue run fail): %v", k, err)
		}
	}
	t.Logf("picked up: %d and %d", len(picked[0]), len(picked[1]))
	// Whatever one of them left, a later pickup alone takes.
	if _, _, err := spool.Pickup(); err != nil {
		t.Fatal(err)
	}
	ids, err := spool.IDs()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != total {
		t.Errorf("%d entries in queue/, want %d", len(ids), total)
	}
	for _, d := range []string{queue.DropDir, queue.QuarantineDir} {
		names, _ := os.ReadDir(filepath.Join(spool.Dir, d))
		for _, n := range names {
			t.Errorf("left in %s/: %s", d, n.Name())
		}
	}
}

// TestClaimOfARemovedEntry: a flusher claims an entry by opening it and
// then taking an flock on the open file. If the flusher that held the
// claim delivers the message, removes the entry and closes it between the
// two steps, the lock is taken on a file that no longer has a name: the
// claim must then fail (queue.ErrNotFound), or the message is delivered a
// second time (its state file is gone with it, so LoadState says "never
// attempted"). A long envelope (many recipients) widens the window between
// the open and the lock, as it does in real queues.
func TestClaimOfARemovedEntry(t *testing.T) {
	spool := queue.Open(t.TempDir())
	if err := spool.Init(); err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	stale := 0
	for i := range rounds {
		enqueueTo(t, spool, i, 20000)
		picked, quarantined, err := spool.Pickup()
		if len(quarantined) > 0 {
			t.Fatalf("cannot race two claims: the entry with a long envelope was quarantined at pickup (see TestLongEnvelopeIsPickedUp): %s", quarantined[0].Reason)
		}
		if err != nil || len(picked) != 1 {
			t.Fatalf("pickup: %v %v", picked, err)
		}
		id := picked[0]
		holder, err := spool.Claim(id)
		if err != nil {
			t.Fatal(err)
		}
		st := &queue.State{Attempts: 1, NextAttempt: time.Now().Add(time.Minute)}
		if err := spool.SaveState(id, st); err != nil {
			t.Fatal(err)
		}
		// The second flusher tries while the first delivers, removes the
		// entry and lets go of it.
		result := make(chan error, 1)
		var second *queue.Entry
		go func() {
			var err error
			second, err = spool.Claim(id)
			result <- err
		}()
		time.Sleep(time.Duration(i%4) * time.Millisecond) // different points of the second claim
		if err := spool.Remove(id); err != nil {
			t.Fatal(err)
		}
		holder.Close()
		err = <-result
		switch {
		case err == nil:
			_, statErr := os.Stat(filepath.Join(spool.Dir, queue.QueueDir, id))
			st, _ := spool.LoadState(id)
			second.Close()
			if errors.Is(statErr, os.ErrNotExist) {
				stale++
				t.Errorf("round %d: Claim(%s) succeeded after the entry was delivered and removed; the state the flusher would read says %d attempt(s), so it would deliver it again", i, id, st.Attempts)
			}
		case errors.Is(err, queue.ErrNotFound), errors.Is(err, queue.ErrBusy):
		default:
			t.Fatalf("round %d: Claim: %v", i, err)
		}
	}
	t.Logf("claims of removed entries: %d of %d rounds", stale, rounds)
}

// enqueueTo queues message n with rcpts envelope recipients.
func enqueueTo(t *testing.T, spool *queue.Spool, n, rcpts int) {
	t.Helper()
	env := &queue.Envelope{Sender: "root@web1.contoso.com", Submitted: time.Now(), UID: os.Getuid()}
	for r := range rcpts {
		env.Recipients = append(env.Recipients, queue.Recipient{Addr: fmt.Sprintf("rcpt-%04d-%05d@example.com", n, r)})
	}
	if _, err := spool.Enqueue(env, func(w io.Writer) error {
		_, err := io.WriteString(w, message(n))
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLongEnvelopeIsPickedUp: an envelope line longer than the reader's
// 4 KB buffer (about 130 recipients; a message past recipients_per_message
// has at least 501) must be read whole, not quarantined as malformed.
func TestLongEnvelopeIsPickedUp(t *testing.T) {
	for _, rcpts := range []int{100, 200, 600} {
		spool := queue.Open(t.TempDir())
		if err := spool.Init(); err != nil {
			t.Fatal(err)
		}
		enqueueTo(t, spool, rcpts, rcpts)
		picked, quarantined, err := spool.Pickup()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range quarantined {
			t.Errorf("a message to %d recipients was quarantined at pickup: %s", rcpts, q.Reason)
		}
		if len(picked) == 1 {
			e, err := spool.Open(picked[0])
			if err != nil {
				t.Fatalf("%d recipients: %v", rcpts, err)
			}
			if n := len(e.Envelope.Recipients); n != rcpts {
				t.Errorf("read %d recipients back, want %d", n, rcpts)
			}
			e.Close()
		}
	}
}
