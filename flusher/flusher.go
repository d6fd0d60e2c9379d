// Package flusher delivers the queue: it picks up dropped messages, routes
// each to its account, prepares the copy for the mailbox, sends it with the
// account's transport within Exchange's limits, and records the result:
// delivered → removed, temporary → retried with backoff, permanent →
// bounced (DSN), configuration error → the account's mail held.
//
// State is persisted before acting: the next attempt is written before each
// attempt, so a crash loop never hammers the server, and the only duplicate
// a crash can cause is a message whose 250 arrived but whose state was not
// yet written.
package flusher

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// Options tune a Flusher.
type Options struct {
	Log   *log.Logger // one line per delivery attempt; nil: discard
	Trace io.Writer   // the SMTP dialogue (-v), token hidden; nil: none
}

// Flusher delivers one spool with one configuration.
type Flusher struct {
	cfg      *conf.Config
	spool    *queue.Spool
	log      *log.Logger
	trace    io.Writer
	accounts map[string]*account
	acctErr  map[string]error // accounts whose runtime could not be built

	mu       sync.Mutex
	index    map[string]*item // the schedule; rebuilt by scan
	running  map[string]bool  // accounts delivering a batch now
	stats    Stats
	removals removals

	journalOnce sync.Once
	journal     *queue.Journal // first attempts of this process; nil if it cannot be had
}

// recordAttempt records, before an attempt, when to try again, so that a
// flusher that crashes in the attempt does not retry at once. A first
// attempt goes into this process's attempt journal (no new file per
// message: what limits delivery on some file systems); a retry, or any
// attempt without a journal, into the message's state file. done must be
// called once the attempt's outcome is in the queue.
func (f *Flusher) recordAttempt(id string, st *queue.State) (done func(), err error) {
	if st.Attempts == 1 && len(st.Recipients) == 0 {
		f.journalOnce.Do(func() {
			j, err := f.spool.OpenJournal()
			if err != nil {
				f.log.Printf("no attempt journal, writing a state file per attempt: %v", err)
			}
			f.journal = j
		})
		if j := f.journal; j != nil && j.Note(id, st.NextAttempt) == nil {
			return j.Done, nil
		}
	}
	return func() {}, f.spool.SaveState(id, st)
}

// closeJournal ends this process's attempt journal, once every attempt has
// ended and every removal is durable.
func (f *Flusher) closeJournal() {
	f.removals.flush(f.spool)
	if f.journal != nil {
		f.journal.Close()
		f.journal, f.journalOnce = nil, sync.Once{}
	}
}

// removalSync is how long a removal may wait for the fsync that makes it
// durable: removals share that fsync (see queue.RemoveUnsynced).
const removalSync = 100 * time.Millisecond

// removals batches the fsyncs of queue/ after delivered mail is removed.
type removals struct {
	mu       sync.Mutex
	pending  bool
	lastSync time.Time
}

// note records a removal; it syncs when the last sync is older than
// removalSync.
func (r *removals) note(s *queue.Spool) {
	r.mu.Lock()
	r.pending = true
	due := time.Since(r.lastSync) >= removalSync
	r.mu.Unlock()
	if due {
		r.flush(s)
	}
}

// flush makes every removal so far durable (also at a run's end and when
// the daemon stops).
func (r *removals) flush(s *queue.Spool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pending {
		return
	}
	r.pending, r.lastSync = false, time.Now()
	if err := s.SyncRemovals(); err != nil {
		r.pending = true // the next removal or flush tries again
	}
}

// unsynced reports whether removals wait for their fsync.
func (r *removals) unsynced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

// Stats counts what a run did.
type Stats struct {
	Sent, Deferred, Bounced, Quarantined int
}

// item is what the scheduler knows of a queued message.
type item struct {
	due      time.Time
	account  string // "" when no account matches
	held     bool
	inflight bool
}

