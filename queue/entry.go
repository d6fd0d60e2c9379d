package queue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
	"golang.org/x/sys/unix"
)

// ErrBusy: another flusher holds the entry (or the flusher lock).
var ErrBusy = errors.New("held by another flusher")

// ErrNotFound: no entry with that ID.
var ErrNotFound = errors.New("no such queue entry")

// Entry is an open queued message. The message bytes never change; Close
// releases the file and the claim, if any.
type Entry struct {
	ID       string
	Envelope Envelope
	Size     int64 // of the message, without the envelope
	file     *os.File
	offset   int64
}

// Message returns a reader of the message bytes.
func (e *Entry) Message() *io.SectionReader {
	return io.NewSectionReader(e.file, e.offset, e.Size)
}

// Close releases the entry (and with it its claim).
func (e *Entry) Close() error { return e.file.Close() }

// readEnvelope parses the head of an entry: the magic line and the
// envelope. It returns the offset where the message starts.
func readEnvelope(f *os.File) (Envelope, int64, error) {
	var env Envelope
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, maxEnvelope+int64(len(magic))+1), 4096)
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(r, m); err != nil || string(m) != magic {
		return env, 0, errors.New("not a queue entry (bad first line)")
	}
	// Bounded by the section reader: a long envelope (many recipients) is
	// read whole, an endless one ends at maxEnvelope.
	line, err := r.ReadBytes('\n')
	if err != nil {
		return env, 0, errors.New("envelope line is unterminated or too long")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return env, 0, fmt.Errorf("envelope: %v", err)
	}
	if err := env.check(); err != nil {
		return env, 0, err
	}
	return env, int64(len(magic) + len(line)), nil
}

// check rejects envelopes that could not have come from our sendmail.
func (env *Envelope) check() error {
	if len(env.Recipients) == 0 {
		return errors.New("envelope has no recipient")
	}
	bad := func(s string) bool { return len(s) > 998 || strings.ContainsAny(s, "\r\n\x00") }
	if bad(env.Sender) || bad(env.EnvID) || bad(env.Ret) {
		return errors.New("envelope sender or DSN field is malformed")
	}
	for _, r := range env.Recipients {
		if r.Addr == "" || bad(r.Addr) || bad(r.Notify) || bad(r.ORcpt) {
			return fmt.Errorf("envelope recipient %q is malformed", r.Addr)
		}
	}
	return nil
}

// openEntry opens dir/id without following links and reads its envelope.
func openEntry(path, id string) (*Entry, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	var env Envelope
	var off int64
	if err == nil {
		env, off, err = readEnvelope(f)
	}
	if err != nil {
		f.Close()
		return nil, &Error{Op: "read", Path: path, Err: err}
	}
	return &Entry{ID: id, Envelope: env, Size: st.Size() - off, file: f, offset: off}, nil
}

// Open opens a queued entry for reading (no claim).
func (s *Spool) Open(id string) (*Entry, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return openEntry(s.path(QueueDir, id), id)
}

// Claim opens an entry and takes its delivery lock. The lock is an flock:
// it dies with the process, so a crashed flusher's claims free themselves.
// ErrBusy when another flusher delivers it now.
func (s *Spool) Claim(id string) (*Entry, error) {
	e, err := s.Open(id)
	if err != nil {
		return nil, err
	}
	path := s.path(QueueDir, id)
	if err := unix.Flock(int(e.file.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		e.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, &Error{Op: "lock", Path: path, Err: err}
	}
	// Between our open and our lock, another flusher may have delivered
	// and removed the entry, releasing its lock on a file no longer in the
	// queue: holding that lock claims nothing. Only if the name still
	// leads to the file we locked is the claim ours.
	held, err1 := e.file.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		e.Close()
		return nil, ErrNotFound
	}
	return e, nil
}

