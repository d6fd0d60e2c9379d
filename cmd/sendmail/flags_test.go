package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/queue"
	"github.com/exo-sendmail/exo-sendmail/submission"
)

func rcpts(notify string, addrs ...string) []queue.Recipient {
	var out []queue.Recipient
	for _, a := range addrs {
		out = append(out, queue.Recipient{Addr: a, Notify: notify})
	}
	return out
}

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name string
		args string // split on single spaces; "·" stands for a space inside a word
		want cmdline
	}{
		{"cron", "-FCronDaemon -i -B8BITMIME -oem root", cmdline{
			sub: submission.Options{FullName: "CronDaemon", DotIsData: true, Body8BitMIME: true, Recipients: rcpts("", "root")}}},
		{"cron MAILTO list", "-FCronDaemon -i -B8BITMIME -oem a@x.example,b@y.example", cmdline{
			sub: submission.Options{FullName: "CronDaemon", DotIsData: true, Body8BitMIME: true, Recipients: rcpts("", "a@x.example,b@y.example")}}},
		{"php", "-t -i -fbounce@example.com", cmdline{
			sub: submission.Options{FromHeaders: true, DotIsData: true, Sender: "bounce@example.com", SenderGiven: true}}},
		{"mailutils", "-oi -f from@example.com -t", cmdline{
			sub: submission.Options{FromHeaders: true, DotIsData: true, Sender: "from@example.com", SenderGiven: true}}},
		{"grouped", "-ti", cmdline{sub: submission.Options{FromHeaders: true, DotIsData: true}}},
		{"grouped with value", "-itfme@x.example to@y.example", cmdline{
			sub: submission.Options{FromHeaders: true, DotIsData: true, Sender: "me@x.example", SenderGiven: true, Recipients: rcpts("", "to@y.example")}}},
		{"grouped value in next word", "-if me@x.example to@y.example", cmdline{
			sub: submission.Options{DotIsData: true, Sender: "me@x.example", SenderGiven: true, Recipients: rcpts("", "to@y.example")}}},
		{"-r and brackets", "-r <me@x.example> a@b.example", cmdline{
			sub: submission.Options{Sender: "<me@x.example>", SenderGiven: true, Recipients: rcpts("", "a@b.example")}}},
		{"separate values", "-F Cron·Daemon -B 8BITMIME -o i -C /etc/x.toml -- -odd@x.example", cmdline{config: "/etc/x.toml",
			sub: submission.Options{FullName: "Cron Daemon", Body8BitMIME: true, DotIsData: true, Recipients: rcpts("", "-odd@x.example")}}},
		{"ignored letters", "-odi -odb -odq -om -oQ/var/q -h 5 -L label -U -G -m -n -d0.1 -X /tmp/log -Am -em -ee -x -c -s -p smtp:h a@b.example", cmdline{
			sub: submission.Options{Recipients: rcpts("", "a@b.example")}}},
		{"7BIT", "-B8BITMIME -B7bit a@b.example", cmdline{sub: submission.Options{Recipients: rcpts("", "a@b.example")}}},
		{"DSN", "-N success,DELAY -R hdrs -V abc123 a@b.example", cmdline{notify: "SUCCESS,DELAY",
			sub: submission.Options{Notify: "SUCCESS,DELAY", Ret: "HDRS", EnvID: "abc123", Recipients: rcpts("SUCCESS,DELAY", "a@b.example")}}},
		{"-O IgnoreDots", "-OIgnoreDots=true a@b.example", cmdline{sub: submission.Options{DotIsData: true, Recipients: rcpts("", "a@b.example")}}},
		{"-O other", "-O DeliveryMode=b a@b.example", cmdline{sub: submission.Options{Recipients: rcpts("", "a@b.example")}}},
		{"verbose", "-v -t", cmdline{verbose: true, sub: submission.Options{FromHeaders: true}}},
		{"options end at the first recipient", "a@b.example -f x@y.example", cmdline{
			sub: submission.Options{Recipients: rcpts("", "a@b.example", "-f", "x@y.example")}}},
		{"-bp", "-bp", cmdline{mode: modeMailq}},
		{"-bi", "-bi", cmdline{mode: modeAliases}},
		{"-I", "-I", cmdline{mode: modeAliases}},
		{"-bv", "-bv root", cmdline{mode: modeVerify, sub: submission.Options{Recipients: rcpts("", "root")}}},
		{"-bs", "-bs", cmdline{mode: modeSMTP}},
		{"-bd", "-bd", cmdline{mode: modeDaemon}},
		{"-b m separate", "-b m a@b.example", cmdline{sub: submission.Options{Recipients: rcpts("", "a@b.example")}}},
		{"-q", "-q", cmdline{mode: modeFlush}},
		{"-q30m", "-q30m", cmdline{mode: modeFlush, interval: 30 * time.Minute}},
		{"-q1h30m", "-q1h30m", cmdline{mode: modeFlush, interval: 90 * time.Minute}},
		{"-q15 is minutes", "-q15", cmdline{mode: modeFlush, interval: 15 * time.Minute}},
		{"-qR", "-qRexample.com", cmdline{mode: modeFlush}},
		{"-qI", "-qIABC", cmdline{mode: modeFlush}},
		{"-vq", "-vq", cmdline{mode: modeFlush, verbose: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var args []string
			for _, a := range strings.Split(c.args, " ") {
				args = append(args, strings.ReplaceAll(a, "·", " "))
			}
			got, err := parseArgs(args, modeSubmit)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", args, err)
			}
			if len(got.warnings) > 0 {
				t.Errorf("warnings: %q", got.warnings)
			}
			got.args, got.warnings = nil, nil
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("parseArgs(%q)\n got %+v\nwant %+v", args, *got, c.want)
			}
		})
	}
}

