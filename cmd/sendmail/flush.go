package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/flusher"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// idleExitEnv, set by ensureFlusher, makes a detached flusher exit once the
// queue has been empty this long.
const idleExitEnv = "EXO_SENDMAIL_IDLE_EXIT"

// runFlusher runs the queue: once (-q), or as the foreground daemon (-bd,
// or -q with an interval: new mail is picked up at once anyway).
func runFlusher(cfg *conf.Config, daemon bool, interval time.Duration, verbose bool) int {
	if code := becomeSpoolOwner(cfg, "run the queue"); code != exOK {
		return code
	}
	logger, closeLog := flusherLog(cfg, verbose)
	defer closeLog()
	var trace io.Writer
	if verbose {
		trace = os.Stderr
	}
	f := flusher.New(cfg, flusher.Options{Log: logger, Trace: trace})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if !daemon && interval == 0 {
		if err := f.RunOnce(ctx); err != nil {
			return failQueue("sendmail: queue run failed", err)
		}
		if verbose {
			st := f.Stats()
			fmt.Fprintf(os.Stderr, "sendmail: queue run done: %d sent, %d deferred, %d bounced, %d quarantined\n", st.Sent, st.Deferred, st.Bounced, st.Quarantined)
		}
		return exOK
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	idle, _ := time.ParseDuration(os.Getenv(idleExitEnv))
	err := f.Daemon(ctx, flusher.DaemonOptions{
		IdleExit: idle,
		Hup:      hup,
		Reload:   func() (*conf.Config, error) { return conf.Load(cfg.Path) },
	})
	if errors.Is(err, flusher.ErrRunning) {
		if idle > 0 {
			return exOK // started by sendmail, and one runs already: fine
		}
		fmt.Fprintf(os.Stderr, "sendmail: %v (%s); use 'sendmail -q' for a one-off run\n", err, filepath.Join(cfg.SpoolDir, queue.LockFile))
		return exTempFail
	}
	if err != nil {
		return failQueue("sendmail: flusher stopped", err)
	}
	return exOK
}

// becomeSpoolOwner makes the process the owner of the spool (the service
// user), which alone may read the queue and the account secrets. Root
// becomes that user (so that token cache and state files keep the right
// owner); anyone else who is not that user is refused.
func becomeSpoolOwner(cfg *conf.Config, what string) int {
	dropSetgid()
	st, err := os.Stat(cfg.SpoolDir)
	if errors.Is(err, os.ErrNotExist) && os.Getuid() != 0 {
		// A spool that was never used (a user's own, or a new
		// configuration): it is the caller's to create. Root does not
		// create one: it would belong to root, not the service user.
		if err := queue.Open(cfg.SpoolDir).Init(); err != nil {
			return failQueue("sendmail: cannot create the spool", err)
		}
		return exOK
	}
	if err != nil {
		return failQueue("sendmail: cannot "+what, err)
	}
	owner := int(st.Sys().(*syscall.Stat_t).Uid)
	uid := os.Getuid()
	switch {
	case uid == owner:
		return exOK
	case uid == 0:
		return switchUser(owner)
	}
	name := strconv.Itoa(owner)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	fmt.Fprintf(os.Stderr, "sendmail: permission denied: only root and %s may %s of %s (the queue and the account secrets are private to the service user)\n", name, what, cfg.SpoolDir)
	return exNoPerm
}

// switchUser turns root into uid, with its groups.
func switchUser(uid int) int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sendmail: the spool belongs to uid %d, which has no user entry: %v\n", uid, err)
		return exNoUser
	}
	gid, _ := strconv.Atoi(u.Gid)
	var groups []int
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, n)
			}
		}
	}
	// Groups first: once the uid is dropped they can no longer be set.
	if err := unix.Setgroups(groups); err == nil {
		if err = unix.Setresgid(gid, gid, gid); err == nil {
			err = unix.Setresuid(uid, uid, uid)
		}
		if err == nil {
			os.Setenv("HOME", u.HomeDir)
			os.Setenv("USER", u.Username)
			os.Setenv("LOGNAME", u.Username)
			return exOK
		}
	}
	fmt.Fprintf(os.Stderr, "sendmail: cannot become %s, the spool's owner: %v\n", u.Username, err)
	return exOSErr
}

// dropSetgid gives up the spool group of a setgid sendmail: only the
// enqueue needs it.
func dropSetgid() {
	if gid := os.Getgid(); os.Getegid() != gid {
		unix.Setresgid(gid, gid, gid)
	}
}

// flusherLog chooses where delivery log lines go: stderr in a terminal,
// under systemd (journald reads it) or with -v; syslog otherwise (a -q run
// from cron must not mail its output); a file in state_dir when there is
// no syslog (a container).
func flusherLog(cfg *conf.Config, verbose bool) (*log.Logger, func()) {
	if verbose || os.Getenv("JOURNAL_STREAM") != "" || isTerminal(os.Stderr) {
		return log.New(os.Stderr, "", logFlags()), func() {}
	}
	if w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "exo-sendmail"); err == nil {
		return log.New(w, "", 0), func() { w.Close() }
	}
	os.MkdirAll(cfg.StateDir, 0o700)
	if f, err := os.OpenFile(filepath.Join(cfg.StateDir, "flusher.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		return log.New(f, "exo-sendmail: ", log.LstdFlags), func() { f.Close() }
	}
	return log.New(os.Stderr, "", logFlags()), func() {}
}

// logFlags: journald stamps lines itself.
func logFlags() int {
	if os.Getenv("JOURNAL_STREAM") != "" {
		return 0
	}
	return log.LstdFlags
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ensureFlusher makes sure a flusher will deliver what was just queued, in
// single-user mode: when the caller owns the spool and no flusher holds
// the lock, a detached `sendmail -bd` is started that exits once the queue
// is empty. An installed system runs the systemd service instead.
func ensureFlusher(cfg *conf.Config) {
	if !cfg.Flusher.AutoStart || len(cfg.Accounts) == 0 {
		return
	}
	st, err := os.Stat(cfg.SpoolDir)
	if err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != os.Getuid() {
		return
	}
	spool := queue.Open(cfg.SpoolDir)
	if spool.FlusherRunning() {
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	args := []string{"-bd"}
	if cfg.Path != "" {
		args = append(args, "-C", cfg.Path)
	}
	cmd := exec.Command(self, args...)
	cmd.Args[0] = "sendmail"
	idle := os.Getenv(idleExitEnv)
	if idle == "" {
		idle = "60s"
	}
	cmd.Env = append(os.Environ(), idleExitEnv+"="+idle, "EXO_SENDMAIL_CONFIG=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() == nil {
		cmd.Process.Release()
	}
}

// failQueue prints a one-line error about the spool and returns the
// sysexits code its cause calls for (the same as for a failed enqueue).
func failQueue(prefix string, err error) int {
	fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
	code, _, _ := spoolFailure(err)
	return code
}
