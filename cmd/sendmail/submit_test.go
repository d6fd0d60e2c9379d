package main

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/exo-sendmail/exo-sendmail/queue"
)

// TestRefusedInput: bad input gets one clear line and its sysexits code,
// and nothing is queued.
func TestRefusedInput(t *testing.T) {
	s := newSite(t, "")
	small := newSite(t, `max_message_size = "1KB"`)
	cases := []struct {
		name  string
		site  *site
		argv  []string
		stdin string
		code  int
		line  string
	}{
		{"no recipients", s, []string{"sendmail"}, "Subject: s\n\nbody\n", exUsage,
			"sendmail: no recipients: give addresses as arguments or use -t with To/Cc/Bcc\n"},
		{"-t without addresses", s, []string{"sendmail", "-t"}, "To: undisclosed-recipients:;\n\nbody\n", exUsage, "no recipients"},
		{"line break in -f", s, []string{"sendmail", "-f", "a@example.com\nBcc: victim@example.org", "r@example.com"}, "x\n", exUsage,
			"the sender (-f) contains a line break"},
		{"line break in -F", s, []string{"sendmail", "-FName\r\nBcc: victim@example.org", "r@example.com"}, "x\n", exUsage,
			"the full name (-F) contains a line break"},
		{"line break in a recipient", s, []string{"sendmail", "r@example.com\nBcc: victim@example.org"}, "x\n", exUsage,
			"contains a line break"},
		{"recipient that is no address", s, []string{"sendmail", "two words"}, "x\n", exUsage, `recipient "two words" is not an address`},
		{"bad -B", s, []string{"sendmail", "-BBINARYMIME", "r@example.com"}, "x\n", exUsage, "7BIT or 8BITMIME"},
		{"option without its value", s, []string{"sendmail", "-t", "-f"}, "x\n", exUsage, "option -f needs a value"},
		{"over max_message_size", small, []string{"sendmail", "r@example.com"}, "Subject: s\n\n" + strings.Repeat("0123456789\n", 200), exDataErr,
			"sendmail: message exceeds max_message_size (1 kB)\n"},
		{"over the default 35 MB", s, []string{"sendmail", "r@example.com"}, "Subject: s\n\n" + strings.Repeat(strings.Repeat("x", 99)+"\n", 360000), exDataErr,
			"sendmail: message exceeds max_message_size (35 MB)\n"},
		{"1 MB header line", s, []string{"sendmail", "r@example.com"}, "X-Long: " + strings.Repeat("a", 1<<20) + "\n\nbody\n", exDataErr,
			"a header line is longer than 1 MB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.site.run(t, invocation{argv: c.argv, stdin: []byte(c.stdin)})
			if r.code != c.code || !strings.Contains(r.stderr, c.line) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, c.code, c.line)
			}
			if strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("want one line on stderr, have %q", r.stderr)
			}
			if es := c.site.entries(t); len(es) != 0 {
				t.Errorf("%d entries queued", len(es))
			}
		})
	}
}

// TestJunkIsStored: binary input is a body like any other.
func TestJunkIsStored(t *testing.T) {
	s := newSite(t, "")
	junk := make([]byte, 300000)
	rand.New(rand.NewSource(7)).Read(junk)
	r := s.run(t, invocation{argv: []string{"sendmail", "-i", "r@example.com"}, stdin: append([]byte("Subject: junk\n\n"), junk...)})
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	e := s.only(t)
	if !e.env.Body8Bit {
		t.Error("Body8Bit not set for binary input")
	}
	want := strings.ReplaceAll(string(junk), "\r\n", "\n")
	if !strings.HasSuffix(want, "\n") {
		want = strings.TrimSuffix(want, "\r") + "\n"
	}
	if e.body() != want {
		t.Errorf("junk not stored as sent: %d bytes stored, want %d", len(e.body()), len(want))
	}
	// Junk from the first byte on: stored behind added headers, or refused; never a crash.
	s2 := newSite(t, "")
	if r := s2.run(t, invocation{argv: []string{"sendmail", "r@example.com"}, stdin: junk}); r.code != 0 && r.code != exDataErr {
		t.Errorf("raw junk: exit %d %s", r.code, r.stderr)
	}
}

