// Package queue is the spool: durable enqueue, pickup of dropped entries,
// listing, claiming, per-message delivery state, hold, quarantine, removal.
//
// Layout of a spool directory (docs/queue-format.md has the details):
//
//	drop/        sendmail writes here (group-writable, sticky): .tmp-* then <id>
//	queue/       accepted entries: <id> (immutable) and <id>.state (replaced atomically)
//	quarantine/  entries the flusher could not parse, with <id>.reason
//	flusher.lock held (flock) by the running flusher
//
// An entry is "EXO-QUEUE 1\n", the envelope as one line of JSON, then the
// message. It is written to a temporary name, fsynced, renamed into place
// and the directory fsynced: a crash at any point leaves either no entry or
// a whole one.
package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
	"golang.org/x/sys/unix"
)

const magic = "EXO-QUEUE 1\n"

// maxEnvelope bounds the envelope line a reader accepts (100,000
// recipients fit): drop/ is written by untrusted users.
const maxEnvelope = 16 << 20

// Directory names inside the spool.
const (
	DropDir       = "drop"
	QueueDir      = "queue"
	QuarantineDir = "quarantine"
	LockFile      = "flusher.lock"
)

// Envelope is what SMTP needs beside the message, and what the submitter was.
type Envelope struct {
	Sender     string      `json:"sender"` // "" is the null sender <>
	Recipients []Recipient `json:"recipients"`
	Ret        string      `json:"ret,omitempty"`   // DSN RET: FULL or HDRS
	EnvID      string      `json:"envid,omitempty"` // DSN ENVID
	Body8Bit   bool        `json:"body8bit,omitempty"`
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
	IsDSN      bool        `json:"dsn,omitempty"`     // a bounce of ours: never bounced
	Account    string      `json:"account,omitempty"` // route through this account (bounces go back the way the message came)
	Submitted  time.Time   `json:"submitted"`
	UID        int         `json:"uid"`
	User       string      `json:"user,omitempty"`
}

// Recipient is one envelope recipient with its DSN parameters.
type Recipient struct {
	Addr   string `json:"addr"`
	Notify string `json:"notify,omitempty"` // NEVER, or a list of SUCCESS,FAILURE,DELAY
	ORcpt  string `json:"orcpt,omitempty"`
}

// Spool is a spool directory.
type Spool struct {
	Dir string
}

// Open returns the spool at dir. Nothing is touched until it is used.
func Open(dir string) *Spool { return &Spool{Dir: dir} }

func (s *Spool) path(parts ...string) string {
	return filepath.Join(append([]string{s.Dir}, parts...)...)
}

// idLen: 13 hex digits of microseconds since 1970 (sortable until 2112)
// and 6 random ones. Names in drop/ that are not IDs are not ours.
const idLen = 19

// NewID returns a new queue ID, unique and sorted by creation time.
func NewID() string {
	var b [4]byte
	rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	return fmt.Sprintf("%013X%06X", time.Now().UnixMicro(), binary.BigEndian.Uint32(b[:])&0xFFFFFF)
}

// ValidID reports whether id has the form of a queue ID.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// Enqueue writes the envelope, then lets writeMessage stream the message
// into the entry, fsyncs the file, renames it into drop/ and fsyncs the
// directory. Only when it returns nil is the message queued; on any error
// nothing is left behind. System errors are wrapped so that errors.Is
// finds the errno (ENOSPC, EACCES, EROFS...); an error of writeMessage is
// returned as it is.
func (s *Spool) Enqueue(env *Envelope, writeMessage func(w io.Writer) error) (string, error) {
	head, err := appendEnvelope(make([]byte, 0, 512), env)
	if err != nil {
		return "", err
	}
	drop := s.path(DropDir)
	id := NewID()
	tmp := filepath.Join(drop, ".tmp-"+id)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, os.ErrNotExist) && s.Init() == nil {
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	}
	if err != nil {
		return "", &Error{Op: "create", Path: tmp, Err: err}
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// The umask may have taken the group's read bit, which the flusher
	// (a member of the spool group) needs.
	if err := f.Chmod(0o640); err != nil {
		return "", &Error{Op: "chmod", Path: tmp, Err: err}
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(magic)
	w.Write(head)
	w.WriteByte('\n')
	if err := writeMessage(w); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", &Error{Op: "write", Path: tmp, Err: err}
	}
	if err := f.Sync(); err != nil {
		return "", &Error{Op: "fsync", Path: tmp, Err: err}
	}
	if err := f.Close(); err != nil {
		return "", &Error{Op: "close", Path: tmp, Err: err}
	}
	for {
		err = renameNoReplace(tmp, filepath.Join(drop, id))
		if !errors.Is(err, os.ErrExist) {
			break
		}
		id = NewID() // another process drew the same ID in the same microsecond
	}
	if err != nil {
		return "", &Error{Op: "rename", Path: tmp, Err: err}
	}
	committed = true
	if err := atomicfile.SyncDir(drop); err != nil {
		// The entry is complete under its name but its name may not be
		// durable: report failure and take it back, so that exit 0 always
		// means durable.
		os.Remove(filepath.Join(drop, id))
		return "", &Error{Op: "fsync", Path: drop, Err: err}
	}
	return id, nil
}

// Init makes the spool's directories, as far as the caller may: in a
// spool of one's own (single-user mode) all of them; in an installed
// spool they already exist and this fails harmlessly.
func (s *Spool) Init() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	for _, d := range []string{DropDir, QueueDir, QuarantineDir} {
		if err := os.Mkdir(s.path(d), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return atomicfile.SyncDir(s.Dir)
}

// renameNoReplace renames old to new unless new exists (os.ErrExist).
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: link refuses to replace too.
		if err = os.Link(old, new); err == nil {
			return os.Remove(old)
		}
		return err
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	return nil
}

// Error is a spool operation that failed, with the path it failed on.
type Error struct {
	Op   string
	Path string
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Op, e.Path, errnoText(e.Err))
}

func (e *Error) Unwrap() error { return e.Err }

// errnoText is the system's words for an error, without the path that
// os.PathError repeats.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return strings.TrimSpace(err.Error())
}
