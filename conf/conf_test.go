package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const full = `
spool_dir = "/var/spool/exo-sendmail"
hostname = "web1.contoso.com"
max_message_size = "35MB"

[queue]
retry_min = "1m"
retry_max = "1h"
lifetime = "5d"

[aliases]
root = "ops@contoso.com"
www-data = "root"
team = ["a@contoso.com", "b@contoso.com, c@contoso.com"]
"*" = "catchall@contoso.com"

[[account]]
name = "contoso"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret_file = "/etc/exo-sendmail/secrets/contoso"
mailbox = "alerts@contoso.com"
transport = "smtp"
senders = ["*@web1.contoso.com", "root", "www-data"]
send_as = ["noreply@contoso.com"]
cloud = "global"

[[account]]
name = "fabrikam"
tenant = "fabrikam.com"
client_id = "11111111-1111-1111-1111-111111111111"
certificate_file = "certs/app.pfx"
mailbox = "alerts@fabrikam.com"
transport = "graph"
`

func TestParseFull(t *testing.T) {
	c, err := Parse("/etc/exo-sendmail/sendmail.toml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxMessageSize != 35000000 || c.Queue.Lifetime != 5*24*time.Hour || c.Queue.RetryMin != time.Minute {
		t.Errorf("size/durations: %d %v %v", c.MaxMessageSize, c.Queue.Lifetime, c.Queue.RetryMin)
	}
	if len(c.Accounts) != 2 || c.Accounts[0].MaxConnections != 3 || c.Accounts[0].MessagesPerMinute != 30 || c.Accounts[0].RecipientsPerMessage != 500 {
		t.Fatalf("accounts: %+v", c.Accounts)
	}
	if got := c.Accounts[1].CertificateFile; got != "/etc/exo-sendmail/certs/app.pfx" {
		t.Errorf("relative path not anchored at the config's directory: %s", got)
	}
	for sender, want := range map[string]string{
		"root": "contoso", "root@web1.contoso.com": "contoso", "www-data": "contoso",
		"app@web1.contoso.com": "contoso", "someone@elsewhere.com": "fabrikam",
	} {
		if a := c.AccountFor(sender); a == nil || a.Name != want {
			t.Errorf("AccountFor(%s) = %v, want %s", sender, a, want)
		}
	}
}

func TestResolve(t *testing.T) {
	c, err := Parse("x.toml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"root":                  "ops@contoso.com",
		"ROOT@web1.contoso.com": "ops@contoso.com",
		"www-data":              "ops@contoso.com",
		"team":                  "a@contoso.com b@contoso.com c@contoso.com",
		"nobody":                "catchall@contoso.com",
		"x@example.com":         "x@example.com",
		"<y@example.com>":       "y@example.com",
	} {
		if got := strings.Join(c.Resolve(in), " "); got != want {
			t.Errorf("Resolve(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveLoopAndFile(t *testing.T) {
	dir := t.TempDir()
	af := filepath.Join(dir, "aliases")
	os.WriteFile(af, []byte("# comment\npostmaster: root\nroot: admin,\n  second@example.com\nadmin: root\nloop1: loop2\nloop2: loop1\npipe: |/usr/bin/foo\n"), 0o644)
	c, err := Parse(filepath.Join(dir, "c.toml"), []byte("hostname = \"h.example\"\naliases_file = \"aliases\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Resolve("postmaster"), " "); got != "root@h.example second@example.com" {
		// root → admin → root: the cycle ends at root@h.example.
		t.Errorf("postmaster = %q", got)
	}
	if got := c.Resolve("loop1"); len(got) != 1 || !strings.HasSuffix(got[0], "@h.example") {
		t.Errorf("a loop must end: %v", got)
	}
	if got := strings.Join(c.Resolve("pipe"), " "); got != "pipe@h.example" {
		t.Errorf("pipe target must be dropped: %q", got)
	}
	_, err = c.CheckAliases()
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 8 || !strings.Contains(ce.Msg, "pipes") {
		t.Errorf("CheckAliases = %v, want the pipe on line 8", err)
	}
}

func TestErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"spool_dir = \"/x\"\nbogus = 1\n", 2, `unknown key "bogus"`},
		{"[queue]\nretry_min = \"soon\"\n", 2, "retry_min"},
		{"max_message_size = \"lots\"\n", 1, "max_message_size"},
		{"[queue]\nretry_min=\"2h\"\nretry_max=\"1h\"\n", 2, "longer than retry_max"},
		{"spool_dir = \n", 1, ""},
		{full + "\n" + full[strings.Index(full, "[[account]]"):strings.Index(full, "[[account]]\nname = \"fabrikam")], 37, "two accounts"},
		{strings.Replace(full, `transport = "graph"`, `transport = "carrier-pigeon"`, 1), 34, "carrier-pigeon"},
		{strings.Replace(full, `client_id = "11111111-1111-1111-1111-111111111111"`, `client_id = "my app"`, 1), 31, "GUID"},
		{strings.Replace(full, `mailbox = "alerts@fabrikam.com"`, `mailbox = "alerts"`, 1), 33, "mailbox"},
		{strings.Replace(full, `tenant = "fabrikam.com"`, `tenant = "common"`, 1), 30, "/common"},
		{strings.Replace(full, `certificate_file = "certs/app.pfx"`, "certificate_file = \"certs/app.pfx\"\nprivate_key_file = \"k.pem\"", 1), 33, "holds its key"},
		{"[[account]]\nname = \"a\"\nunknown_thing = 1\n", 3, "unknown key"},
		{"[aliases]\nroot = \"|/bin/sh\"\n", 2, "pipes"},
	} {
		_, err := Parse("s.toml", []byte(tc.src))
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%q: want *Error, got %v", tc.src, err)
			continue
		}
		if ce.File != "s.toml" || ce.Line != tc.line || !strings.Contains(ce.Msg, tc.want) {
			t.Errorf("got %v, want line %d with %q", err, tc.line, tc.want)
		}
	}
}

func TestLoadResolution(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_STATE_HOME", dir)
	t.Setenv("EXO_SENDMAIL_CONFIG", "")
	if _, err := os.Stat(DefaultPath); err == nil {
		t.Skip(DefaultPath + " exists on this machine")
	}
	c, err := Load("")
	if err != nil || c.Path != "" || c.SpoolDir != filepath.Join(dir, "exo-sendmail", "spool") || !c.Flusher.AutoStart {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("an explicit missing file must be an error naming it: %v", err)
	}
	p := filepath.Join(dir, "env.toml")
	os.WriteFile(p, []byte("spool_dir = \"q\"\n[flusher]\nauto_start = false\n"), 0o644)
	t.Setenv("EXO_SENDMAIL_CONFIG", p)
	c, err = Load("")
	if err != nil || c.SpoolDir != filepath.Join(dir, "q") || c.Flusher.AutoStart {
		t.Errorf("EXO_SENDMAIL_CONFIG: %+v %v", c, err)
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]int64{"35MB": 35e6, "10 MiB": 10 << 20, "512k": 512e3, "1000": 1000, "1.5GB": 1.5e9} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1MB", "3 parsecs", "MB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for in, want := range map[string]time.Duration{"5d": 120 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
}

// TestExampleParses keeps sendmail.toml.example in step with the parser.
func TestExampleParses(t *testing.T) {
	src, err := os.ReadFile("../sendmail.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("sendmail.toml.example", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Accounts) != 1 || c.Accounts[0].Mailbox != "alerts@contoso.com" || c.Resolve("root")[0] != "ops@contoso.com" {
		t.Errorf("example parsed to %+v", c)
	}
}
