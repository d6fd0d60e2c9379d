package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
)

// lockPatience is how long we wait for another process's fetch before
// fetching ourselves; its own fetch is bounded by the HTTP timeout.
const lockPatience = time.Minute

// errLockWait is recorded when another process held the cache lock too long.
var errLockWait = errors.New("token cache lock held by another process for too long; fetched without it")

// maxCacheFile bounds what we read from a cache file: a token is a few KB.
const maxCacheFile = 64 << 10

// readCache returns the token in CacheDir/<key>.json. A file that is missing,
// not a regular file, not ours, readable by others, unreadable or corrupt is
// ignored: the next write replaces it.
func (s *Source) readCache() (entry, bool) {
	f, err := os.OpenFile(s.cachePath(".json"), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return entry{}, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return entry{}, false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return entry{}, false
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCacheFile))
	if err != nil {
		return entry{}, false
	}
	var e entry
	if json.Unmarshal(data, &e) != nil || e.AccessToken == "" || e.Expiry.IsZero() ||
		strings.ContainsFunc(e.AccessToken, func(r rune) bool { return r <= ' ' || r > 0x7e }) {
		return entry{}, false
	}
	return e, true
}

// writeCache replaces CacheDir/<key>.json, durably and atomically, with a
// 0600 file.
func (s *Source) writeCache(e entry) error {
	dir := s.cfg.CacheDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("token cache directory: %w", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	if err := atomicfile.Write(s.cachePath(".json"), b, 0o600, true); err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	return nil
}

// lock takes an exclusive flock on CacheDir/<key>.lock, polling so that ctx
// is honoured. The returned unlock is never nil. The kernel drops the lock if
// the process dies.
func (s *Source) lock(ctx context.Context) (unlock func(), err error) {
	nop := func() {}
	if err := os.MkdirAll(s.cfg.CacheDir, 0o700); err != nil {
		return nop, fmt.Errorf("token cache directory: %w", err)
	}
	f, err := os.OpenFile(s.cachePath(".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nop, fmt.Errorf("token cache lock: %w", err)
	}
	giveUp := time.NewTimer(lockPatience)
	defer giveUp.Stop()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nop, fmt.Errorf("token cache lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nop, ctx.Err()
		case <-giveUp.C:
			f.Close()
			return nop, fmt.Errorf("%s: %w", f.Name(), errLockWait)
		case <-time.After(wait):
		}
	}
}

func (s *Source) cachePath(ext string) string {
	return filepath.Join(s.cfg.CacheDir, s.key+ext)
}
