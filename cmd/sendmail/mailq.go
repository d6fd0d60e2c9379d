package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/flusher"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// runMailq lists the queue (mailq, sendmail -bp), as Postfix does: queue
// ID ('!' when held), size, arrival, sender, then why it waits and when it
// is next attempted, then each recipient.
func runMailq(cfg *conf.Config) int {
	if code := becomeSpoolOwner(cfg, "list the queue"); code != exOK {
		return code
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	n, size, err := listQueue(w, cfg)
	if err != nil {
		w.Flush()
		return failQueue("mailq: cannot read the queue", err)
	}
	if n == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return exOK
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d Request%s.\n", (size+1023)/1024, n, plural(n))
	return exOK
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// listQueue writes the listing and returns the number of messages and
// their total size.
func listQueue(w io.Writer, cfg *conf.Config) (int, int64, error) {
	spool := queue.Open(cfg.SpoolDir)
	ids, err := spool.IDs()
	if err != nil {
		return 0, 0, err
	}
	dropped, err := spool.Dropped()
	if err != nil {
		return 0, 0, err
	}
	paused := map[string]*flusher.Status{}
	for _, a := range cfg.Accounts {
		if st := flusher.AccountStatus(cfg, a.Name); st != nil {
			paused[a.Name] = st
		}
	}
	n, total := 0, int64(0)
	header := func() {
		if n == 0 {
			fmt.Fprintln(w, "-Queue ID-           --Size-- ----Arrival Time---- -Sender/Recipient-------")
		}
		n++
	}
	for _, id := range dropped {
		e, err := spool.OpenDropped(id)
		if err != nil {
			continue // picked up meanwhile, or not ours: the flusher deals with it
		}
		header()
		total += e.Size
		writeEntry(w, cfg, e, &queue.State{LastError: "waiting for the flusher to pick it up"}, nil)
		e.Close()
	}
	for _, id := range ids {
		e, err := spool.Open(id)
		if err != nil {
			continue
		}
		st, err := spool.LoadState(id)
		if err != nil {
			st = &queue.State{LastError: err.Error()}
		}
		header()
		total += e.Size
		acct := firstOr(st.Account, e.Envelope.Account)
		if acct == "" {
			if a := cfg.AccountFor(e.Envelope.Sender); a != nil {
				acct = a.Name
			}
		}
		writeEntry(w, cfg, e, st, paused[acct])
		e.Close()
	}
	return n, total, nil
}

func writeEntry(w io.Writer, cfg *conf.Config, e *queue.Entry, st *queue.State, pause *flusher.Status) {
	mark := " "
	if st.Held {
		mark = "!"
	}
	sender := e.Envelope.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	fmt.Fprintf(w, "%s%s %8d %s  %s\n", e.ID, mark, e.Size, e.Envelope.Submitted.Local().Format("Mon Jan _2 15:04:05"), sender)
	reason := st.LastError
	if pause != nil {
		reason = fmt.Sprintf("account %s paused until %s: %s", pause.Account, pause.PausedUntil.Local().Format("15:04:05"), pause.Error)
		if pause.Remedy != "" {
			reason += " (" + pause.Remedy + ")"
		}
	}
	if st.Held {
		reason = "held by the administrator (exo-sendmail queue release " + e.ID + ")"
	}
	if reason != "" {
		fmt.Fprintf(w, "%*s(%s)\n", 42, "", oneLine(reason))
	}
	if st.Attempts > 0 && !st.Held {
		fmt.Fprintf(w, "%*s(attempt %d; next attempt %s)\n", 42, "", st.Attempts, nextAttempt(st.NextAttempt))
	}
	status := map[string]queue.RecipientInfo{}
	for _, r := range st.Recipients {
		status[strings.ToLower(r.Addr)] = r
	}
	for _, r := range e.Envelope.Recipients {
		line := r.Addr
		for _, a := range cfg.Resolve(r.Addr) {
			if !strings.EqualFold(a, r.Addr) {
				line += " -> " + a
			}
			if s, ok := status[strings.ToLower(a)]; ok && s.Status != queue.Pending {
				line += " [" + s.Status + "]"
			}
		}
		fmt.Fprintf(w, "%*s%s\n", 42, "", line)
	}
	fmt.Fprintln(w)
}

func nextAttempt(t time.Time) string {
	if t.IsZero() || time.Until(t) <= 0 {
		return "now"
	}
	if time.Until(t) < 24*time.Hour {
		return t.Local().Format("15:04:05")
	}
	return t.Local().Format("Jan _2 15:04")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// showEntry prints one entry in full: envelope, delivery state, headers.
func showEntry(w io.Writer, cfg *conf.Config, id string) error {
	spool := queue.Open(cfg.SpoolDir)
	e, err := spool.Open(id)
	if errors.Is(err, queue.ErrNotFound) {
		if e, err = spool.OpenDropped(id); err != nil {
			return fmt.Errorf("%s: no such message in %s", id, cfg.SpoolDir)
		}
	}
	if err != nil {
		return err
	}
	defer e.Close()
	st, err := spool.LoadState(id)
	if err != nil {
		return err
	}
	env := e.Envelope
	fmt.Fprintf(w, "queue id:     %s\nsize:         %d\nsubmitted:    %s by %s (uid %d)\nsender:       <%s>\n",
		e.ID, e.Size, env.Submitted.Local().Format(time.RFC1123Z), env.User, env.UID, env.Sender)
	if env.Ret != "" || env.EnvID != "" {
		fmt.Fprintf(w, "dsn:          ret=%s envid=%s\n", env.Ret, env.EnvID)
	}
	fmt.Fprintf(w, "attempts:     %d\nnext attempt: %s\nheld:         %v\n", st.Attempts, nextAttempt(st.NextAttempt), st.Held)
	if st.LastError != "" {
		fmt.Fprintf(w, "last error:   %s (%s)\n", oneLine(st.LastError), st.ErrorClass)
	}
	for _, r := range env.Recipients {
		fmt.Fprintf(w, "recipient:    %s -> %s\n", r.Addr, strings.Join(cfg.Resolve(r.Addr), ", "))
	}
	for _, r := range st.Recipients {
		fmt.Fprintf(w, "  %-30s %-8s %s\n", r.Addr, firstOr(r.Status, "pending"), oneLine(r.Reply))
	}
	fmt.Fprintln(w, "headers:")
	sc := bufio.NewScanner(e.Message())
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && sc.Text() != "" {
		fmt.Fprintf(w, "  %s\n", sc.Text())
	}
	return nil
}

func firstOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
