package queue

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// journalPrefix names attempt journals in queue/.
const journalPrefix = ".attempts-"

// Journal is a flusher's record of the first attempts it starts. Before a
// message's first attempt the flusher must record when to try again (a
// crash loop must not hammer the server), but creating a state file for
// every message is what limits delivery on some file systems; so a first
// attempt is one line appended here instead. The journal is held (flock)
// while its flusher lives; one left unlocked belongs to a flusher that died,
// and RecoverJournals turns its lines into state files. No fsync: the
// journal guards against a crashing process, and the page cache survives
// that.
type Journal struct {
	mu       sync.Mutex
	f        *os.File
	path     string
	inflight int   // attempts noted and not yet done
	size     int64 // bytes written since the last truncation
}

// journalMax: a journal this large is emptied when no attempt is in flight.
const journalMax = 1 << 20

// OpenJournal creates this process's attempt journal in queue/. It is
// created under another name and locked before it takes its own: another
// flusher must never see it unlocked and take it for a dead one's.
func (s *Spool) OpenJournal() (*Journal, error) {
	f, err := os.CreateTemp(s.path(QueueDir), ".new"+journalPrefix+"*")
	if err != nil {
		return nil, &Error{Op: "create", Path: s.path(QueueDir, journalPrefix+"*"), Err: err}
	}
	path := s.path(QueueDir, strings.TrimPrefix(filepath.Base(f.Name()), ".new"))
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, &Error{Op: "create", Path: path, Err: err}
	}
	return &Journal{f: f, path: path}, nil
}

// Note records that the first attempt of id starts now and that the next
// one is due at next. Done must follow when the attempt has ended and its
// outcome is in the queue (removed, or a state file of its own).
func (j *Journal) Note(id string, next time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, err := fmt.Fprintf(j.f, "%s %d\n", id, next.UnixNano())
	j.size += int64(n)
	if err == nil {
		j.inflight++
	}
	return err
}

// Done ends an attempt noted with Note. A journal grown large is emptied
// once no attempt is in flight: its lines no longer protect anything.
func (j *Journal) Done() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.inflight--; j.inflight == 0 && j.size > journalMax {
		if j.f.Truncate(0) == nil {
			j.f.Seek(0, 0)
			j.size = 0
		}
	}
}

// Close removes the journal: every attempt it recorded has ended, and each
// message left in the queue has a state file of its own.
func (j *Journal) Close() error {
	os.Remove(j.path)
	return j.f.Close()
}

// RecoverJournals turns the journals of flushers that died into state files:
// each message they had started and that is still queued without a state
// gets attempt 1 and the next attempt the journal recorded. Journals in use
// (locked) are left alone.
func (s *Spool) RecoverJournals() {
	names, err := readNames(s.path(QueueDir))
	if err != nil {
		return
	}
	for _, n := range names {
		if !strings.HasPrefix(n, journalPrefix) {
			continue
		}
		p := s.path(QueueDir, n)
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // its flusher is alive
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			id, at, ok := strings.Cut(sc.Text(), " ")
			nano, err := strconv.ParseInt(at, 10, 64)
			if !ok || err != nil || !ValidID(id) {
				continue // a line cut short by the crash
			}
			s.recordFirstAttempt(id, time.Unix(0, nano))
		}
		os.Remove(p)
		f.Close()
	}
}

// recordFirstAttempt writes the state of a message whose first attempt a
// dead flusher started, unless the message is gone or has a state already.
func (s *Spool) recordFirstAttempt(id string, next time.Time) {
	e, err := s.Claim(id)
	if err != nil {
		return // gone, or another flusher delivers it now
	}
	defer e.Close()
	if _, err := os.Stat(s.path(QueueDir, id+".state")); err == nil {
		return
	}
	s.SaveState(id, &State{Attempts: 1, NextAttempt: next,
		LastError: "the flusher stopped during the first attempt"})
}
