package flusher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/queue"
	"github.com/exo-sendmail/exo-sendmail/rewrite"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// outcome is what an attempt means for the schedule and the connection.
type outcome struct {
	removed          bool      // delivered or bounced: gone from the queue
	due              time.Time // next attempt
	held             bool
	fewerConnections bool // Exchange refused a connection (432): use fewer
	reconnect        bool // the connection is in an unknown state
}

// target is one recipient after aliases, with the DSN parameters of the
// envelope recipient it came from.
type target struct {
	addr string
	orig queue.Recipient
}

// targets resolves the envelope recipients through the aliases.
func (f *Flusher) targets(env *queue.Envelope) []target {
	var out []target
	seen := map[string]bool{}
	for _, r := range env.Recipients {
		for _, a := range f.cfg.Resolve(r.Addr) {
			if k := strings.ToLower(a); !seen[k] {
				seen[k] = true
				out = append(out, target{addr: a, orig: r})
			}
		}
	}
	return out
}

func pendingTargets(st *queue.State, all []target) []target {
	addrs := make([]string, len(all))
	for i, t := range all {
		addrs[i] = t.addr
	}
	left := map[string]bool{}
	for _, a := range st.Pending(addrs) {
		left[a] = true
	}
	var out []target
	for _, t := range all {
		if left[t.addr] {
			out = append(out, t)
		}
	}
	return out
}

// deliver attempts one message through acc on connection s.
func (f *Flusher) deliver(ctx context.Context, acc *account, s transport.Sender, id string) outcome {
	e, err := f.spool.Claim(id)
	if errors.Is(err, queue.ErrNotFound) {
		return outcome{removed: true}
	}
	if err != nil {
		// Another flusher is delivering it, or the file is unreadable.
		return outcome{due: time.Now().Add(f.cfg.Queue.RetryMin)}
	}
	defer e.Close()
	st, err := f.spool.LoadState(id)
	if err != nil {
		f.log.Printf("%s: %v", id, err)
		return outcome{due: time.Now().Add(f.cfg.Queue.RetryMin)}
	}
	if st.Held {
		return outcome{held: true}
	}
	env := &e.Envelope
	now := time.Now()
	pending := pendingTargets(st, f.targets(env))
	if len(pending) == 0 {
		return f.settle(e, st, "")
	}
	if now.Sub(env.Submitted) > f.cfg.Queue.Lifetime {
		reason := fmt.Sprintf("the message could not be delivered within the queue lifetime of %s", f.cfg.Queue.Lifetime)
		for _, t := range pending {
			st.Set(t.addr, queue.Failed, firstNonEmpty(st.LastError, reason))
		}
		return f.settle(e, st, reason)
	}

	// Persist the next attempt before acting: a crash from here on retries
	// later, not at once.
	st.Attempts++
	st.LastAttempt, st.Account = now, acc.conf.Name
	st.NextAttempt = now.Add(f.backoff(st.Attempts))
	attempted, err := f.recordAttempt(id, st)
	if err != nil {
		f.log.Printf("%s: cannot record the attempt, not attempting: %v", id, err)
		return outcome{due: st.NextAttempt}
	}
	defer attempted()
	cp, err := rewrite.Prepare(e.Message(), e.Size, rewrite.Policy{
		Mailbox: acc.conf.Mailbox, SendAs: acc.conf.SendAs, Hostname: f.cfg.Hostname, Resolve: f.cfg.Resolve,
		Date: env.Submitted, QueueID: id,
	})
	if err != nil {
		st.LastError, st.ErrorClass = "preparing the message: "+err.Error(), failure.Temporary.String()
		f.log.Printf("%s: %s", id, st.LastError)
		return f.settle(e, st, "")
	}

	out := outcome{due: st.NextAttempt}
	per := acc.conf.RecipientsPerMessage
	if per <= 0 {
		per = len(pending)
	}
	for len(pending) > 0 {
		chunk := pending[:min(per, len(pending))]
		pending = pending[len(chunk):]
		if free, ok := acc.pace.take(ctx, len(chunk)); !ok {
			if !free.IsZero() {
				fe := failure.New(failure.Throttled, fmt.Sprintf("recipients_per_day limit of %d reached for %s; sending resumes at %s",
					acc.conf.RecipientsPerDay, acc.conf.Mailbox, free.Format(time.RFC3339)))
				acc.pause(free, fe)
				st.LastError, st.ErrorClass, out.due = fe.Reply, fe.Class.String(), free
			}
			break // shutting down: the state already says when to retry
		}
		msg := &transport.Message{
			MailFrom: acc.conf.Mailbox, Ret: env.Ret, EnvID: env.EnvID,
			Body8Bit: cp.Body8Bit, SMTPUTF8: env.SMTPUTF8, Size: cp.Size, Open: cp.Open,
		}
		for _, t := range chunk {
			r := transport.Recipient{Addr: t.addr, Notify: t.orig.Notify, ORcpt: t.orig.ORcpt}
			if r.ORcpt == "" && !strings.EqualFold(t.addr, t.orig.Addr) {
				r.ORcpt = t.orig.Addr
			}
			msg.Recipients = append(msg.Recipients, r)
		}
		// The transaction in flight finishes even when the flusher is told
		// to stop: the transport's own timeouts bound it.
		start := time.Now()
		res, err := f.send(context.WithoutCancel(ctx), acc, s, msg)
		if err != nil {
			acc.pace.refund(len(chunk))
			fe := asFailure(err)
			if len(res.Rejected) == 0 || fe.Class == failure.Config || fe.Class == failure.Throttled {
				if f.failed(id, acc, st, env, chunk, fe, start, &out) {
					break
				}
				continue
			}
			// Every recipient was refused at RCPT, each for its own reason:
			// record each as it is (below), so a 5xx bounces and a 4xx waits.
			f.count(func(s *Stats) { s.Deferred++ })
		} else {
			acc.resume()
		}
		for _, t := range chunk {
			if rej := res.Rejected[t.addr]; rej != nil {
				status := queue.Pending
				if rej.Class == failure.Permanent {
					status = queue.Failed
				}
				st.Set(t.addr, status, rej.Reply)
				st.LastError, st.ErrorClass = rej.Reply, rej.Class.String()
				f.logAttempt(id, t, acc, env, st.Attempts, statusWord(status), rej.Reply)
				continue
			}
			st.Set(t.addr, queue.Sent, res.Reply)
			f.logAttempt(id, t, acc, env, st.Attempts, "sent", res.Reply)
			f.count(func(s *Stats) { s.Sent++ })
		}
	}
	// A pause or a spent budget pushes the next attempt out: persist it, so
	// that the state (and mailq) says when.
	if out.due.After(st.NextAttempt) {
		st.NextAttempt = out.due
	}
	o := f.settle(e, st, "")
	if !o.removed {
		o.due = out.due
	}
	o.fewerConnections, o.reconnect = out.fewerConnections, out.reconnect
	return o
}