// New makes a flusher. Accounts whose runtime cannot be built (a bad
// tenant, an unreadable CA file) hold their mail; they do not stop others.
func New(cfg *conf.Config, opts Options) *Flusher {
	f := &Flusher{
		cfg: cfg, spool: queue.Open(cfg.SpoolDir), log: opts.Log, trace: opts.Trace,
		accounts: map[string]*account{}, acctErr: map[string]error{}, index: map[string]*item{}, running: map[string]bool{},
	}
	if f.log == nil {
		f.log = log.New(io.Discard, "", 0)
	}
	for i := range cfg.Accounts {
		a := &cfg.Accounts[i]
		acc, err := newAccount(cfg, a, opts.Trace)
		if err != nil {
			f.acctErr[a.Name] = err
			f.log.Printf("account %s: cannot be used: %v", a.Name, err)
			continue
		}
		f.accounts[a.Name] = acc
	}
	return f
}

// Stats returns the counts so far.
func (f *Flusher) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *Flusher) count(fn func(*Stats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}

// RunOnce is one queue run (sendmail -q): pick up, then attempt every
// queued message that is not held, now, whatever its schedule. Paused
// accounts are attempted too: the administrator asked for a run.
func (f *Flusher) RunOnce(ctx context.Context) error {
	for _, a := range f.accounts {
		a.resume()
	}
	if err := f.scan(); err != nil {
		return err
	}
	f.mu.Lock()
	for _, it := range f.index {
		it.due = time.Time{}
	}
	f.mu.Unlock()
	done := make(chan string, len(f.cfg.Accounts)+1)
	for n := f.launch(ctx, done); n > 0; n-- {
		<-done
	}
	f.closeJournal()
	return nil
}

// scan picks up dropped mail and rebuilds the schedule from the spool.
func (f *Flusher) scan() error {
	f.spool.RecoverJournals()
	f.spool.Tidy()
	if err := f.pickup(); err != nil {
		return err
	}
	ids, err := f.spool.IDs()
	if err != nil {
		return err
	}
	index := make(map[string]*item, len(ids))
	for _, id := range ids {
		if it := f.describe(id); it != nil {
			index[id] = it
		}
	}
	f.mu.Lock()
	for id, old := range f.index {
		if it, ok := index[id]; ok && old.inflight {
			it.inflight = true
		}
	}
	f.index = index
	f.mu.Unlock()
	return nil
}

// pickup moves dropped mail into the queue and schedules it now.
func (f *Flusher) pickup() error {
	picked, quarantined, err := f.spool.Pickup()
	for _, q := range quarantined {
		f.log.Printf("%s: quarantined: %s", q.ID, q.Reason)
		f.count(func(s *Stats) { s.Quarantined++ })
	}
	for _, id := range picked {
		if it := f.describe(id); it != nil {
			f.mu.Lock()
			f.index[id] = it
			f.mu.Unlock()
		}
	}
	return err
}

// describe reads what the scheduler needs of an entry.
func (f *Flusher) describe(id string) *item {
	e, err := f.spool.Open(id)
	if err != nil {
		return nil
	}
	defer e.Close()
	st, err := f.spool.LoadState(id)
	if err != nil {
		return nil
	}
	return &item{due: st.NextAttempt, held: st.Held, account: f.route(&e.Envelope)}
}

// route names the account that delivers a message: the one the envelope
// names (a bounce goes back through the account of the bounced message),
// else the one whose senders match, "" when none does.
func (f *Flusher) route(env *queue.Envelope) string {
	if env.Account != "" && f.cfg.Account(env.Account) != nil {
		return env.Account
	}
	if a := f.cfg.AccountFor(env.Sender); a != nil {
		return a.Name
	}
	return ""
}

// launch starts delivering every due message: one goroutine per account
// (accounts never wait for each other), each with up to its connection
// limit. An account already delivering is left to finish its batch. Each
// finished account is reported on done; launch returns how many started.
func (f *Flusher) launch(ctx context.Context, done chan<- string) int {
	now := time.Now()
	byAccount := map[string][]string{}
	f.mu.Lock()
	for id, it := range f.index {
		if it.held || it.inflight || it.due.After(now) || f.running[it.account] {
			continue
		}
		it.inflight = true
		byAccount[it.account] = append(byAccount[it.account], id)
	}
	for name := range byAccount {
		f.running[name] = true
	}
	f.mu.Unlock()
	for name, ids := range byAccount {
		sort.Strings(ids) // oldest first: IDs sort by time
		acc := f.accounts[name]
		go func() {
			f.runAccount(ctx, acc, name, ids)
			f.mu.Lock()
			delete(f.running, name)
			f.mu.Unlock()
			done <- name
		}()
	}
	return len(byAccount)
}

// runAccount delivers ids through one account with its connections.
func (f *Flusher) runAccount(ctx context.Context, acc *account, name string, ids []string) {
	if acc == nil {
		f.holdUnroutable(name, ids)
		return
	}
	work := make(chan string)
	workers := min(acc.conf.MaxConnections, len(ids))
	var wg sync.WaitGroup
	var mu sync.Mutex
	active := workers
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := acc.sender()
			defer func() { s.Close() }()
			for id := range work {
				// The account may have been paused while this message
				// waited for a connection.
				if until, fe := acc.paused(time.Now()); fe != nil {
					f.deferPaused(id, acc, until, fe)
					continue
				}
				out := f.deliver(ctx, acc, s, id)
				f.done(id, out)
				if out.fewerConnections {
					// Exchange allows 3 connections per mailbox, and other
					// hosts may hold some: give this one up; the others go
					// on with the batch. When even one is refused, pause.
					mu.Lock()
					last := active == 1
					if !last {
						active--
					}
					mu.Unlock()
					if !last {
						return
					}
					acc.pause(out.due, failure.New(failure.Throttled, "Exchange refused even a single connection for "+acc.conf.Mailbox+" (432 4.3.2): other clients hold its 3 connections"))
				}
				if out.reconnect {
					s.Close()
					s = acc.sender()
				}
			}
		}()
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			f.done(id, outcome{due: time.Now()})
			continue
		}
		if until, err := acc.paused(time.Now()); err != nil {
			f.deferPaused(id, acc, until, err)
			continue
		}
		work <- id
	}
	close(work)
	wg.Wait()
}