func TestDotEndsInputWithoutI(t *testing.T) {
	s := newSite(t, "")
	r := s.run(t, invocation{argv: []string{"sendmail", "r@example.com"}, stdin: []byte("Subject: s\n\nfirst\n.\nnot read\n")})
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	if b := s.only(t).body(); b != "first\n" {
		t.Errorf("body %q", b)
	}
}

func TestVerbose(t *testing.T) {
	s := newSite(t, "")
	r := s.run(t, invocation{argv: []string{"sendmail", "-v", "-f", "<a@example.com>", "r@example.com,root"}, stdin: []byte("x\n")})
	e := s.only(t)
	if r.code != 0 || !strings.Contains(r.stderr, "sendmail: from <a@example.com> to <r@example.com>, <root>\n") ||
		!strings.Contains(r.stderr, "queued as "+e.id) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, invocation{argv: []string{"sendmail", "r@example.com"}, stdin: []byte("x\n")}); r.stderr != "" || r.stdout != "" {
		t.Errorf("quiet without -v: %q %q", r.stdout, r.stderr)
	}
}

// TestClosedDescriptors: mailutils starts sendmail with stdout and stderr
// closed. A warning must then neither crash sendmail nor end up in the
// spool file that got the lowest free descriptor.
func TestClosedDescriptors(t *testing.T) {
	s := newSite(t, "")
	r := s.run(t, invocation{argv: []string{"sendmail", "-Mbogus", "-oi", "-t"}, closed: true,
		stdin: []byte("To: r@example.com\nBcc: b@example.com\n\nbody\n")})
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	e := s.only(t)
	checkStored(t, e)
	if strings.Contains(e.msg, "warning") || e.body() != "body\n" {
		t.Errorf("stored %q", e.msg)
	}
	if r := s.run(t, invocation{argv: []string{"sendmail"}, closed: true, stdin: []byte("x\n")}); r.code != exUsage {
		t.Errorf("error with stderr closed: exit %d, want 64", r.code)
	}
	// stderr a pipe whose reader is gone: the warning must not kill us.
	r = s.run(t, invocation{argv: []string{"sendmail", "-Mbogus", "-v", "r@example.com"}, deafPipes: true, stdin: []byte("x\n")})
	if r.code != 0 || len(s.entries(t)) != 2 {
		t.Errorf("stderr a broken pipe: exit %d, %d entries", r.code, len(s.entries(t)))
	}
}

// TestFailedWrite: the spool file cannot grow (a file size limit stands in
// for a full disk): no entry, nothing left behind, exit 75.
func TestFailedWrite(t *testing.T) {
	s := newSite(t, "")
	r := s.run(t, invocation{
		argv:  []string{"sendmail", "r@example.com"},
		stdin: []byte("Subject: s\n\n" + strings.Repeat("0123456789\n", 10000)),
		shell: `ulimit -f 16; trap "" XFSZ`, // 8 KiB; EFBIG instead of a signal
	})
	if r.code != exTempFail || !strings.HasPrefix(r.stderr, "sendmail: cannot queue message: file too large (") ||
		!strings.Contains(r.stderr, filepath.Join(s.spool, "drop")) {
		t.Errorf("exit %d, stderr %q; want 75 and the file", r.code, r.stderr)
	}
	s.noLeftovers(t, 0)
}