// send sends through the account's transport; a message over Graph's
// request ceiling goes through SMTP when the account allows it.
func (f *Flusher) send(ctx context.Context, acc *account, s transport.Sender, msg *transport.Message) (transport.Result, error) {
	res, err := s.Send(ctx, msg)
	if err != nil && errors.Is(err, transport.ErrTooLargeForGraph) && acc.graph != nil && acc.smtp != nil {
		smtp := acc.smtp()
		defer smtp.Close()
		return smtp.Send(ctx, msg)
	}
	return res, err
}

// failed records a transaction that failed as a whole. It returns true when
// the rest of the message's recipients must wait too.
func (f *Flusher) failed(id string, acc *account, st *queue.State, env *queue.Envelope, chunk []target, fe *failure.Error, start time.Time, out *outcome) bool {
	reply := fe.Error()
	st.LastError, st.ErrorClass = reply, fe.Class.String()
	status := "deferred"
	switch fe.Class {
	case failure.Permanent:
		for _, t := range chunk {
			st.Set(t.addr, queue.Failed, reply)
		}
		status = "bounced"
	case failure.Config:
		// Never bounce for a configuration error: hold the account's mail,
		// say once what to fix, and retry with backoff.
		until := acc.pauseGrowing(fe, f.backoff)
		out.due = until
		f.log.Printf("account %s: delivery paused until %s: %s", acc.conf.Name, until.Format(time.TimeOnly), reply)
	case failure.Throttled:
		until := time.Now().Add(throttleDelay(fe, f.cfg.Queue.RetryMin))
		out.due = until
		out.reconnect = true
		// Too many connections costs one connection (the worker decides);
		// any other throttling pauses the whole mailbox.
		if out.fewerConnections = strings.HasPrefix(fe.Reply, "432"); !out.fewerConnections {
			acc.pause(until, fe)
		}
	default:
		out.reconnect = true
		// Entra or Exchange unreachable: every queued message would fail the
		// same way; pause the account instead of asking once per message.
		if acc.accountWide(fe, start) {
			until := acc.pauseGrowing(fe, f.backoff)
			out.due = until
			f.log.Printf("account %s: delivery paused until %s: %s", acc.conf.Name, until.Format(time.TimeOnly), reply)
		}
	}
	for _, t := range chunk {
		f.logAttempt(id, t, acc, env, st.Attempts, status, reply)
	}
	if status == "deferred" {
		f.count(func(s *Stats) { s.Deferred++ })
	}
	return fe.Class != failure.Permanent
}

