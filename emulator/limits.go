package emulator

import (
	"strings"
	"time"
)

// limits holds the Exchange Online submission limits per mailbox and the
// state to enforce them. They apply only with Config.Limits; the numbers are
// fields so the package's tests can lower them.
type limits struct {
	connections      int           // concurrent authenticated SMTP connections (432 4.3.2 beyond)
	perMinute        int           // SMTP messages per 60 s (451 4.7.500 beyond)
	perDay           int           // recipients per rolling 24 h, SMTP and Graph (554 5.2.0 beyond)
	rcptsPerMessage  int           // RecipientLimits (452 4.5.3 beyond)
	graphConcurrency int           // concurrent Graph requests (429 beyond)
	window           time.Duration // the rolling window of perDay

	logons map[string]int         // authenticated SMTP connections
	sent   map[string][]time.Time // SMTP messages accepted, last minute
	rcpts  map[string][]batch     // recipients accepted, last window
	busy   map[string]int         // Graph requests in flight
}

type batch struct {
	at time.Time
	n  int
}

func newLimits() limits {
	return limits{
		connections:      3,
		perMinute:        30,
		perDay:           10000,
		rcptsPerMessage:  500,
		graphConcurrency: 4,
		window:           24 * time.Hour,
		logons:           map[string]int{},
		sent:             map[string][]time.Time{},
		rcpts:            map[string][]batch{},
		busy:             map[string]int{},
	}
}

// logon takes one of the mailbox's SMTP connection slots; false means the
// mailbox already has its limit. release gives the slot back.
func (e *Emulator) logon(mailbox string) (release func(), ok bool) {
	key := strings.ToLower(mailbox)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.Limits && e.limits.logons[key] >= e.limits.connections {
		e.stats.ThrottleReplies++
		return nil, false
	}
	e.limits.logons[key]++
	return func() {
		e.mu.Lock()
		e.limits.logons[key]--
		e.mu.Unlock()
	}, true
}

// rateExceeded reports whether the mailbox has sent its messages for this
// minute over SMTP, counting the refusal.
func (e *Emulator) rateExceeded(mailbox string) bool {
	if !e.cfg.Limits {
		return false
	}
	key := strings.ToLower(mailbox)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	times := e.limits.sent[key]
	for len(times) > 0 && now.Sub(times[0]) >= time.Minute {
		times = times[1:]
	}
	e.limits.sent[key] = times
	if len(times) >= e.limits.perMinute {
		e.stats.ThrottleReplies++
		return true
	}
	return false
}

// quotaExceeded reports whether n more recipients would take the mailbox
// over its recipients per rolling window, counting the refusal, and when
// enough of the window frees for them.
func (e *Emulator) quotaExceeded(mailbox string, n int) (bool, time.Duration) {
	if !e.cfg.Limits {
		return false, 0
	}
	key := strings.ToLower(mailbox)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	batches := e.limits.rcpts[key]
	for len(batches) > 0 && now.Sub(batches[0].at) >= e.limits.window {
		batches = batches[1:]
	}
	e.limits.rcpts[key] = batches
	used := 0
	for _, b := range batches {
		used += b.n
	}
	if used+n <= e.limits.perDay {
		return false, 0
	}
	e.stats.ThrottleReplies++
	free := used + n - e.limits.perDay
	for _, b := range batches {
		free -= b.n
		if free <= 0 {
			return true, b.at.Add(e.limits.window).Sub(now)
		}
	}
	return true, e.limits.window
}

// submitted records an accepted message for the rate and quota limits.
func (e *Emulator) submitted(via, mailbox string, rcpts int) {
	if !e.cfg.Limits {
		return
	}
	key := strings.ToLower(mailbox)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if via == "smtp" {
		e.limits.sent[key] = append(e.limits.sent[key], now)
	}
	e.limits.rcpts[key] = append(e.limits.rcpts[key], batch{now, rcpts})
}

// rcptLimit is the number of recipients a message may have.
func (e *Emulator) rcptLimit() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.limits.rcptsPerMessage
}

// graphEnter takes one of the mailbox's concurrent Graph request slots.
func (e *Emulator) graphEnter(mailbox string) (release func(), ok bool) {
	key := strings.ToLower(mailbox)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.Limits && e.limits.busy[key] >= e.limits.graphConcurrency {
		e.stats.ThrottleReplies++
		return nil, false
	}
	e.limits.busy[key]++
	return func() {
		e.mu.Lock()
		e.limits.busy[key]--
		e.mu.Unlock()
	}, true
}
