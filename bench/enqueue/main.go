// Command enqueue measures the submission path the way callers see it:
// the whole-process time of `sendmail -t -i` queueing a 2 KB message
// (median of many runs, fsyncs included) and the peak RSS of the process
// while it queues a 30 MB message (from wait4's rusage), next to a 1 MB one
// to show that memory does not grow with the message.
//
//	go run ./bench/enqueue                  # builds ./cmd/sendmail
//	go run ./bench/enqueue -bin /usr/sbin/sendmail -config ""   # another sendmail, its own config
//	go run ./bench/enqueue -peer dma=/usr/sbin/dma -peer nullmailer=/usr/lib/nullmailer/sendmail
//
// With -peer, the other sendmails (each with its own configuration and
// spool) run in the same loop, one after the other for each run, so that
// the machine's moods fall on all of them alike.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/bench/binary"
)

func main() {
	bin := flag.String("bin", "", "sendmail binary to measure (default: build ./cmd/sendmail as the Makefile does)")
	config := flag.String("config", "auto", `configuration for EXO_SENDMAIL_CONFIG: "auto" writes one with a temporary spool, "" passes none`)
	runs := flag.Int("n", 200, "runs of the 2 KB message")
	largeMB := flag.Int("large", 30, "size of the large message in MB")
	var peers []subject
	flag.Func("peer", "`name=path` of another sendmail to measure in the same runs (repeatable)", func(v string) error {
		name, path, ok := strings.Cut(v, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("want name=path")
		}
		peers = append(peers, subject{name: name, bin: path, env: os.Environ()})
		return nil
	})
	flag.Parse()
	if err := run(*bin, *config, *runs, *largeMB, peers); err != nil {
		fmt.Fprintln(os.Stderr, "enqueue:", err)
		os.Exit(1)
	}
}

// subject is one sendmail under measurement.
type subject struct {
	name, bin string
	env       []string
	times     []time.Duration
}

func run(bin, config string, runs, largeMB int, peers []subject) error {
	dir, err := os.MkdirTemp("", "exo-sendmail-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		if bin, err = binary.Build(dir); err != nil {
			return err
		}
	}
	env := os.Environ()
	if config == "auto" {
		config = filepath.Join(dir, "sendmail.toml")
		toml := fmt.Sprintf("spool_dir = %q\nstate_dir = %q\nhostname = \"bench.example.com\"\nmax_message_size = \"100MB\"\n[flusher]\nauto_start = false\n",
			filepath.Join(dir, "spool"), filepath.Join(dir, "state"))
		if err := os.WriteFile(config, []byte(toml), 0o644); err != nil {
			return err
		}
	}
	if config != "" {
		env = append(env, "EXO_SENDMAIL_CONFIG="+config)
	}
	subjects := append([]subject{{name: "exo-sendmail", bin: bin, env: env}}, peers...)
	for _, sub := range subjects {
		fmt.Printf("%s: %s\n", sub.name, sub.bin)
	}

	small, err := writeMessage(dir, "small.eml", 2000)
	if err != nil {
		return err
	}
	for _, sub := range subjects {
		for i := 0; i < 10; i++ { // warm the page cache and the spool directories
			if _, _, err := submit(sub.bin, sub.env, small); err != nil {
				return err
			}
		}
	}
	for i := 0; i < runs; i++ {
		for k := range subjects {
			sub := &subjects[(i+k)%len(subjects)] // each takes each place in turn
			d, _, err := submit(sub.bin, sub.env, small)
			if err != nil {
				return err
			}
			sub.times = append(sub.times, d)
		}
	}
	for _, sub := range subjects {
		t := sub.times
		sort.Slice(t, func(i, j int) bool { return t[i] < t[j] })
		fmt.Printf("%s: 2 KB message, %d runs: median %s, p90 %s, min %s, max %s\n",
			sub.name, runs, ms(t[runs/2]), ms(t[runs*9/10]), ms(t[0]), ms(t[runs-1]))
	}

	// A child's peak RSS starts at its parent's RSS at fork (Go forks with
	// CLONE_VM; Linux carries the shared mm's size across exec): give back
	// what this process can and say what is left.
	debug.FreeOSMemory()
	fmt.Printf("(RSS figures include at least this benchmark's own RSS, %s)\n", selfRSS())
	// Only ours: a peer's true peak is below that floor (and Postfix
	// refuses 30 MB by default).
	for _, sub := range subjects[:1] {
		for _, mb := range []int{1, largeMB} {
			path, err := writeMessage(dir, fmt.Sprintf("%dmb.eml", mb), mb*1000*1000)
			if err != nil {
				return err
			}
			var peak int64
			var took time.Duration
			for i := 0; i < 3; i++ {
				d, rss, err := submit(sub.bin, sub.env, path)
				if err != nil {
					return err
				}
				peak, took = max(peak, rss), d
			}
			fmt.Printf("%s: %d MB message: peak RSS %.1f MiB, %s\n", sub.name, mb, float64(peak)/1024, ms(took))
			os.Remove(path)
		}
	}
	return nil
}

// submit runs `sendmail -t -i` with the message file on stdin and returns
// its wall time and peak RSS in KiB.
func submit(bin string, env []string, message string) (time.Duration, int64, error) {
	in, err := os.Open(message)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-t", "-i")
	cmd.Args[0] = "sendmail"
	cmd.Env, cmd.Stdin, cmd.Stderr = env, in, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	return took, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, nil
}

// writeMessage writes a plain-text message of about size bytes, streaming:
// the benchmark's own memory must stay small, because a child's peak RSS
// starts at its parent's RSS (see run).
func writeMessage(dir, name string, size int) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	n, _ := w.WriteString("From: Bench <bench@example.com>\nTo: someone@example.com\nSubject: enqueue benchmark\n\n")
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:76] + "\n"
	for ; n < size; n += len(line) {
		w.WriteString(line)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// selfRSS reads this process's resident size from /proc.
func selfRSS() string {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
