// Command delivery measures the flusher against the Exchange Online
// emulator, running in this process on the loopback interface (STARTTLS,
// XOAUTH2, the token endpoint): the built sendmail runs the queue as a
// separate process, as cron or systemd runs it.
//
//	(a) throughput: 1,000 queued 2 KB messages delivered by one
//	    `sendmail -q` with the limits off, with max_connections 3 and 1;
//	(b) SMTP round trips per message for a backlog over a link with 50 ms
//	    added to every reply;
//	(c) token requests for 1,000 messages over 50 `sendmail -q` runs;
//	(d) drain time of 300 messages with the 30 messages/minute limit on,
//	    against the theoretical minimum, and the throttling replies (~9 min).
//
//	go run ./bench/delivery                 # cases a, b, c (3 runs each, medians)
//	go run ./bench/delivery -case d         # the 9-minute pacing case
//	go run ./bench/delivery -case all       # a, b, c and d
//	go run ./bench/delivery -case a -cpuprofile cpu.out   # (a) with the flusher in this process, profiled
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/bench/binary"
	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/flusher"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

func main() {
	cases := flag.String("case", "abc", "cases to run: any of the letters a b c d, or all")
	bin := flag.String("bin", "", "sendmail binary (default: build ./cmd/sendmail as the Makefile does)")
	runs := flag.Int("runs", 3, "runs of cases a, b and c (the median is reported)")
	n := flag.Int("n", 1000, "messages in case a")
	backlog := flag.Int("backlog", 150, "messages in case b")
	emuDir := flag.String("emulator-dir", "", `directory for the emulator's Maildirs (default: beside the spool; "/dev/shm" keeps the stand-in server's own disk writes out of the figures)`)
	profile := flag.String("cpuprofile", "", "run case a with the flusher in this process and write its CPU profile (flusher and emulator) here")
	flag.Parse()
	if *cases == "all" {
		*cases = "abcd"
	}
	if err := run(*cases, *bin, *emuDir, *runs, *n, *backlog, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "delivery:", err)
		os.Exit(1)
	}
}

func run(cases, bin, emuDir string, runs, n, backlog int, profile string) error {
	dir, err := os.MkdirTemp("", "exo-sendmail-bench-delivery-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		if bin, err = binary.Build(dir); err != nil {
			return err
		}
	}
	fmt.Printf("machine: %d CPUs, %s\nbinary: %s\n", runtime.NumCPU(), cpuModel(), bin)
	b := &bench{dir: dir, bin: bin, emuRoot: dir}
	if emuDir != "" {
		if b.emuRoot, err = os.MkdirTemp(emuDir, "exo-sendmail-bench-emulator-"); err != nil {
			return err
		}
		defer os.RemoveAll(b.emuRoot)
	}
	fmt.Printf("spool: %s; emulator's Maildirs: %s\n\n", dir, b.emuRoot)
	if profile != "" {
		return b.profileA(n, profile)
	}
	for _, c := range cases {
		fmt.Printf("[load average %s]\n", loadAverage())
		var err error
		switch c {
		case 'a':
			err = b.caseA(runs, n)
		case 'b':
			err = b.caseB(runs, backlog)
		case 'c':
			err = b.caseC(runs)
		case 'd':
			err = b.caseD()
		default:
			err = fmt.Errorf("unknown case %q (a, b, c, d or all)", c)
		}
		if err != nil {
			return err
		}
		fmt.Println()
	}
	return nil
}

const (
	clientID = "3f2a1c9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
	secret   = "emulated~secret.value_123"
	mailbox  = "alerts@contoso.com"
	sendAs   = "noreply@contoso.com"
)

type bench struct {
	dir, bin string
	emuRoot  string // where the emulators write their Maildirs
	seq      int
}

// tenant is a fresh emulator, spool and state with a configuration.
type tenant struct {
	emu    *emulator.Emulator
	config string
	spool  *queue.Spool
	bin    string
}

