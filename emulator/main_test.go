package emulator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/exo-sendmail/exo-sendmail/conf"
)

func TestMainRunsTheDefaultTenant(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, outW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, options{dir: dir, lifetime: time.Hour, smtpAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}, outW, &stderr)
		outW.Close()
	}()
	lines := bufio.NewScanner(out)
	var printed []string
	for lines.Scan() {
		printed = append(printed, lines.Text())
		if lines.Text() == "ready" {
			break
		}
	}
	if len(printed) == 0 || printed[len(printed)-1] != "ready" {
		t.Fatalf("no ready line; printed %q, stderr %q", printed, stderr.String())
	}
	go io.Copy(io.Discard, out)
	if _, err := os.Stat(filepath.Join(dir, "ready")); err != nil {
		t.Errorf("ready file: %v", err)
	}

	var conf struct {
		SpoolDir string            `toml:"spool_dir"`
		StateDir string            `toml:"state_dir"`
		Hostname string            `toml:"hostname"`
		Aliases  map[string]string `toml:"aliases"`
		Account  []struct {
			Name, Tenant, Mailbox, Transport string
			ClientID                         string   `toml:"client_id"`
			ClientSecretFile                 string   `toml:"client_secret_file"`
			SendAs                           []string `toml:"send_as"`
			TokenURL                         string   `toml:"token_url"`
			SMTPServer                       string   `toml:"smtp_server"`
			GraphURL                         string   `toml:"graph_url"`
			CAFile                           string   `toml:"ca_file"`
		} `toml:"account"`
	}
	md, err := toml.DecodeFile(filepath.Join(dir, "sendmail.toml"), &conf)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Errorf("sendmail.toml has keys the test does not know: %v", u)
	}
	if len(conf.Account) != 1 || conf.SpoolDir != filepath.Join(dir, "spool") || conf.Aliases["root"] != "ops@contoso.com" ||
		conf.Hostname != "web1.contoso.com" {
		t.Fatalf("sendmail.toml: %+v", conf)
	}
	a := conf.Account[0]
	if a.Name != "contoso" || a.Tenant != DefaultTenant || a.ClientID != DefaultClientID || a.Mailbox != DefaultMailbox ||
		a.Transport != "smtp" || len(a.SendAs) != 1 || a.SendAs[0] != DefaultSendAs || a.SMTPServer == "" ||
		!strings.HasSuffix(a.GraphURL, "/v1.0") || a.CAFile != filepath.Join(dir, "ca.pem") {
		t.Errorf("account: %+v", a)
	}
	fi, err := os.Stat(a.ClientSecretFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %s: %v %v, want mode 0600", a.ClientSecretFile, fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "app-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("app-key.pem: %v, want mode 0600", err)
	}
	secret, _ := os.ReadFile(a.ClientSecretFile)
	if strings.Contains(strings.Join(printed, "\n"), string(secret)) {
		t.Error("the client secret was printed")
	}

	// The configuration works: a token with the secret from the file, through the CA file.
	pem, _ := os.ReadFile(a.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.PostForm(a.TokenURL, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {a.ClientID},
		"client_secret": {string(secret)}, "scope": {"https://outlook.office365.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("token with the written configuration: %s", resp.Status)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "ready")); !os.IsNotExist(err) {
		t.Errorf("ready file left behind: %v", err)
	}

	// A second run reuses the credentials.
	cfg, err := defaultTenant(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Apps[0].Secrets[0].Value != string(secret) {
		t.Error("a second run made a new secret")
	}
}

func TestMainRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	code := Main([]string{"--dir", t.TempDir(), "--smtp-addr", "0.0.0.0:2525"}, io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "loopback") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if code := Main([]string{"extra"}, io.Discard, io.Discard); code != exitUsage {
		t.Errorf("an extra argument: exit %d", code)
	}
	if _, err := Start(Config{Dir: t.TempDir(), Tenant: tenant, HTTPListen: "[::]:0"}); err == nil {
		t.Error("Start listened beyond loopback")
	}
}

// The blocks AccountTOML writes are accounts the project loads as they
// are, pointed at the emulator, and a caller's keys appended to one stay
// in that account.
func TestAccountTOMLIsAnAccountOfTheProject(t *testing.T) {
	e := start(t, testConfig(t))
	dir := t.TempDir()
	src := "spool_dir = \"spool\"\nstate_dir = \"state\"\nhostname = \"web1.contoso.com\"\n" +
		e.AccountTOML("contoso", clientID, "secret", mailbox, sendAs, "ops@contoso.com") +
		"transport = \"graph\"\n" +
		e.AccountTOML("cert", clientID, "", mailbox) +
		"certificate_file = \"app.pem\"\nprivate_key_file = \"app-key.pem\"\n"
	c, err := conf.Parse(filepath.Join(dir, "sendmail.toml"), []byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	if len(c.Accounts) != 2 {
		t.Fatalf("%d accounts, want 2:\n%s", len(c.Accounts), src)
	}
	for _, a := range c.Accounts {
		if a.Tenant != e.Tenant || a.ClientID != clientID || a.Mailbox != mailbox || a.TokenURL != e.TokenURL ||
			a.SMTPServer != e.SMTPAddr || a.GraphURL != e.GraphURL || a.CAFile != e.CAFile {
			t.Errorf("account %s does not point at the emulator: %+v", a.Name, a)
		}
	}
	a, b := c.Accounts[0], c.Accounts[1]
	if a.Name != "contoso" || a.ClientSecretFile != filepath.Join(dir, "secret") || a.Transport != "graph" ||
		!slices.Equal(a.SendAs, []string{sendAs, "ops@contoso.com"}) {
		t.Errorf("first account: %+v", a)
	}
	if b.Name != "cert" || b.ClientSecretFile != "" || b.CertificateFile != filepath.Join(dir, "app.pem") || len(b.SendAs) != 0 || b.Transport != "smtp" {
		t.Errorf("second account: %+v", b)
	}
}
