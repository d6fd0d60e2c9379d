package flusher

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
)

// pace keeps a mailbox within Exchange's submission limits: at most
// perMinute messages in any 60 seconds (a sliding window, so a backlog
// drains at the limit without a throttling reply) and perDay recipients in
// any 24 hours. The ledger lives on disk and every booking is a locked
// read-modify-write of it, so that the daemon and a queue run, or two
// queue runs, share one pace. A limit of 0 is off.
type pace struct {
	perMinute, perDay int
	path              string
	mu                sync.Mutex // one booking at a time within the process
}

type ledger struct {
	Messages   []time.Time `json:"messages"`   // sends in the last minute
	Recipients []sent      `json:"recipients"` // sends in the last 24 hours
}

type sent struct {
	At time.Time `json:"at"`
	N  int       `json:"n"`
}

// margin keeps us clear of the server's own count (clocks, latency).
const margin = 500 * time.Millisecond

func newPace(path string, perMinute, perDay int) *pace {
	return &pace{perMinute: perMinute, perDay: perDay, path: path}
}

func (p *pace) off() bool { return p.perMinute <= 0 && p.perDay <= 0 }

// take waits until a message to n recipients may go, and books it. It
// returns early with the time the daily budget frees up when the budget is
// spent (the caller defers the message instead of waiting for hours).
func (p *pace) take(ctx context.Context, n int) (dayFull time.Time, ok bool) {
	if p.off() {
		return time.Time{}, ctx.Err() == nil
	}
	for {
		var delay time.Duration
		booked := false
		p.update(func(l *ledger, now time.Time) bool {
			if p.perDay > 0 {
				total := 0
				for _, s := range l.Recipients {
					total += s.N
				}
				if total+n > p.perDay && len(l.Recipients) > 0 {
					dayFull = l.Recipients[0].At.Add(24 * time.Hour)
					return false
				}
			}
			if p.perMinute > 0 && len(l.Messages) >= p.perMinute {
				oldest := l.Messages[len(l.Messages)-p.perMinute]
				if delay = oldest.Add(time.Minute + margin).Sub(now); delay > 0 {
					return false
				}
			}
			l.Messages = append(l.Messages, now)
			l.Recipients = append(l.Recipients, sent{At: now, N: n})
			booked = true
			return true
		})
		if booked {
			return time.Time{}, true
		}
		if !dayFull.IsZero() {
			return dayFull, false
		}
		if !wait(ctx, delay) {
			return time.Time{}, false
		}
	}
}

// refund gives back a booking whose message was not accepted.
func (p *pace) refund(n int) {
	if p.off() {
		return
	}
	p.update(func(l *ledger, _ time.Time) bool {
		if k := len(l.Recipients); k > 0 {
			l.Recipients[k-1].N -= n
			return true
		}
		return false
	})
}

// update runs change on the ledger under an exclusive lock shared with
// every other process of the service user, and saves it when change says
// so. Without the lock file (a read-only state dir) the ledger still
// works, for this process alone.
func (p *pace) update(change func(l *ledger, now time.Time) (save bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	os.MkdirAll(filepath.Dir(p.path), 0o700)
	if lock, err := os.OpenFile(p.path+".lock", os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		defer lock.Close() // releases the flock
		unix.Flock(int(lock.Fd()), unix.LOCK_EX)
	}
	var l ledger
	if b, err := os.ReadFile(p.path); err == nil {
		json.Unmarshal(b, &l) // a damaged ledger starts empty
	}
	now := time.Now()
	l.prune(now)
	if change(&l, now) {
		l.save(p.path)
	}
}

func (l *ledger) prune(now time.Time) {
	m := l.Messages
	for len(m) > 0 && now.Sub(m[0]) > time.Minute+margin {
		m = m[1:]
	}
	l.Messages = m
	r := l.Recipients
	for len(r) > 0 && now.Sub(r[0].At) > 24*time.Hour {
		r = r[1:]
	}
	l.Recipients = r
}

// save writes the ledger: atomically, but without fsync: it is advice for
// pacing, and losing the last entries in a crash is harmless.
func (l *ledger) save(path string) {
	b, err := json.Marshal(l)
	if err != nil {
		return
	}
	atomicfile.Write(path, b, 0o600, false)
}