// throttleDelay is how long to leave a throttled mailbox alone: what the
// server asked for, else a minute for a connection limit, an hour for
// continuous-error throttling or a spent quota.
func throttleDelay(fe *failure.Error, floor time.Duration) time.Duration {
	if fe.RetryAfter > 0 {
		return fe.RetryAfter
	}
	r := fe.Reply
	if strings.Contains(r, "5.2.25") || strings.Contains(r, "QuotaExceeded") {
		return time.Hour
	}
	return max(time.Minute, floor)
}

// settle finishes an attempt: failed recipients are bounced, a message
// with nobody left to deliver to is removed, else the state is saved.
func (f *Flusher) settle(e *queue.Entry, st *queue.State, reason string) outcome {
	if err := f.bounce(e, st, reason); err != nil {
		f.log.Printf("%s: cannot queue the bounce, will try again: %v", e.ID, err)
	}
	if len(pendingTargets(st, f.targets(&e.Envelope))) == 0 && !hasStatus(st, queue.Failed) {
		if err := f.spool.RemoveUnsynced(e.ID); err != nil {
			f.log.Printf("%s: delivered but cannot be removed: %v", e.ID, err)
			return outcome{due: time.Now().Add(f.cfg.Queue.RetryMax)}
		}
		f.removals.note(f.spool)
		f.log.Printf("%s: removed", e.ID)
		return outcome{removed: true}
	}
	if err := f.spool.SaveState(e.ID, st); err != nil {
		f.log.Printf("%s: cannot save the delivery state: %v", e.ID, err)
	}
	return outcome{due: st.NextAttempt}
}

func hasStatus(st *queue.State, status string) bool {
	for _, r := range st.Recipients {
		if r.Status == status {
			return true
		}
	}
	return false
}

// deferPaused records, on a message of a paused account, why it waits, so
// that mailq shows it; a message whose lifetime ended is bounced with the
// reason.
func (f *Flusher) deferPaused(id string, acc *account, until time.Time, fe *failure.Error) {
	f.waitWithReason(id, until, fe, fmt.Sprintf("account %s", acc.conf.Name))
}

// holdUnroutable keeps mail no account can deliver, and says why.
func (f *Flusher) holdUnroutable(name string, ids []string) {
	msg := "no [[account]] is configured: add one to " + firstNonEmpty(f.cfg.Path, "the configuration")
	if name != "" {
		msg = fmt.Sprintf("account %s cannot be used: %v", name, f.acctErr[name])
	} else if len(f.cfg.Accounts) > 0 {
		msg = "no account's senders pattern matches the sender: add a pattern, or an account without senders as the default"
	}
	fe := failure.New(failure.Config, msg)
	until := time.Now().Add(f.cfg.Queue.RetryMax)
	f.log.Printf("%d message(s) held: %s", len(ids), msg)
	for _, id := range ids {
		f.waitWithReason(id, until, fe, "")
	}
}

func (f *Flusher) waitWithReason(id string, until time.Time, fe *failure.Error, who string) {
	e, err := f.spool.Claim(id)
	if err != nil {
		f.done(id, outcome{due: until, removed: errors.Is(err, queue.ErrNotFound)})
		return
	}
	defer e.Close()
	st, err := f.spool.LoadState(id)
	if err != nil {
		f.done(id, outcome{due: until})
		return
	}
	text := fe.Error()
	if who != "" {
		text = who + ": " + text
	}
	if time.Since(e.Envelope.Submitted) > f.cfg.Queue.Lifetime {
		for _, t := range pendingTargets(st, f.targets(&e.Envelope)) {
			st.Set(t.addr, queue.Failed, text)
		}
		st.LastError = text
		f.done(id, f.settle(e, st, fmt.Sprintf("the message waited the whole queue lifetime of %s: %s", f.cfg.Queue.Lifetime, text)))
		return
	}
	// Written once per reason, not per round: with a large queue held
	// behind a broken account, rewriting every state each round would cost
	// more than the round. The schedule keeps the due time.
	if st.LastError != text {
		st.LastError, st.ErrorClass, st.NextAttempt = text, fe.Class.String(), until
		f.spool.SaveState(id, st)
	}
	f.done(id, outcome{due: until})
}

func (f *Flusher) logAttempt(id string, t target, acc *account, env *queue.Envelope, attempt int, status, reply string) {
	orig := ""
	if !strings.EqualFold(t.addr, t.orig.Addr) {
		orig = fmt.Sprintf(", orig_to=<%s>", t.orig.Addr)
	}
	f.log.Printf("%s: to=<%s>%s, relay=%s, delay=%s, attempt=%d, status=%s (%s)",
		id, t.addr, orig, acc.relay, fmtDelay(time.Since(env.Submitted)), attempt, status, oneLine(reply))
}

func statusWord(status string) string {
	if status == queue.Failed {
		return "bounced"
	}
	return "deferred"
}

func asFailure(err error) *failure.Error {
	var fe *failure.Error
	if errors.As(err, &fe) {
		return fe
	}
	return failure.Wrap(failure.Temporary, err)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
