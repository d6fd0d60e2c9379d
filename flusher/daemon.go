package flusher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/fsnotify/fsnotify"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// DaemonOptions tune Daemon.
type DaemonOptions struct {
	// IdleExit > 0: exit once nothing has been pending for this long (the
	// flusher sendmail starts by itself in single-user mode).
	IdleExit time.Duration
	// Reload, on a signal on Hup, reads the configuration again.
	Reload func() (*conf.Config, error)
	Hup    <-chan os.Signal
}

// ErrRunning: another flusher holds the spool's flusher lock.
var ErrRunning = errors.New("another flusher is already running for this spool")

// Daemon runs the flusher until ctx ends: new mail is picked up as soon as
// sendmail renames it into drop/ (inotify), deferred mail when it falls
// due. When ctx ends, the transactions in flight finish, then it returns.
func (f *Flusher) Daemon(ctx context.Context, opts DaemonOptions) error {
	if err := f.spool.Init(); err != nil {
		return err
	}
	lock, err := f.spool.LockFlusher()
	if errors.Is(err, queue.ErrBusy) {
		return ErrRunning
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	defer f.closeJournal()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", f.cfg.SpoolDir, err)
	}
	defer w.Close()
	drop := filepath.Join(f.cfg.SpoolDir, queue.DropDir)
	if err := w.Add(drop); err != nil {
		return fmt.Errorf("watching %s: %w", drop, err)
	}
	if err := f.scan(); err != nil {
		return err
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
	f.log.Printf("flusher started: spool %s, %d account(s)", f.cfg.SpoolDir, len(f.accounts))

	done := make(chan string, 64)
	running := 0
	idleSince := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	// Batches run under bctx: a reload cancels it, so that batches stop
	// taking new messages, and applies the new configuration once the
	// transactions in flight have finished.
	var batch struct {
		ctx    context.Context
		cancel context.CancelFunc
	}
	batch.ctx, batch.cancel = context.WithCancel(ctx)
	defer func() { batch.cancel() }()
	reloading, retrying := false, false
	for {
		if (reloading || retrying) && running == 0 {
			load := opts.Reload
			if !reloading {
				load = nil
			}
			f.reload(load)
			reloading, retrying = false, false
			batch.ctx, batch.cancel = context.WithCancel(ctx)
		}
		if !reloading && !retrying {
			running += f.launch(batch.ctx, done)
		}
		f.status()
		wake := time.Hour
		if next := f.nextDue(); !next.IsZero() {
			wake = max(time.Until(next), 10*time.Millisecond)
		}
		if f.removals.unsynced() {
			wake = min(wake, removalSync)
		}
		if f.busy() {
			idleSince = time.Now()
		} else if opts.IdleExit > 0 {
			left := opts.IdleExit - time.Since(idleSince)
			if left <= 0 {
				f.log.Printf("flusher exiting: queue empty")
				return nil
			}
			wake = min(wake, left)
		}
		timer.Reset(wake)
		select {
		case <-ctx.Done():
			daemon.SdNotify(false, daemon.SdNotifyStopping)
			f.log.Printf("flusher stopping: finishing %d batch(es) in flight", running)
			for ; running > 0; running-- {
				<-done
			}
			return nil
		case <-done:
			running--
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("inotify watch ended")
			}
			switch filepath.Base(ev.Name) {
			case queue.RescanFile:
				os.Remove(ev.Name)
				f.scan()
				continue
			case queue.RetryFile:
				// exo-sendmail queue retry: as a reload without re-reading
				// the configuration, once the batches in flight are done.
				os.Remove(ev.Name)
				retrying = true
				batch.cancel()
				continue
			}
			if err := f.pickup(); err != nil {
				f.log.Printf("pickup: %v", err)
			}
		case err := <-w.Errors:
			// Events were lost (queue overflow): a full scan finds them.
			f.log.Printf("inotify: %v; rescanning", err)
			f.scan()
		case <-opts.Hup:
			reloading = true
			batch.cancel()
		case <-timer.C:
			f.removals.flush(f.spool)
		}
	}
}

// reload takes a new configuration (SIGHUP): accounts are rebuilt, pauses
// lifted, everything held for an account's configuration retried now.
func (f *Flusher) reload(load func() (*conf.Config, error)) {
	daemon.SdNotify(false, daemon.SdNotifyReloading)
	defer daemon.SdNotify(false, daemon.SdNotifyReady)
	if load != nil {
		cfg, err := load()
		if err != nil {
			f.log.Printf("reload failed, keeping the running configuration: %v", err)
			return
		}
		if cfg.SpoolDir != f.cfg.SpoolDir {
			f.log.Printf("reload: spool_dir changed; restart the flusher for that to take effect")
			cfg.SpoolDir = f.cfg.SpoolDir
		}
		fresh := New(cfg, Options{Log: f.log, Trace: f.trace})
		f.mu.Lock()
		f.cfg, f.accounts, f.acctErr = cfg, fresh.accounts, fresh.acctErr
		f.mu.Unlock()
	}
	for _, a := range f.accounts {
		a.resume()
	}
	f.scan()
	f.mu.Lock()
	for _, it := range f.index {
		if !it.inflight {
			it.due = time.Time{}
		}
	}
	f.mu.Unlock()
	f.log.Printf("pauses lifted; retrying the queue now")
}

// status tells systemd what the flusher is doing.
func (f *Flusher) status() {
	f.mu.Lock()
	queued := len(f.index)
	st := f.stats
	f.mu.Unlock()
	daemon.SdNotify(false, fmt.Sprintf("STATUS=%d queued, %d sent, %d deferred, %d bounced", queued, st.Sent, st.Deferred, st.Bounced))
}
