// Command queue measures the spool at scale: how long listing (mailq) and
// the flusher's start-up scan take with 100,000 queued messages.
//
//	go run ./bench/queue [-n 100000]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/bench/binary"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

func main() {
	n := flag.Int("n", 100000, "queued messages")
	runs := flag.Int("runs", 3, "runs of each measurement (the median is reported)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "exo-sendmail-bench-queue-")
	check(err)
	defer os.RemoveAll(dir)
	bin, err := binary.Build(dir)
	check(err)
	os.Symlink("sendmail", filepath.Join(dir, "mailq"))
	cfg := filepath.Join(dir, "sendmail.toml")
	check(os.WriteFile(cfg, fmt.Appendf(nil, "spool_dir = %q\nstate_dir = %q\nhostname = \"web1.example.com\"\n[flusher]\nauto_start = false\n",
		filepath.Join(dir, "spool"), filepath.Join(dir, "state")), 0o644))

	spool := queue.Open(filepath.Join(dir, "spool"))
	start := time.Now()
	body := "From: app@web1.example.com\nTo: ops@example.com\nSubject: report\n\n" + strings.Repeat("x", 1900) + "\n"
	for i := range *n {
		_, err := spool.Enqueue(&queue.Envelope{
			Sender: "app@web1.example.com", Recipients: []queue.Recipient{{Addr: fmt.Sprintf("r%d@example.com", i)}},
			Submitted: time.Now(), UID: os.Getuid(), User: "bench",
		}, func(w io.Writer) error { _, err := io.WriteString(w, body); return err })
		check(err)
	}
	fmt.Printf("queued %d messages in %.1f s\n", *n, time.Since(start).Seconds())
	start = time.Now()
	picked, _, err := spool.Pickup()
	check(err)
	fmt.Printf("pickup of %d from drop/ into queue/: %.2f s\n", len(picked), time.Since(start).Seconds())

	median := func(name string, run func() error) {
		var ds []time.Duration
		for range *runs {
			t := time.Now()
			check(run())
			ds = append(ds, time.Since(t))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Printf("%s: median %.2f s (runs: %v)\n", name, ds[len(ds)/2].Seconds(), ds)
	}
	median("mailq listing all of them", func() error {
		cmd := exec.Command(filepath.Join(dir, "mailq"), "-C", cfg)
		cmd.Stdout = io.Discard
		return cmd.Run()
	})
	// A queue run with no account reads every entry and its state (the
	// flusher's start-up scan), then holds each with the reason.
	median("flusher scan (sendmail -q, no account: every entry read and held)", func() error {
		cmd := exec.Command(bin, "-C", cfg, "-q")
		cmd.Env = append(os.Environ(), "JOURNAL_STREAM=bench")
		cmd.Stderr = io.Discard
		return cmd.Run()
	})
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/queue:", err)
		os.Exit(1)
	}
}
