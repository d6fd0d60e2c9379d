package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// binDir holds the binary built once for all tests, and the names it
// answers to (sendmail, mailq, newaliases) as symlinks.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "exo-sendmail-bin-")
	if err == nil {
		err = build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building sendmail:", err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	// go test puts its own GOROOT/bin first on PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		return err
	}
	// Static, as the Makefile and the packages build it.
	cmd := exec.Command(goTool, "build", "-o", filepath.Join(dir, "exo-sendmail"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	for _, face := range []string{"sendmail", "mailq", "newaliases"} {
		if err := os.Symlink("exo-sendmail", filepath.Join(dir, face)); err != nil {
			return err
		}
	}
	// Tests run the binary as another user too.
	return os.Chmod(dir, 0o755)
}

// site is one test's world: a configuration and a spool in a directory
// that other users may traverse.
type site struct {
	dir, config, spool string
}

const testHostname = "web1.example.com"

func newSite(t *testing.T, extra string) *site {
	t.Helper()
	dir, err := os.MkdirTemp("", "exo-sendmail-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &site{dir: dir, config: filepath.Join(dir, "sendmail.toml"), spool: filepath.Join(dir, "spool")}
	toml := fmt.Sprintf("spool_dir = %q\nstate_dir = %q\nhostname = %q\n%s\n[flusher]\nauto_start = false\n",
		s.spool, filepath.Join(dir, "state"), testHostname, extra)
	if err := os.WriteFile(s.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// invocation is one run of the binary, the way a client starts it.
type invocation struct {
	argv      []string // argv[0] first; its base name picks the face
	stdin     []byte
	stdinFile bool     // stdin is a file (mailx) rather than a pipe (PHP, cron)
	closed    bool     // stdout and stderr closed (mailutils)
	deafPipes bool     // stdout and stderr are pipes nobody reads any more
	env       []string // added to the environment, which names the site's config
	cred      *syscall.Credential
	shell     string // run through sh -c 'shell; exec "$0" "$@"' (ulimit, trap)
}

type result struct {
	code           int
	stdout, stderr string
	maxRSS         int64 // KiB
}

func (s *site) run(t testing.TB, inv invocation) result {
	t.Helper()
	r, err := s.start(inv)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs one invocation to its end (safe to call from goroutines).
func (s *site) start(inv invocation) (result, error) {
	path := filepath.Join(binDir, filepath.Base(inv.argv[0]))
	argv := inv.argv
	if inv.shell != "" {
		argv = append([]string{"sh", "-c", inv.shell + `; exec "$0" "$@"`, path}, inv.argv[1:]...)
		path = "/bin/sh"
	}
	var stdin *os.File
	if inv.stdinFile {
		f, err := os.CreateTemp(s.dir, "stdin-")
		if err != nil {
			return result{}, err
		}
		f.Write(inv.stdin)
		f.Seek(0, io.SeekStart)
		stdin = f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return result{}, err
		}
		go func() {
			w.Write(inv.stdin) // fails with EPIPE when sendmail stops reading early: fine
			w.Close()
		}()
		stdin = r
	}
	defer stdin.Close()
	files := []*os.File{stdin, nil, nil}
	var outFile, errFile *os.File
	if inv.deafPipes {
		for i := 1; i <= 2; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				return result{}, err
			}
			r.Close()
			defer w.Close()
			files[i] = w
		}
	} else if !inv.closed {
		var err error
		if outFile, err = os.CreateTemp(s.dir, "stdout-"); err != nil {
			return result{}, err
		}
		defer outFile.Close()
		if errFile, err = os.CreateTemp(s.dir, "stderr-"); err != nil {
			return result{}, err
		}
		defer errFile.Close()
		files[1], files[2] = outFile, errFile
	}
	env := append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config)
	env = append(env, inv.env...)
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env: env, Files: files, Sys: &syscall.SysProcAttr{Credential: inv.cred},
	})
	if err != nil {
		return result{}, err
	}
	st, err := p.Wait()
	if err != nil {
		return result{}, err
	}
	if !st.Exited() {
		return result{}, fmt.Errorf("%q died: %v", inv.argv, st)
	}
	r := result{code: st.ExitCode()}
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss
	}
	if outFile != nil {
		b, _ := os.ReadFile(outFile.Name())
		r.stdout = string(b)
		b, _ = os.ReadFile(errFile.Name())
		r.stderr = string(b)
		os.Remove(outFile.Name())
		os.Remove(errFile.Name())
	}
	return r, nil
}

