package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDurabilitySequence traces a submission with strace and checks the
// order the invariant demands: the entry is fsynced, renamed into drop/,
// the directory fsynced, and only then does the process exit (with 0).
func TestDurabilitySequence(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		need(t, "strace (apt-get install strace)", err)
	}
	s := newSite(t, "")
	trace := filepath.Join(s.dir, "trace")
	cmd := exec.Command(strace, "-f", "-o", trace, "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat,exit_group",
		filepath.Join(binDir, "sendmail"), "-C", s.config, "-t", "-i")
	cmd.Stdin = strings.NewReader("To: someone@example.com\nSubject: traced\n\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail under strace: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// Follow the file descriptors: which fd is the entry, which the directory.
	openRe := regexp.MustCompile(`openat\(AT_FDCWD, "([^"]+)", [^)]*\) = (\d+)`)
	fsyncRe := regexp.MustCompile(`\bf(?:data)?sync\((\d+)\)\s+= 0`)
	renameRe := regexp.MustCompile(`rename(?:at2?)?\(.*"([^"]*/drop/\.tmp-[0-9A-F]+)".*"([^"]*/drop/[0-9A-F]{19})".*= 0`)
	fdPath := map[string]string{}
	var steps []string
	for _, line := range strings.Split(string(raw), "\n") {
		if m := openRe.FindStringSubmatch(line); m != nil {
			fdPath[m[2]] = m[1]
			continue
		}
		if m := fsyncRe.FindStringSubmatch(line); m != nil {
			p := fdPath[m[1]]
			switch {
			case strings.Contains(p, "/drop/.tmp-"):
				steps = append(steps, "fsync entry")
			case strings.HasSuffix(p, "/drop"):
				steps = append(steps, "fsync drop/")
			}
			continue
		}
		if renameRe.MatchString(line) {
			steps = append(steps, "rename into drop/")
			continue
		}
		if strings.Contains(line, "exit_group(") {
			steps = append(steps, strings.TrimSpace(line[strings.Index(line, "exit_group("):]))
		}
	}
	got := strings.Join(steps, " → ")
	want := "fsync entry → rename into drop/ → fsync drop/ → exit_group(0)"
	if !strings.HasPrefix(got, want) {
		t.Errorf("durability sequence:\n got %s\nwant %s\ntrace:\n%s", got, want, raw)
	}
}