// asOther runs inv as nobody when we are root; otherwise the caller has
// made the spool unwritable for us.
func asOther(inv invocation) invocation {
	if os.Getuid() == 0 {
		inv.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	return inv
}

func TestUnwritableSpool(t *testing.T) {
	s := newSite(t, "")
	if err := queue.Open(s.spool).Init(); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(s.spool, "drop")
	os.Chmod(s.spool, 0o755)
	os.Chmod(drop, 0o555)
	r := s.run(t, asOther(invocation{argv: []string{"sendmail", "r@example.com"}, stdin: []byte("x\n")}))
	if r.code != exNoPerm || !strings.HasPrefix(r.stderr, "sendmail: cannot queue message: permission denied ("+drop) {
		t.Errorf("exit %d, stderr %q; want 77", r.code, r.stderr)
	}
	s.noLeftovers(t, 0)
}

func TestMissingSpool(t *testing.T) {
	s := newSite(t, "")
	// A spool_dir below a regular file can never be created.
	blocker := filepath.Join(s.dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	cfg := filepath.Join(s.dir, "blocked.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("spool_dir = %q\nhostname = %q\n", filepath.Join(blocker, "spool"), testHostname)), 0o644)
	r := s.run(t, invocation{argv: []string{"sendmail", "-C", cfg, "r@example.com"}, stdin: []byte("x\n")})
	if r.code != exCantCreat || !strings.Contains(r.stderr, "cannot queue message: spool directory missing: not a directory") {
		t.Errorf("exit %d, stderr %q; want 73", r.code, r.stderr)
	}
	// A missing spool that this user may not create.
	os.Chmod(s.dir, 0o555)
	defer os.Chmod(s.dir, 0o755)
	r = s.run(t, asOther(invocation{argv: []string{"sendmail", "r@example.com"}, stdin: []byte("x\n")}))
	if r.code != exCantCreat || !strings.Contains(r.stderr, "spool directory missing") {
		t.Errorf("exit %d, stderr %q; want 73", r.code, r.stderr)
	}
}

// TestSpoolFailureCodes covers the errors a test cannot cause for real
// (a read-only file system, a full disk, a quota).
func TestSpoolFailureCodes(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		code  int
		what  string
	}{
		{syscall.ENOSPC, exTempFail, "spool is full: no space left on device"},
		{syscall.EDQUOT, exTempFail, "spool is full: disk quota exceeded"},
		{syscall.EROFS, exCantCreat, "read-only file system"},
		{syscall.ENOENT, exCantCreat, "spool directory missing: no such file or directory"},
		{syscall.EACCES, exNoPerm, "permission denied"},
		{syscall.EPERM, exNoPerm, "operation not permitted"},
		{syscall.EIO, exTempFail, "input/output error"},
	} {
		err := &queue.Error{Op: "write", Path: "/spool/drop/.tmp-1", Err: &os.PathError{Op: "write", Path: "/spool/drop/.tmp-1", Err: c.errno}}
		code, what, _ := spoolFailure(err)
		if code != c.code || what != c.what || errPath(err) != "/spool/drop/.tmp-1" {
			t.Errorf("%v: %d %q, want %d %q", c.errno, code, what, c.code, c.what)
		}
	}
	if !errors.Is(&queue.Error{Err: syscall.ENOSPC}, syscall.ENOSPC) {
		t.Error("queue.Error does not unwrap")
	}
}

// TestConcurrentSubmissions: 200 sendmail processes at once give 200
// whole, distinct entries.
func TestConcurrentSubmissions(t *testing.T) {
	s := newSite(t, "")
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := strings.Repeat(fmt.Sprintf("message %d line\n", i), 100+i)
			r, err := s.start(invocation{
				argv:  []string{"sendmail", "-t", "-i"},
				stdin: []byte(fmt.Sprintf("To: r%d@example.com\nSubject: %d\n\n%s", i, i, body)),
			})
			if err == nil && r.code != 0 {
				err = fmt.Errorf("submission %d: exit %d %s", i, r.code, r.stderr)
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, e := range s.entries(t) {
		var i int
		if _, err := fmt.Sscanf(e.recipients()[0], "r%d@example.com", &i); err != nil || seen[e.id] {
			t.Fatalf("entry %s: recipients %q", e.id, e.recipients())
		}
		seen[e.id] = true
		if want := strings.Repeat(fmt.Sprintf("message %d line\n", i), 100+i); e.body() != want || e.fields("Subject")[0] != fmt.Sprint(i) {
			t.Errorf("entry %s for message %d is damaged", e.id, i)
		}
		seen[fmt.Sprint(i)] = true
	}
	if len(seen) != 2*n {
		t.Errorf("%d distinct entries and messages, want %d of each", len(seen)/2, n)
	}
	s.noLeftovers(t, n)
}