// entry is one message in drop/, read through the queue package.
type entry struct {
	id  string
	env queue.Envelope
	msg string
}

func (s *site) entries(t testing.TB) []entry {
	t.Helper()
	spool := queue.Open(s.spool)
	ids, err := spool.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	var out []entry
	for _, id := range ids {
		e, err := spool.OpenDropped(id)
		if err != nil {
			t.Fatalf("queued entry %s cannot be read: %v", id, err)
		}
		b, err := io.ReadAll(e.Message())
		e.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{id: id, env: e.Envelope, msg: string(b)})
	}
	return out
}

// only returns the one queued entry, and checks that nothing else (no
// temporary file) was left in drop/.
func (s *site) only(t testing.TB) entry {
	t.Helper()
	es := s.entries(t)
	if len(es) != 1 {
		t.Fatalf("%d entries queued, want 1", len(es))
	}
	s.noLeftovers(t, 1)
	return es[0]
}

func (s *site) noLeftovers(t testing.TB, want int) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(s.spool, "drop", "*"))
	hidden, _ := filepath.Glob(filepath.Join(s.spool, "drop", ".*"))
	if len(names) != want || len(hidden) != 0 {
		t.Errorf("drop/ holds %q %q, want %d entries and no temporary files", names, hidden, want)
	}
}

func (e entry) header() string {
	h, _, _ := strings.Cut(e.msg, "\n\n")
	return h + "\n"
}

func (e entry) body() string {
	_, b, _ := strings.Cut(e.msg, "\n\n")
	return b
}

func (e entry) recipients() []string {
	var out []string
	for _, r := range e.env.Recipients {
		out = append(out, r.Addr)
	}
	return out
}

// fields returns the values of a header field, unfolded.
func (e entry) fields(name string) []string {
	var out []string
	re := regexp.MustCompile(`(?im)^` + regexp.QuoteMeta(name) + `[ \t]*:(.*(?:\n[ \t].*)*)`)
	for _, m := range re.FindAllStringSubmatch(e.header(), -1) {
		out = append(out, strings.TrimSpace(strings.ReplaceAll(m[1], "\n", "")))
	}
	return out
}

var (
	dateRe  = regexp.MustCompile(`^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}$`)
	msgIDRe = regexp.MustCompile(`^<[^<>@\s]+@` + regexp.QuoteMeta(testHostname) + `>$`)
)

// checkStored asserts what holds for every message we queue.
func checkStored(t *testing.T, e entry) {
	t.Helper()
	h := e.header()
	if strings.Contains(e.msg, "\r\n") {
		t.Errorf("CRLF stored:\n%q", e.msg)
	}
	if len(e.fields("Bcc")) > 0 || len(e.fields("Resent-Bcc")) > 0 {
		t.Errorf("Bcc stored:\n%s", h)
	}
	if d := e.fields("Date"); len(d) != 1 {
		t.Errorf("want one Date field, have %q", d)
	}
	if id := e.fields("Message-ID"); len(id) != 1 {
		t.Errorf("want one Message-ID field, have %q", id)
	}
	if f := e.fields("From"); len(f) != 1 {
		t.Errorf("want one From field, have %q", f)
	}
}

func me(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// clientsDir finds ../shared/clients beside the repository.
func clientsDir(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
	}
	clients := filepath.Join(dir, "..", "shared", "clients")
	if _, err := os.Stat(clients); err != nil {
		need(t, "the client captures in ../shared/clients", err)
	}
	return clients
}