// done records the outcome of an attempt in the schedule.
func (f *Flusher) done(id string, out outcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it := f.index[id]
	if it == nil {
		return
	}
	if out.removed {
		delete(f.index, id)
		return
	}
	it.inflight = false
	if !out.due.IsZero() {
		it.due = out.due
	}
	it.held = it.held || out.held
}

// nextDue returns when the next message falls due (zero: none queued).
// Messages of an account busy with a batch wait for that batch to end.
func (f *Flusher) nextDue() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var next time.Time
	for _, it := range f.index {
		if it.held || it.inflight || f.running[it.account] {
			continue
		}
		if next.IsZero() || it.due.Before(next) {
			next = it.due
		}
	}
	return next
}

// busy reports whether anything is queued that is not held, or in flight.
func (f *Flusher) busy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.running) > 0 {
		return true
	}
	for _, it := range f.index {
		if !it.held {
			return true
		}
	}
	return false
}

// backoff is the delay before attempt n+1: retry_min doubled per attempt,
// at most retry_max, with ±20 % jitter so that a backlog does not retry in
// lockstep.
func (f *Flusher) backoff(attempts int) time.Duration {
	d := f.cfg.Queue.RetryMin
	for i := 1; i < attempts && d < f.cfg.Queue.RetryMax; i++ {
		d *= 2
	}
	d = min(d, f.cfg.Queue.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func fmtDelay(d time.Duration) string {
	return fmt.Sprintf("%.2f", d.Seconds())
}