// tenant starts an emulator (limits: Exchange's limits enforced) and writes
// a configuration whose account block ends with account.
func (b *bench) tenant(limits bool, account string) (*tenant, error) {
	b.seq++
	dir := filepath.Join(b.dir, fmt.Sprintf("run%d", b.seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	emu, err := emulator.Start(emulator.Config{
		Dir:    filepath.Join(b.emuRoot, fmt.Sprintf("emulator%d", b.seq)),
		Tenant: "contoso.onmicrosoft.com",
		Apps: []emulator.App{{
			ClientID: clientID, Secrets: []emulator.Secret{{Value: secret}},
			SMTPRole: true, Mailboxes: []string{mailbox},
		}},
		Mailboxes: []emulator.Mailbox{{Address: mailbox, SendAs: []string{sendAs}}},
		Limits:    limits,
	})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600); err != nil {
		emu.Close()
		return nil, err
	}
	cfg := fmt.Sprintf(`spool_dir = "spool"
state_dir = "state"
hostname = "web1.contoso.com"
[flusher]
auto_start = false
%s%s
`, emu.AccountTOML("contoso", clientID, "secret", mailbox, sendAs), account)
	path := filepath.Join(dir, "sendmail.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		emu.Close()
		return nil, err
	}
	spool := queue.Open(filepath.Join(dir, "spool"))
	if err := spool.Init(); err != nil {
		emu.Close()
		return nil, err
	}
	return &tenant{emu: emu, config: path, spool: spool, bin: b.bin}, nil
}

// body2K is the text of a 2 KB message: a cron report.
var body2K = func() string {
	var s strings.Builder
	for i := 0; s.Len() < 1700; i++ {
		fmt.Fprintf(&s, "/dev/sda%d  ext4  %3d%% used  mounted on /srv/volume%02d  checked by cron\n", i%8, 40+i%60, i)
	}
	return s.String()
}()

// enqueue drops n messages into the spool, as sendmail leaves them.
func (tn *tenant) enqueue(n int) error {
	for i := range n {
		env := &queue.Envelope{
			Sender:     "root@web1.contoso.com",
			Recipients: []queue.Recipient{{Addr: "ops@contoso.com"}},
			Submitted:  time.Now(),
			UID:        os.Getuid(),
		}
		_, err := tn.spool.Enqueue(env, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "From: Cron Daemon <%s>\nTo: ops@contoso.com\nSubject: report %d\nDate: %s\nMessage-ID: <bench-%d-%d@web1.contoso.com>\n\n%s",
				sendAs, i, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), i, body2K)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// queueRun is one `sendmail -q`: its wall time and CPU time.
type queueRun struct {
	wall, cpu time.Duration
}

func (tn *tenant) queueRun() (queueRun, error) {
	cmd := exec.Command(tn.bin, "-C", tn.config, "-q")
	cmd.Args[0] = "sendmail"
	cmd.Env = append(os.Environ(), "EXO_SENDMAIL_CONFIG=", "JOURNAL_STREAM=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return queueRun{}, fmt.Errorf("sendmail -q: %v\n%s", err, out.String())
	}
	return queueRun{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, nil
}

// drained checks that the queue is empty and the emulator holds want
// messages.
func (tn *tenant) drained(want int) error {
	ids, err := tn.spool.IDs()
	if err != nil {
		return err
	}
	dropped, err := tn.spool.Dropped()
	if err != nil {
		return err
	}
	if left := len(ids) + len(dropped); left > 0 || len(tn.emu.Messages()) != want {
		return fmt.Errorf("%d messages delivered, want %d; %d still queued", len(tn.emu.Messages()), want, left)
	}
	return nil
}

// warm fetches the token and opens the spool's directories with one
// message, so that a measured run starts as a queue run on a running
// system does: token cached.
func (tn *tenant) warm() error {
	if err := tn.enqueue(1); err != nil {
		return err
	}
	_, err := tn.queueRun()
	return err
}

const limitsOff = "messages_per_minute = 0\nrecipients_per_day = 0"

// caseA: throughput of one queue run over n queued messages.
func (b *bench) caseA(runs, n int) error {
	fmt.Printf("(a) %d queued 2 KB messages, one `sendmail -q`, limits off (token cached; pickup from drop/ included)\n", n)
	for _, conns := range []int{3, 1} {
		var rates []float64
		for r := range runs {
			tn, err := b.tenant(false, fmt.Sprintf("%s\nmax_connections = %d", limitsOff, conns))
			if err != nil {
				return err
			}
			err = tn.warm()
			if err == nil {
				err = tn.enqueue(n)
			}
			var q queueRun
			var emuCPU time.Duration
			if err == nil {
				before := selfCPU()
				q, err = tn.queueRun()
				emuCPU = selfCPU() - before
			}
			if err == nil {
				err = tn.drained(n + 1)
			}
			tn.emu.Close()
			if err != nil {
				return err
			}
			rate := float64(n) / q.wall.Seconds()
			rates = append(rates, rate)
			fmt.Printf("    max_connections %d, run %d: %.3f s, %.0f messages/s; CPU: sendmail -q %.3f s, emulator %.3f s\n",
				conns, r+1, q.wall.Seconds(), rate, q.cpu.Seconds(), emuCPU.Seconds())
		}
		fmt.Printf("  max_connections %d: median %.0f messages/s (target ≥ 1,500)\n", conns, median(rates))
	}
	return nil
}

// caseB: SMTP round trips per message over a slow link.
func (b *bench) caseB(runs, backlog int) error {
	const latency = 50 * time.Millisecond
	fmt.Printf("(b) backlog of %d messages, a link of %v (each SMTP reply that long after the flight that carried its command), one `sendmail -q` (max_connections 3)\n", backlog, latency)
	var perMsg, rtts, wallRTT []float64
	for r := range runs {
		tn, err := b.tenant(false, limitsOff)
		if err != nil {
			return err
		}
		err = tn.warm()
		if err == nil {
			err = tn.enqueue(backlog)
		}
		before := tn.emu.Stats()
		tn.emu.SetFaults(emulator.Faults{Latency: latency})
		var q queueRun
		if err == nil {
			q, err = tn.queueRun()
		}
		after := tn.emu.Stats()
		if err == nil {
			err = tn.drained(backlog + 1)
		}
		tn.emu.Close()
		if err != nil {
			return err
		}
		cmds := after.SMTPCommands - before.SMTPCommands
		conns := after.SMTPConnections - before.SMTPConnections
		// Round trips as the server counts them: each time it waited for
		// the client (a flight of commands, or a body), connection set-up
		// included; plus each connection's greeting, which the client
		// waits for before it sends anything.
		trips := after.SMTPRoundTrips - before.SMTPRoundTrips + conns
		// What the clock says: each connection waits latency per round trip.
		fromClock := q.wall.Seconds() * float64(conns) / latency.Seconds() / float64(backlog)
		perMsg = append(perMsg, float64(cmds)/float64(backlog))
		rtts = append(rtts, float64(trips)/float64(backlog))
		wallRTT = append(wallRTT, fromClock)
		fmt.Printf("    run %d: %.2f s, %d connections, %d commands = %.2f commands/message; %.2f round trips/message counted by the server; %.2f from the clock\n",
			r+1, q.wall.Seconds(), conns, cmds, float64(cmds)/float64(backlog), float64(trips)/float64(backlog), fromClock)
	}
	fmt.Printf("  median: %.2f round trips/message counted by the server (target ≤ 4), %.2f from the clock; %.2f SMTP commands/message\n",
		median(rtts), median(wallRTT), median(perMsg))
	return nil
}

// caseC: token requests over many short queue runs.
func (b *bench) caseC(runs int) error {
	const qruns, each = 50, 20
	fmt.Printf("(c) %d messages over %d `sendmail -q` runs of %d (separate processes), fresh token cache\n", qruns*each, qruns, each)
	var reqs []float64
	for r := range runs {
		tn, err := b.tenant(false, limitsOff)
		if err != nil {
			return err
		}
		start := time.Now()
		for i := 0; i < qruns && err == nil; i++ {
			if err = tn.enqueue(each); err == nil {
				_, err = tn.queueRun()
			}
		}
		wall := time.Since(start)
		if err == nil {
			err = tn.drained(qruns * each)
		}
		st := tn.emu.Stats()
		tn.emu.Close()
		if err != nil {
			return err
		}
		reqs = append(reqs, float64(st.TokenRequests))
		fmt.Printf("    run %d: %d token requests, %d SMTP connections, %.2f s in all\n", r+1, st.TokenRequests, st.SMTPConnections, wall.Seconds())
	}
	fmt.Printf("  median: %.0f token request(s) for %d messages (must be 1)\n", median(reqs), qruns*each)
	return nil
}

// caseD: pacing at 30 messages a minute with the emulator enforcing it.
func (b *bench) caseD() error {
	const n, perMinute = 300, 30
	// The first 30 go at once; each further 30 need the 60 s window to
	// slide past the 30 before them.
	minimum := time.Duration((n-1)/perMinute) * time.Minute
	fmt.Printf("(d) %d messages for one mailbox, messages_per_minute = %d, emulator enforcing Exchange's limits, one `sendmail -q`\n", n, perMinute)
	tn, err := b.tenant(true, fmt.Sprintf("messages_per_minute = %d", perMinute))
	if err != nil {
		return err
	}
	defer tn.emu.Close()
	if err := tn.enqueue(n); err != nil {
		return err
	}
	q, err := tn.queueRun()
	if err != nil {
		return err
	}
	if err := tn.drained(n); err != nil {
		return err
	}
	st := tn.emu.Stats()
	fmt.Printf("  drained in %.1f s; theoretical minimum %.0f s; %+.1f %% (target within 5 %%); %d throttling replies (must be 0); %d token request(s)\n",
		q.wall.Seconds(), minimum.Seconds(), 100*(q.wall.Seconds()/minimum.Seconds()-1), st.ThrottleReplies, st.TokenRequests)
	return nil
}

// profileA runs case a with the flusher as a library in this process, so
// that one CPU profile shows the flusher and the emulator side by side.
func (b *bench) profileA(n int, path string) error {
	tn, err := b.tenant(false, limitsOff)
	if err != nil {
		return err
	}
	defer tn.emu.Close()
	if err := tn.warm(); err != nil {
		return err
	}
	if err := tn.enqueue(n); err != nil {
		return err
	}
	cfg, err := conf.Load(tn.config)
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		return err
	}
	start := time.Now()
	err = flusher.New(cfg, flusher.Options{}).RunOnce(context.Background())
	wall := time.Since(start)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	if err := tn.drained(n + 1); err != nil {
		return err
	}
	fmt.Printf("(a) in process: %d messages in %.3f s, %.0f messages/s; profile in %s (go tool pprof -top %s)\n", n, wall.Seconds(), float64(n)/wall.Seconds(), path, path)
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// selfCPU is the CPU time this process (the emulator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the 1, 5 and 15 minute load averages: other work on the
// machine shows in the figures.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
