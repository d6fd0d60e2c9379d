package flusher

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// pace keeps a mailbox within Exchange's submission limits: at most
// perMinute messages in any 60 seconds (a sliding window, so a backlog
// drains at the limit without a throttling reply) and perDay recipients in
// any 24 hours. The ledger is kept on disk so that successive queue runs
// and restarts share it. A limit of 0 is off.
type pace struct {
	perMinute, perDay int
	path              string

	mu     sync.Mutex
	loaded bool
	ledger ledger
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

// take waits until a message to n recipients may go, and books it. It
// returns early with the time the daily budget frees up when the budget is
// spent (the caller defers the message instead of waiting for hours).
func (p *pace) take(ctx context.Context, n int) (dayFull time.Time, ok bool) {
	if p.perMinute <= 0 && p.perDay <= 0 {
		return time.Time{}, ctx.Err() == nil
	}
	for {
		p.mu.Lock()
		p.load()
		now := time.Now()
		p.prune(now)
		if p.perDay > 0 {
			total := 0
			for _, s := range p.ledger.Recipients {
				total += s.N
			}
			if total+n > p.perDay && len(p.ledger.Recipients) > 0 {
				free := p.ledger.Recipients[0].At.Add(24 * time.Hour)
				p.mu.Unlock()
				return free, false
			}
		}
		var delay time.Duration
		if p.perMinute > 0 && len(p.ledger.Messages) >= p.perMinute {
			oldest := p.ledger.Messages[len(p.ledger.Messages)-p.perMinute]
			delay = oldest.Add(time.Minute + margin).Sub(now)
		}
		if delay <= 0 {
			p.ledger.Messages = append(p.ledger.Messages, now)
			p.ledger.Recipients = append(p.ledger.Recipients, sent{At: now, N: n})
			p.save()
			p.mu.Unlock()
			return time.Time{}, true
		}
		p.mu.Unlock()
		if !wait(ctx, delay) {
			return time.Time{}, false
		}
	}
}

// refund gives back a booking whose message was not accepted.
func (p *pace) refund(n int) {
	if p.perMinute <= 0 && p.perDay <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := len(p.ledger.Recipients); k > 0 {
		p.ledger.Recipients[k-1].N -= n
	}
	p.save()
}

func (p *pace) prune(now time.Time) {
	m := p.ledger.Messages
	for len(m) > 0 && now.Sub(m[0]) > time.Minute+margin {
		m = m[1:]
	}
	p.ledger.Messages = m
	r := p.ledger.Recipients
	for len(r) > 0 && now.Sub(r[0].At) > 24*time.Hour {
		r = r[1:]
	}
	p.ledger.Recipients = r
}

func (p *pace) load() {
	if p.loaded {
		return
	}
	p.loaded = true
	if b, err := os.ReadFile(p.path); err == nil {
		json.Unmarshal(b, &p.ledger) // a damaged ledger starts empty
	}
}

// save writes the ledger: atomically, but without fsync: it is advice for
// pacing, and losing the last entries in a crash is harmless.
func (p *pace) save() {
	b, err := json.Marshal(p.ledger)
	if err != nil {
		return
	}
	os.MkdirAll(filepath.Dir(p.path), 0o700)
	tmp := p.path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, p.path)
	}
}