func TestParseArgsWarnings(t *testing.T) {
	got, err := parseArgs([]string{"-Mrfoo", "-t", "-Nbogus", "-Rnone", "-Z", "a@b.example"}, modeSubmit)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.warnings) != 4 || !strings.Contains(got.warnings[0], `"Mrfoo"`) {
		t.Errorf("warnings = %q", got.warnings)
	}
	if !got.sub.FromHeaders || got.sub.Ret != "" || got.notify != "" || len(got.sub.Recipients) != 1 {
		t.Errorf("unknown letters changed the parse: %+v", got)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-B", "BINARYMIME"},
		{"-f"},
		{"-t", "-F"},
		{"-bt"},
		{"-bh"},
		{"-qsoon"},
		{"-V", "has space"},
		{"-V", strings.Repeat("x", 101)},
	} {
		_, err := parseArgs(args, modeSubmit)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestFaceModes(t *testing.T) {
	c, err := parseArgs([]string{"-v"}, modeMailq)
	if err != nil || c.mode != modeMailq {
		t.Errorf("mailq -v: mode %v, %v", c.mode, err)
	}
}

// FuzzParseArgs: any argument vector parses or fails cleanly, and every
// recipient argument is kept as given.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-FCronDaemon\x00-i\x00-B8BITMIME\x00-oem\x00root",
		"-t\x00-i\x00-fbounce@example.com",
		"-oi\x00-f\x00from@example.com\x00-t",
		"-itf\x00me\x00--\x00a,b",
		"-q1h30m", "-bs", "-\x00x", "-N\x00never,success", "-O\x00IgnoreDots=false", "-\xff\x80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		c, err := parseArgs(args, modeSubmit)
		if c == nil {
			t.Fatal("nil cmdline")
		}
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if c.mode < modeSubmit || c.mode > modeDaemon || c.interval < 0 {
			t.Fatalf("mode %d interval %v", c.mode, c.interval)
		}
		if len(c.sub.Recipients) != len(c.args) {
			t.Fatalf("%d recipients for %d arguments", len(c.sub.Recipients), len(c.args))
		}
		if n := len(c.args); n > 0 && !reflect.DeepEqual(c.args, args[len(args)-n:]) {
			t.Fatalf("recipients %q are not the trailing arguments of %q", c.args, args)
		}
	})
}