// Pickup moves complete entries from drop/ into queue/, checking each one:
// drop/ is written by any local user through sendmail, so what is there
// is untrusted. Entries that cannot be parsed go to quarantine/ with the
// reason. It returns the IDs now in queue/ and what it quarantined.
func (s *Spool) Pickup() (picked []string, quarantined []Quarantined, err error) {
	names, err := readNames(s.path(DropDir))
	if err != nil {
		return nil, nil, &Error{Op: "list", Path: s.path(DropDir), Err: err}
	}
	moved := false
	for _, name := range names {
		src := s.path(DropDir, name)
		if strings.HasPrefix(name, ".") {
			// A sendmail still writing (.tmp-*), or one that died: remove
			// only old ones. Other dot files are signals (RescanFile).
			if st, err := os.Lstat(src); err == nil && strings.HasPrefix(name, ".tmp-") && time.Since(st.ModTime()) > 24*time.Hour {
				os.Remove(src)
			}
			continue
		}
		id, reason := name, ""
		if !ValidID(name) {
			id, reason = NewID(), fmt.Sprintf("file name %q is not a queue ID", name)
		} else if e, err := openEntry(src, name); errors.Is(err, ErrNotFound) {
			continue // another flusher picked it up meanwhile
		} else if err != nil {
			reason = err.Error()
		} else {
			reason = e.trusted()
			e.Close()
		}
		if reason != "" {
			q, err := s.quarantine(src, id, reason)
			if errors.Is(err, os.ErrNotExist) {
				continue // another flusher dealt with it meanwhile
			}
			if err != nil {
				return picked, quarantined, err
			}
			quarantined = append(quarantined, q)
			continue
		}
		for {
			err = renameNoReplace(src, s.path(QueueDir, id))
			if !errors.Is(err, os.ErrExist) {
				break
			}
			id = NewID() // a name chosen to collide: give it a fresh one
		}
		if errors.Is(err, os.ErrNotExist) {
			continue // another flusher picked it up meanwhile
		}
		if err != nil {
			return picked, quarantined, &Error{Op: "move", Path: src, Err: err}
		}
		picked, moved = append(picked, id), true
	}
	if moved {
		// queue/ first: once the new names are durable, the old ones may go.
		if err := atomicfile.SyncDir(s.path(QueueDir)); err != nil {
			return picked, quarantined, &Error{Op: "fsync", Path: s.path(QueueDir), Err: err}
		}
		if err := atomicfile.SyncDir(s.path(DropDir)); err != nil {
			return picked, quarantined, &Error{Op: "fsync", Path: s.path(DropDir), Err: err}
		}
	}
	return picked, quarantined, nil
}

