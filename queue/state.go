package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
	"golang.org/x/sys/unix"
)

// Recipient delivery status, as kept in the state file.
const (
	Pending = ""        // not delivered yet (never tried, or deferred)
	Sent    = "sent"    // the server accepted it
	Failed  = "failed"  // permanently refused; a DSN is due or done
	Bounced = "bounced" // failed and the DSN is queued (or none was due)
)

// State is the delivery state of an entry, kept beside it in <id>.state and
// replaced atomically. A missing state file is the state of a new entry.
type State struct {
	Attempts    int             `json:"attempts"`
	NextAttempt time.Time       `json:"next_attempt"`             // written BEFORE each attempt
	LastAttempt time.Time       `json:"last_attempt,omitzero"`    // when the last attempt started
	LastError   string          `json:"last_error,omitempty"`     // the server's full reply, or what to fix
	ErrorClass  string          `json:"error_class,omitempty"`    // temporary, permanent, configuration, throttled
	Held        bool            `json:"held,omitempty"`           // set by the administrator: not attempted
	Account     string          `json:"account,omitempty"`        // the account it was routed to
	Recipients  []RecipientInfo `json:"recipients,omitempty"`     // per recipient, once attempted
	Delayed     bool            `json:"delay_notified,omitempty"` // a delay DSN was sent
}

// RecipientInfo is one recipient's delivery state.
type RecipientInfo struct {
	Addr   string `json:"addr"`             // after alias resolution
	Status string `json:"status,omitempty"` // Pending, Sent, Failed, Bounced
	Reply  string `json:"reply,omitempty"`  // the server's reply to it
}

// LoadState reads the state of entry id (zero State if it has none yet).
func (s *Spool) LoadState(id string) (*State, error) {
	var st State
	b, err := os.ReadFile(s.path(QueueDir, id+".state"))
	if errors.Is(err, os.ErrNotExist) {
		return &st, nil
	}
	if err != nil {
		return nil, &Error{Op: "read", Path: s.path(QueueDir, id+".state"), Err: err}
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// A state we cannot read must not stop delivery: start afresh (at
		// worst a recipient gets a second copy) and say so.
		return &State{LastError: fmt.Sprintf("state file was unreadable (%v) and was reset", err)}, nil
	}
	return &st, nil
}

// SaveState replaces the state of entry id atomically. It is made durable
// (fsync) when it records something a power cut must not take back: a
// recipient's result (else a recipient could get the message twice, or a
// bounce be lost) or a hold. A state that holds only attempt counters and
// the next attempt (the one written before a first attempt) is not: losing
// it costs an early retry, and a crashed process loses nothing either way,
// since the page cache survives it. This halves the disk commits of each
// delivery.
func (s *Spool) SaveState(id string, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	p := s.path(QueueDir, id+".state")
	durable := st.Held || len(st.Recipients) > 0
	if err := atomicfile.Write(p, b, 0o600, durable); err != nil {
		return &Error{Op: "write", Path: p, Err: err}
	}
	return nil
}

// Pending returns the recipients of env not yet delivered or failed, as
// recorded in st (all of them for a new entry).
func (st *State) Pending(all []string) []string {
	done := map[string]bool{}
	for _, r := range st.Recipients {
		if r.Status != Pending {
			done[r.Addr] = true
		}
	}
	var out []string
	for _, a := range all {
		if !done[a] {
			out = append(out, a)
		}
	}
	return out
}

// Set records a recipient's status and reply.
func (st *State) Set(addr, status, reply string) {
	for i := range st.Recipients {
		if st.Recipients[i].Addr == addr {
			st.Recipients[i].Status, st.Recipients[i].Reply = status, reply
			return
		}
	}
	st.Recipients = append(st.Recipients, RecipientInfo{Addr: addr, Status: status, Reply: reply})
}

// Update changes the state of entry id under its claim (the administrator's
// hold, release and retry): ErrBusy while a flusher delivers it.
func (s *Spool) Update(id string, change func(*State)) error {
	e, err := s.Claim(id)
	if err != nil {
		return err
	}
	defer e.Close()
	st, err := s.LoadState(id)
	if err != nil {
		return err
	}
	change(st)
	return s.SaveState(id, st)
}

// SetHeld holds or releases an entry. A held entry stays queued and is not
// attempted until released; Release also makes it due now.
func (s *Spool) SetHeld(id string, held bool) error {
	return s.Update(id, func(st *State) {
		st.Held = held
		if !held {
			st.NextAttempt = time.Time{}
		}
	})
}

// Lock is the flusher lock: one flusher (daemon or queue run) per spool
// at a time picks up and schedules.
type Lock struct{ f *os.File }

// LockFlusher takes the flusher lock without waiting: ErrBusy when another
// flusher runs.
func (s *Spool) LockFlusher() (*Lock, error) {
	p := s.path(LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &Error{Op: "open", Path: p, Err: err}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, &Error{Op: "lock", Path: p, Err: err}
	}
	return &Lock{f: f}, nil
}

// FlusherRunning reports whether a flusher holds the lock now.
func (s *Spool) FlusherRunning() bool {
	f, err := os.Open(s.path(LockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// Unlock releases the flusher lock.
func (l *Lock) Unlock() error { return l.f.Close() }
