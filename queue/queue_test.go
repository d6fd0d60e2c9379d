package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func testEnvelope() *Envelope {
	return &Envelope{
		Sender:     "root@web1.example.com",
		Recipients: []Recipient{{Addr: "ops@example.com"}, {Addr: "root", Notify: "FAILURE"}},
		Submitted:  time.Now().UTC().Truncate(time.Second),
		UID:        os.Getuid(),
		User:       "root",
	}
}

func enqueue(t *testing.T, s *Spool, body string) string {
	t.Helper()
	id, err := s.Enqueue(testEnvelope(), func(w io.Writer) error {
		_, err := io.WriteString(w, body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEnqueuePickupRead(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "spool")) // created on first use
	body := "Subject: hi\n\nline\n"
	id := enqueue(t, s, body)
	if !ValidID(id) {
		t.Fatalf("bad id %q", id)
	}
	if d, _ := s.Dropped(); len(d) != 1 || d[0] != id {
		t.Fatalf("drop/ holds %v, want [%s]", d, id)
	}
	st, err := os.Stat(filepath.Join(s.Dir, DropDir, id))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("entry mode %v %v, want 0640", st.Mode(), err)
	}
	picked, q, err := s.Pickup()
	if err != nil || len(picked) != 1 || picked[0] != id || len(q) != 0 {
		t.Fatalf("pickup: %v %v %v", picked, q, err)
	}
	e, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	got, _ := io.ReadAll(e.Message())
	if string(got) != body || e.Size != int64(len(body)) {
		t.Errorf("message %q size %d", got, e.Size)
	}
	if e.Envelope.Sender != "root@web1.example.com" || len(e.Envelope.Recipients) != 2 || e.Envelope.Recipients[1].Notify != "FAILURE" {
		t.Errorf("envelope %+v", e.Envelope)
	}
}

func TestEnqueueFailureLeavesNothing(t *testing.T) {
	s := Open(t.TempDir())
	boom := errors.New("stdin broke")
	_, err := s.Enqueue(testEnvelope(), func(w io.Writer) error {
		io.WriteString(w, strings.Repeat("x", 100000))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("want the writer's error, got %v", err)
	}
	names, _ := os.ReadDir(filepath.Join(s.Dir, DropDir))
	if len(names) != 0 {
		t.Errorf("drop/ not empty after a failed enqueue: %v", names)
	}
}

func TestEnqueueErrorsCarryErrno(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	_, err := Open(filepath.Join(dir, "file", "spool")).Enqueue(testEnvelope(), func(io.Writer) error { return nil })
	if !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("want ENOTDIR in the chain, got %v", err)
	}
}

// TestFullDisk fills a tiny tmpfs: the enqueue must fail with ENOSPC and
// leave nothing behind.
func TestFullDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	s := Open(filepath.Join(dir, "spool"))
	_, err := s.Enqueue(testEnvelope(), func(w io.Writer) error {
		_, err := w.Write(make([]byte, 256<<10))
		return err
	})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	names, _ := os.ReadDir(filepath.Join(s.Dir, DropDir))
	if len(names) != 0 {
		t.Errorf("drop/ holds %d files after ENOSPC", len(names))
	}
}

func TestConcurrentEnqueue(t *testing.T) {
	s := Open(t.TempDir())
	var wg sync.WaitGroup
	ids := make([]string, 200)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.Enqueue(testEnvelope(), func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Subject: %d\n\nbody %d\n", i, i)
				return err
			})
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	picked, _, err := s.Pickup()
	if err != nil || len(picked) != 200 {
		t.Fatalf("picked %d, %v", len(picked), err)
	}
	for i, id := range ids {
		e, err := s.Open(id)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		b, _ := io.ReadAll(e.Message())
		e.Close()
		if string(b) != fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i) {
			t.Errorf("entry %d holds %q", i, b)
		}
	}
}

func TestPickupQuarantinesUntrustedEntries(t *testing.T) {
	s := Open(t.TempDir())
	enqueue(t, s, "x\n")
	drop := filepath.Join(s.Dir, DropDir)
	good := NewID()
	os.WriteFile(filepath.Join(drop, "not-an-id"), []byte(magic+"{}\n"), 0o640)
	os.WriteFile(filepath.Join(drop, NewID()), []byte("garbage"), 0o640)
	os.WriteFile(filepath.Join(drop, NewID()), []byte(magic+`{"sender":"a","recipients":[]}`+"\n"), 0o640)
	os.WriteFile(filepath.Join(drop, NewID()), []byte(magic+`{"sender":"a\r\nRCPT TO:<x>","recipients":[{"addr":"b"}]}`+"\n"), 0o640)
	os.WriteFile(filepath.Join(drop, NewID()), []byte(magic+fmt.Sprintf(`{"sender":"a","recipients":[{"addr":"b"}],"uid":%d}`, os.Getuid()+1)+"\n"), 0o640)
	os.Symlink("/etc/passwd", filepath.Join(drop, NewID()))
	os.WriteFile(filepath.Join(drop, good), []byte(magic+fmt.Sprintf(`{"sender":"a","recipients":[{"addr":"b"}],"uid":%d}`, os.Getuid())+"\nbody\n"), 0o640)
	picked, q, err := s.Pickup()
	if err != nil {
		t.Fatal(err)
	}
	if len(picked) != 2 || len(q) != 6 {
		t.Fatalf("picked %v, quarantined %v", picked, q)
	}
	for _, x := range q {
		reason, err := os.ReadFile(filepath.Join(s.Dir, QuarantineDir, x.ID+".reason"))
		if err != nil || len(reason) < 5 {
			t.Errorf("quarantined %s without a reason: %v", x.ID, err)
		}
	}
	if left, _ := os.ReadDir(drop); len(left) != 0 {
		t.Errorf("drop/ still holds %d", len(left))
	}
}

