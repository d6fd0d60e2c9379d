package flusher

import (
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/dsn"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// maxOriginal caps the original message returned in a bounce.
const maxOriginal = 1 << 20

// bounce queues a DSN for the recipients that failed permanently and marks
// them bounced. No DSN is sent for a DSN, for the null sender, or to
// recipients who asked for none (-N never): no loop is possible. The DSN is
// queued before the recipients are marked, so a crash can repeat a DSN but
// never lose one.
func (f *Flusher) bounce(e *queue.Entry, st *queue.State, reason string) error {
	env := &e.Envelope
	var failed []dsn.Recipient
	for _, t := range f.targets(env) {
		for _, r := range st.Recipients {
			if r.Addr != t.addr || r.Status != queue.Failed {
				continue
			}
			if strings.Contains(strings.ToUpper(t.orig.Notify), "NEVER") {
				continue
			}
			failed = append(failed, dsn.Recipient{
				Addr: t.addr, ORcpt: t.orig.Addr, Action: "failed",
				Diagnostic: r.Reply, // dsn takes the status code from it
				RemoteMTA:  hostOf(st.Account, f), LastAttempt: st.LastAttempt,
			})
		}
	}
	// A report that came in through sendmail (a DSN, an auto-reply) is not
	// answered with another: no loop can pass through us.
	if len(failed) > 0 && !env.IsDSN && env.Sender != "" && !dsn.IsBounce(e.Message()) {
		if err := f.queueDSN(e, failed, reason); err != nil {
			return err
		}
		f.log.Printf("%s: sender non-delivery notification queued for <%s> (%d recipient(s))", e.ID, env.Sender, len(failed))
		f.count(func(s *Stats) { s.Bounced += len(failed) })
	}
	for i := range st.Recipients {
		if st.Recipients[i].Status == queue.Failed {
			st.Recipients[i].Status = queue.Bounced
		}
	}
	return nil
}

func (f *Flusher) queueDSN(e *queue.Entry, failed []dsn.Recipient, reason string) error {
	env := &e.Envelope
	report := dsn.Report{
		ReportingMTA: f.cfg.Hostname, QueueID: e.ID, Arrival: env.Submitted, EnvID: env.EnvID,
		Sender: env.Sender, From: "MAILER-DAEMON@" + f.cfg.Hostname,
		Recipients: failed, Reason: reason, Original: e.Message(), Ret: env.Ret, MaxOriginal: maxOriginal,
	}
	me := "MAILER-DAEMON"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	bounceEnv := &queue.Envelope{
		Account:    f.route(env),
		Recipients: []queue.Recipient{{Addr: env.Sender, Notify: "NEVER"}},
		IsDSN:      true, Submitted: time.Now().UTC(), UID: os.Getuid(), User: me,
	}
	id, err := f.spool.Enqueue(bounceEnv, func(w io.Writer) error {
		return dsn.Write(&lfWriter{w: w}, report)
	})
	if err == nil {
		f.log.Printf("%s: bounce queued as %s", e.ID, id)
	}
	return err
}

func hostOf(account string, f *Flusher) string {
	if a := f.accounts[account]; a != nil {
		h := a.relay
		h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
		if i := strings.IndexAny(h, ":/"); i > 0 {
			h = h[:i]
		}
		return h
	}
	return ""
}

// lfWriter stores CRLF as LF, the spool's canonical form.
type lfWriter struct {
	w  io.Writer
	cr bool
}

func (l *lfWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p))
	for _, b := range p {
		if l.cr && b != '\n' {
			out = append(out, '\r')
		}
		l.cr = b == '\r'
		if !l.cr {
			out = append(out, b)
		}
	}
	if _, err := l.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