// need skips a test whose outside requirement is missing, except under CI,
// where it is a failure.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v (required when CI=true)", what, err)
	}
	t.Skipf("%s: %v", what, err)
}

// fixtureWant is what each capture must produce, beyond checkStored.
// "@me" is the user running the tests, qualified with the test hostname.
var fixtureWant = map[string]struct {
	sender     string
	recipients []string
	from       string // the From field as stored
	eightBit   bool
}{
	"bsd-mailx-options":           {"from@example.com", []string{"to1@example.com", "to2@example.com", "cc@example.com", "bcc@example.com"}, "from@example.com", false},
	"bsd-mailx-simple":            {"@me", []string{"to@example.com"}, "@me", false},
	"cron-crond-mailto":           {"@me", []string{"cron-rcpt@example.com"}, "root (Cron Daemon)", true},
	"cron-user-crontab-no-mailto": {"@me", []string{"root"}, "root (Cron Daemon)", true},
	"mailutils-options":           {"from@example.com", []string{"cc@example.com", "bcc@example.com", "to1@example.com", "to2@example.com"}, "from@example.com", false},
	"php-array-headers-fparam":    {"bounce@example.com", []string{"to1@example.com", "to2@example.com"}, "PHP Sender <php-sender@example.com>", true},
	"php-default-string-headers":  {"@me", []string{"to@example.com"}, "PHP Sender <php-sender@example.com>", false},
	"php-mixed-lf-and-crlf":       {"@me", []string{"to@example.com"}, "PHP Sender <php-sender@example.com>", false},
	"php-no-from":                 {"@me", []string{"to@example.com"}, "@me", false},
}

// TestClientCaptures runs every capture in ../shared/clients against the
// built binary exactly as the client did: same argv, same stdin bytes,
// same closed descriptors.
func TestClientCaptures(t *testing.T) {
	root := clientsDir(t)
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		ran++
		t.Run(d.Name(), func(t *testing.T) {
			dir := filepath.Join(root, d.Name())
			argvText, err := os.ReadFile(filepath.Join(dir, "argv"))
			if err != nil {
				t.Fatal(err)
			}
			stdin, err := os.ReadFile(filepath.Join(dir, "stdin.eml"))
			if err != nil {
				t.Fatal(err)
			}
			readme, _ := os.ReadFile(filepath.Join(dir, "README"))
			argv := strings.Split(strings.TrimRight(string(argvText), "\n"), "\n")
			s := newSite(t, "")
			inv := invocation{
				argv:      argv,
				stdin:     stdin,
				stdinFile: strings.Contains(string(readme), "fd0=file"),
				closed:    strings.Contains(string(readme), "fd2=closed"),
			}
			res := s.run(t, inv)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			e := s.only(t)
			checkStored(t, e)
			if want := expectedBody(stdin, argv); e.body() != want {
				t.Errorf("body:\n%q\nwant\n%q", e.body(), want)
			}
			if e.env.Submitted.IsZero() || e.env.UID != os.Getuid() || e.env.User != me(t) {
				t.Errorf("submitter not recorded: %+v", e.env)
			}
			if !dateRe.MatchString(e.fields("Date")[0]) || !msgIDRe.MatchString(e.fields("Message-ID")[0]) {
				t.Errorf("Date %q, Message-ID %q", e.fields("Date"), e.fields("Message-ID"))
			}
			want, ok := fixtureWant[d.Name()]
			if !ok {
				t.Logf("no expectations written for %s: only the generic checks ran", d.Name())
				return
			}
			qualify := func(s string) string { return strings.ReplaceAll(s, "@me", me(t)+"@"+testHostname) }
			if e.env.Sender != qualify(want.sender) {
				t.Errorf("sender %q, want %q", e.env.Sender, qualify(want.sender))
			}
			got, exp := e.recipients(), append([]string(nil), want.recipients...)
			sort.Strings(got)
			sort.Strings(exp)
			if strings.Join(got, " ") != strings.Join(exp, " ") {
				t.Errorf("recipients %q, want %q", got, exp)
			}
			if f := e.fields("From"); len(f) != 1 || f[0] != qualify(want.from) {
				t.Errorf("From %q, want %q", f, qualify(want.from))
			}
			if e.env.Body8Bit != want.eightBit {
				t.Errorf("Body8Bit = %v, want %v", e.env.Body8Bit, want.eightBit)
			}
		})
	}
	if ran == 0 {
		t.Fatalf("no captures in %s", root)
	}
}