func TestPickupCollisionKeepsBoth(t *testing.T) {
	s := Open(t.TempDir())
	id := enqueue(t, s, "first\n")
	s.Pickup()
	// A second entry under the same name (a user can choose names in drop/).
	os.Rename(filepath.Join(s.Dir, QueueDir, id), filepath.Join(s.Dir, "saved"))
	id2 := enqueue(t, s, "second\n")
	os.Rename(filepath.Join(s.Dir, DropDir, id2), filepath.Join(s.Dir, DropDir, id))
	os.Rename(filepath.Join(s.Dir, "saved"), filepath.Join(s.Dir, QueueDir, id))
	picked, _, err := s.Pickup()
	if err != nil || len(picked) != 1 || picked[0] == id {
		t.Fatalf("picked %v %v: the colliding entry needs a new ID", picked, err)
	}
	ids, _ := s.IDs()
	if len(ids) != 2 {
		t.Errorf("queue holds %v, want both entries", ids)
	}
}

func TestClaimIsExclusiveAcrossProcesses(t *testing.T) {
	s := Open(t.TempDir())
	id := enqueue(t, s, "x\n")
	s.Pickup()
	e, err := s.Claim(id)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second Claim in
	// this process behaves as another process would.
	if _, err := s.Claim(id); !errors.Is(err, ErrBusy) {
		t.Errorf("second claim: %v, want ErrBusy", err)
	}
	e.Close()
	e2, err := s.Claim(id)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	e2.Close()
}

func TestStateRoundTripAndHold(t *testing.T) {
	s := Open(t.TempDir())
	id := enqueue(t, s, "x\n")
	s.Pickup()
	st, _ := s.LoadState(id)
	if st.Attempts != 0 || !st.NextAttempt.IsZero() {
		t.Fatalf("new state %+v", st)
	}
	st.Attempts, st.NextAttempt = 2, time.Now().Add(time.Hour).Truncate(time.Second)
	st.Set("ops@example.com", Sent, "250 2.0.0 OK")
	if err := s.SaveState(id, st); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHeld(id, true); err != nil {
		t.Fatal(err)
	}
	got, _ := s.LoadState(id)
	if !got.Held || got.Attempts != 2 || got.Pending([]string{"ops@example.com", "x@example.com"})[0] != "x@example.com" {
		t.Errorf("state %+v", got)
	}
	s.SetHeld(id, false)
	if got, _ := s.LoadState(id); got.Held || !got.NextAttempt.IsZero() {
		t.Errorf("release must clear hold and make it due: %+v", got)
	}
	os.WriteFile(filepath.Join(s.Dir, QueueDir, id+".state"), []byte("{broken"), 0o600)
	if got, err := s.LoadState(id); err != nil || !strings.Contains(got.LastError, "reset") {
		t.Errorf("broken state: %+v %v", got, err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.IDs(); len(ids) != 0 {
		t.Errorf("removed entry still listed: %v", ids)
	}
}

func TestFlusherLock(t *testing.T) {
	s := Open(t.TempDir())
	if s.FlusherRunning() {
		t.Fatal("no flusher yet")
	}
	l, err := s.LockFlusher()
	if err != nil {
		t.Fatal(err)
	}
	if !s.FlusherRunning() {
		t.Error("FlusherRunning false while locked")
	}
	if _, err := s.LockFlusher(); !errors.Is(err, ErrBusy) {
		t.Errorf("second lock: %v", err)
	}
	l.Unlock()
	if s.FlusherRunning() {
		t.Error("still running after unlock")
	}
}

// TestJournalOfADeadFlusherIsRecovered: the first attempts a killed
// flusher had noted become state files (attempt 1, the next attempt it
// recorded); messages already gone or with a state are left as they are;
// a journal whose flusher lives is not touched.
func TestJournalOfADeadFlusherIsRecovered(t *testing.T) {
	s := Open(t.TempDir())
	started, stated, gone := enqueue(t, s, "a\n"), enqueue(t, s, "b\n"), enqueue(t, s, "c\n")
	s.Pickup()
	s.SaveState(stated, &State{Attempts: 3})
	s.Remove(gone)
	next := time.Now().Add(time.Hour).Truncate(time.Second)

	live, err := s.OpenJournal()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.Note(started, next)

	// A dead flusher's journal: written, never locked, never removed; its
	// last line cut short by the kill.
	dead := fmt.Sprintf("%s %d\n%s %d\n%s %d\n%s 12", started, next.UnixNano(), stated, next.UnixNano(), gone, next.UnixNano(), NewID())
	os.WriteFile(filepath.Join(s.Dir, QueueDir, journalPrefix+"dead"), []byte(dead), 0o600)

	s.RecoverJournals()
	st, _ := s.LoadState(started)
	if st.Attempts != 1 || !st.NextAttempt.Equal(next) {
		t.Errorf("started message: %+v, want attempt 1 due %v", st, next)
	}
	if st, _ := s.LoadState(stated); st.Attempts != 3 {
		t.Errorf("a message with a state of its own was overwritten: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, QueueDir, gone+".state")); err == nil {
		t.Error("a state was written for a message no longer queued")
	}
	names, _ := filepath.Glob(filepath.Join(s.Dir, QueueDir, journalPrefix+"*"))
	if len(names) != 1 || names[0] != live.path {
		t.Errorf("journals left: %v, want only the live one", names)
	}
}