// trusted returns why a dropped entry must not be accepted, "" if it may.
// The envelope's uid must be the file's owner: a user cannot claim to be
// another, and a hard link to someone else's file is refused.
func (e *Entry) trusted() string {
	st, err := e.file.Stat()
	if err != nil {
		return err.Error()
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	if sys.Nlink != 1 {
		return "entry has more than one link"
	}
	if int(sys.Uid) != e.Envelope.UID {
		return fmt.Sprintf("envelope claims uid %d but the file belongs to uid %d", e.Envelope.UID, sys.Uid)
	}
	return ""
}

// Files created in drop/ to signal a running flusher: RescanFile to
// re-read the queue's state (the administrator held, released or deleted
// entries), RetryFile to also lift the accounts' pauses and attempt
// everything now.
const (
	RescanFile = ".rescan"
	RetryFile  = ".retry"
)

// RequestRescan asks a running flusher to re-read the queue (retry: and
// attempt everything now).
func (s *Spool) RequestRescan(retry bool) error {
	name := RescanFile
	if retry {
		name = RetryFile
	}
	p := s.path(DropDir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &Error{Op: "create", Path: p, Err: err}
	}
	return f.Close()
}

// Quarantined is an entry set aside, with the reason.
type Quarantined struct {
	ID, Reason string
}

func (s *Spool) quarantine(src, id, reason string) (Quarantined, error) {
	q := Quarantined{ID: id, Reason: reason}
	dir := s.path(QuarantineDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return q, &Error{Op: "quarantine", Path: dir, Err: err}
	}
	reasonFile := filepath.Join(dir, id+".reason")
	if err := atomicfile.Write(reasonFile, []byte(reason+"\n"), 0o600, true); err != nil {
		return q, &Error{Op: "quarantine", Path: dir, Err: err}
	}
	if err := os.Rename(src, filepath.Join(dir, id)); err != nil {
		os.Remove(reasonFile)
		return q, &Error{Op: "quarantine", Path: src, Err: err}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return q, &Error{Op: "fsync", Path: dir, Err: err}
	}
	return q, atomicfile.SyncDir(filepath.Dir(src))
}

// IDs returns the IDs in queue/, oldest first.
func (s *Spool) IDs() ([]string, error) {
	names, err := readNames(s.path(QueueDir))
	if err != nil {
		return nil, &Error{Op: "list", Path: s.path(QueueDir), Err: err}
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil
}

// Dropped returns the IDs waiting in drop/ for pickup.
func (s *Spool) Dropped() ([]string, error) {
	names, err := readNames(s.path(DropDir))
	if err != nil {
		return nil, &Error{Op: "list", Path: s.path(DropDir), Err: err}
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil
}

// OpenDropped opens an entry still in drop/ (for listing it).
func (s *Spool) OpenDropped(id string) (*Entry, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return openEntry(s.path(DropDir, id), id)
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// staleAge: a temporary or orphaned file this old is no write in progress.
const staleAge = time.Hour

// Tidy removes what killed processes leave in queue/: <id>.state.*.tmp
// (killed while writing a state), <id>.state whose entry is gone (killed
// inside Remove) and a journal never put in place (killed while opening it). Only files older than staleAge: a younger one may be a
// write in progress.
func (s *Spool) Tidy() {
	names, err := readNames(s.path(QueueDir))
	if err != nil {
		return
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, n := range names {
		id, stale := "", false
		switch {
		case strings.HasSuffix(n, ".tmp") && strings.Contains(n, ".state."), strings.HasPrefix(n, ".new"+journalPrefix):
			stale = true // <id>.state.<random>.tmp: a state write that was killed
		case strings.HasSuffix(n, ".state"):
			id = strings.TrimSuffix(n, ".state")
			stale = !have[id]
		}
		if !stale {
			continue
		}
		p := s.path(QueueDir, n)
		if st, err := os.Lstat(p); err == nil && time.Since(st.ModTime()) > staleAge {
			os.Remove(p)
		}
	}
}

// Remove deletes an entry and its state, durably. The caller holds the
// claim, so no other flusher is delivering it.
func (s *Spool) Remove(id string) error {
	if err := s.RemoveUnsynced(id); err != nil {
		return err
	}
	return s.SyncRemovals()
}

// RemoveUnsynced deletes an entry and its state without waiting for the
// removal to reach the disk; SyncRemovals makes all removals so far
// durable. A flusher removing delivered mail shares one fsync between many
// removals: a power cut before it can bring a delivered message back (it
// is delivered twice), never lose one. The entry goes first: a state left
// without its entry is tidied away, an entry without its state would be
// delivered again.
func (s *Spool) RemoveUnsynced(id string) error {
	if err := os.Remove(s.path(QueueDir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &Error{Op: "remove", Path: s.path(QueueDir, id), Err: err}
	}
	os.Remove(s.path(QueueDir, id+".state"))
	return nil
}

// SyncRemovals makes the removals from queue/ so far durable.
func (s *Spool) SyncRemovals() error {
	if err := atomicfile.SyncDir(s.path(QueueDir)); err != nil {
		return &Error{Op: "fsync", Path: s.path(QueueDir), Err: err}
	}
	return nil
}