// expectedBody is the body of a capture as it must be stored: after the
// first blank line, line ends made LF, cut at a lone dot unless -i/-oi.
func expectedBody(stdin []byte, argv []string) string {
	c, _ := parseArgs(argv[1:], modeSubmit)
	text := strings.ReplaceAll(string(stdin), "\r\n", "\n")
	_, body, _ := strings.Cut(text, "\n\n")
	if !c.sub.DotIsData {
		if i := strings.Index("\n"+body, "\n.\n"); i >= 0 {
			body = body[:i]
		}
	}
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	return body
}

func TestFaces(t *testing.T) {
	s := newSite(t, "[aliases]\nroot = \"ops@example.com\"\n")
	if err := queue.Open(s.spool).Init(); err != nil {
		t.Fatal(err)
	}
	if r := s.run(t, invocation{argv: []string{"mailq"}}); r.code != 0 || !strings.Contains(r.stdout, "Mail queue is empty") {
		t.Errorf("mailq on an empty queue: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.run(t, invocation{argv: []string{"sendmail", "a@example.com"}, stdin: []byte("Subject: q\n\nx\n")}); r.code != 0 {
		t.Fatalf("submit: exit %d %s", r.code, r.stderr)
	}
	e := s.only(t)
	for _, argv := range [][]string{{"mailq"}, {"sendmail", "-bp"}} {
		if r := s.run(t, invocation{argv: argv}); r.code != 0 || !strings.Contains(r.stdout, e.id) || !strings.Contains(r.stdout, "a@example.com") {
			t.Errorf("%q: exit %d, %q %q", argv, r.code, r.stdout, r.stderr)
		}
	}
	for _, argv := range [][]string{{"newaliases"}, {"sendmail", "-bi"}, {"sendmail", "-I"}} {
		if r := s.run(t, invocation{argv: argv}); r.code != 0 || r.stdout != "aliases: 1 entries OK\n" {
			t.Errorf("%q: exit %d, %q %q", argv, r.code, r.stdout, r.stderr)
		}
	}
	r := s.run(t, invocation{argv: []string{"sendmail", "-bv", "root,someone@example.org"}})
	if r.code != exUnavailable || !strings.Contains(r.stdout, "root -> ops@example.com: no account configured\n") ||
		!strings.Contains(r.stdout, "someone@example.org -> someone@example.org: no account configured\n") {
		t.Errorf("-bv without an account: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.run(t, invocation{argv: []string{"exo-sendmail", "version"}}); r.code != 0 || !strings.HasPrefix(r.stdout, "exo-sendmail ") {
		t.Errorf("exo-sendmail version: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

func TestVerifyWithAccount(t *testing.T) {
	s := newSite(t, `[aliases]
root = "ops@example.com"
[[account]]
name = "contoso"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret_file = "/nonexistent/secret"
mailbox = "alerts@example.com"
`)
	r := s.run(t, invocation{argv: []string{"sendmail", "-bv", "root"}})
	if r.code != 0 || r.stdout != "root -> ops@example.com: deliverable through account \"contoso\" (smtp as alerts@example.com)\n" {
		t.Errorf("-bv: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

func TestConfigErrors(t *testing.T) {
	s := newSite(t, "")
	bad := filepath.Join(s.dir, "bad.toml")
	os.WriteFile(bad, []byte("spool_dir = \"/x\"\nnonsense = 1\n"), 0o644)
	r := s.run(t, invocation{argv: []string{"sendmail", "-C", bad, "a@example.com"}, stdin: []byte("x\n")})
	if r.code != exConfig || !strings.Contains(r.stderr, "bad.toml:2:") {
		t.Errorf("bad config: exit %d, %q", r.code, r.stderr)
	}
	r = s.run(t, invocation{argv: []string{"sendmail", "-C", filepath.Join(s.dir, "missing.toml"), "a@example.com"}, stdin: []byte("x\n")})
	if r.code != exConfig {
		t.Errorf("missing -C file: exit %d, %q", r.code, r.stderr)
	}
	if len(s.entries(t)) != 0 {
		t.Error("a message was queued despite the configuration error")
	}
}

// TestConfigDropsSetgid: installed setgid to the spool group, sendmail
// writes a group-writable spool; a user who names the configuration (-C or
// $EXO_SENDMAIL_CONFIG) loses the group first and so cannot.
func TestConfigDropsSetgid(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to install a setgid binary and run as another user")
	}
	grp, err := user.LookupGroup("mail")
	if err != nil {
		t.Skip("no group mail to play the spool group")
	}
	var gid int
	fmt.Sscan(grp.Gid, &gid)
	s := newSite(t, "")
	sgid := filepath.Join(s.dir, "bin")
	os.Mkdir(sgid, 0o755)
	bin := filepath.Join(sgid, "sendmail")
	data, err := os.ReadFile(filepath.Join(binDir, "exo-sendmail"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	os.Chown(bin, 0, gid)
	os.Chmod(bin, 0o755|os.ModeSetgid)
	// A spool only the group may write; the per-user default points at it.
	state := filepath.Join(s.dir, "xdg")
	spool := filepath.Join(state, "exo-sendmail", "spool")
	for _, d := range []string{state, filepath.Join(state, "exo-sendmail"), spool, filepath.Join(spool, "drop")} {
		os.Mkdir(d, 0o755)
	}
	os.Chown(filepath.Join(spool, "drop"), 0, gid)
	os.Chmod(filepath.Join(spool, "drop"), 0o770)
	os.WriteFile(filepath.Join(s.dir, "user.toml"), []byte(fmt.Sprintf("spool_dir = %q\nhostname = %q\n[flusher]\nauto_start = false\n", spool, testHostname)), 0o644)

	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: false}
	run := func(argv []string, env ...string) result {
		cmd := exec.Command(bin, argv...)
		cmd.Args[0] = "sendmail"
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "XDG_STATE_HOME=" + state}, env...)
		cmd.Stdin = strings.NewReader("Subject: s\n\nbody\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
		return result{code: cmd.ProcessState.ExitCode(), stderr: stderr.String()}
	}
	if _, err := os.Stat(conf.DefaultPath); err == nil {
		t.Skip("a system configuration exists; the per-user default cannot be tested here")
	}
	// The control: without a chosen configuration the group works.
	if r := run([]string{"a@example.com"}); r.code != 0 {
		t.Skipf("setgid has no effect here (nosuid mount?): exit %d %s", r.code, r.stderr)
	}
	for _, c := range []struct {
		argv []string
		env  []string
	}{
		{[]string{"-C", filepath.Join(s.dir, "user.toml"), "a@example.com"}, nil},
		{[]string{"a@example.com"}, []string{"EXO_SENDMAIL_CONFIG=" + filepath.Join(s.dir, "user.toml")}},
	} {
		r := run(c.argv, c.env...)
		if r.code != exNoPerm || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("%q %q: exit %d %q, want 77: the spool group must be dropped", c.argv, c.env, r.code, r.stderr)
		}
	}

	// The administrator's face is the same setgid file under another name
	// and drops the group on entry, whatever the command and configuration.
	// The emulator shows it: asked for a directory inside one only the
	// group may write, it must fail at once rather than start.
	locked := filepath.Join(s.dir, "group-only")
	os.Mkdir(locked, 0o700)
	os.Chown(locked, 0, gid)
	os.Chmod(locked, 0o770) // not through Mkdir: the umask
	admin := filepath.Join(sgid, "exo-sendmail")
	if err := os.Symlink("sendmail", admin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(admin, "emulator", "--dir", filepath.Join(locked, "emulator"))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// It either exits (the output ends) or prints its endpoints and serves.
	first, _ := bufio.NewReader(out).ReadString('\n')
	if first != "" {
		cmd.Process.Kill()
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); first != "" || !strings.Contains(stderr.String(), "permission denied") {
		t.Errorf("exo-sendmail emulator as nobody through the setgid file: exit %d, %q %q; want a refusal: the spool group must be dropped", code, first, stderr.String())
	}
}

// Real clients, where the machine has them (CI installs them).
func lookClient(t *testing.T, name, pkg string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		need(t, "client "+name+" (apt-get install "+pkg+")", err)
	}
	return p
}

func TestRealPHP(t *testing.T) {
	php := lookClient(t, "php", "php-cli")
	s := newSite(t, "")
	bin := filepath.Join(binDir, "sendmail")
	script := `var_dump(mail("to@example.com, Two <two@example.com>", "Caf\u{e9} report", "line one\n.\nline after a dot\n", ["From" => "Web App <app@example.com>", "Bcc" => "hidden@example.com"], "-fbounce@example.com"));`
	cmd := exec.Command(php, "-n", "-d", "sendmail_path="+bin+" -t -i", "-r", script)
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "bool(true)") {
		t.Fatalf("php mail(): %v %s", err, out)
	}
	e := s.only(t)
	checkStored(t, e)
	if e.env.Sender != "bounce@example.com" || strings.Join(e.recipients(), " ") != "to@example.com two@example.com hidden@example.com" {
		t.Errorf("envelope %+v", e.env)
	}
	// PHP ends the body with one more CRLF of its own.
	if e.body() != "line one\n.\nline after a dot\n\n" || e.fields("From")[0] != "Web App <app@example.com>" {
		t.Errorf("stored:\n%s", e.msg)
	}
}

func TestRealBSDMailx(t *testing.T) {
	mailx := lookClient(t, "bsd-mailx", "bsd-mailx")
	s := newSite(t, "")
	rc := filepath.Join(s.dir, "mailrc")
	os.WriteFile(rc, []byte("set sendmail="+filepath.Join(binDir, "sendmail")+"\n"), 0o644)
	cmd := exec.Command(mailx, "-s", "mailx subject", "-c", "cc@example.com", "-b", "bcc@example.com", "to@example.com", "root")
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config, "MAILRC="+rc)
	cmd.Stdin = strings.NewReader("first line\n.\nafter the dot\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bsd-mailx: %v %s", err, out)
	}
	e := s.only(t)
	checkStored(t, e)
	got := e.recipients()
	sort.Strings(got)
	if strings.Join(got, " ") != "bcc@example.com cc@example.com root to@example.com" {
		t.Errorf("recipients %q", got)
	}
	if e.body() != "first line\n.\nafter the dot\n" {
		t.Errorf("body %q", e.body())
	}
}

func TestRealMailutils(t *testing.T) {
	mail := lookClient(t, "mail.mailutils", "mailutils")
	s := newSite(t, "")
	cmd := exec.Command(mail, "-E", "set sendmail=sendmail://"+filepath.Join(binDir, "sendmail"),
		"-s", "mailutils subject", "-a", "Bcc: hidden@example.com", "-r", "from@example.com", "to@example.com")
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG="+s.config)
	cmd.Stdin = strings.NewReader("body line\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mailutils: %v %s", err, out)
	}
	e := s.only(t)
	checkStored(t, e)
	got := e.recipients()
	sort.Strings(got)
	if e.env.Sender != "from@example.com" || strings.Join(got, " ") != "hidden@example.com to@example.com" {
		t.Errorf("envelope %+v", e.env)
	}
	if e.body() != "body line\n" {
		t.Errorf("body %q", e.body())
	}
}
