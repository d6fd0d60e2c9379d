package emulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/exo-sendmail/exo-sendmail/atomicfile"
)

// The default tenant `exo-sendmail emulator` creates. The ids are fixed so
// that a configuration written once keeps working across restarts.
const (
	DefaultTenant   = "contoso.onmicrosoft.com"
	DefaultClientID = "5d3c2b1a-7e6f-4a8b-9c0d-e1f2a3b4c5d6"
	DefaultMailbox  = "alerts@contoso.com"
	DefaultSendAs   = "noreply@contoso.com"
)

// sysexits codes.
const (
	exitOK        = 0
	exitUsage     = 64
	exitSoftware  = 70
	exitCantCreat = 73
)

// Main is `exo-sendmail emulator`: it runs an emulator with a default tenant
// until SIGINT or SIGTERM, after writing a sendmail.toml that points at it.
func Main(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("exo-sendmail emulator", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: exo-sendmail emulator [--dir DIR] [--limits] [--token-lifetime D] [--smtp-addr ADDR] [--http-addr ADDR]")
		fmt.Fprintln(stderr, "Runs an Exchange Online emulator (token endpoint, SMTP submission, Graph) on the loopback interface.")
		fset.PrintDefaults()
	}
	var o options
	fset.StringVar(&o.dir, "dir", "./exo-emulator", "directory for ca.pem, the app credentials, sendmail.toml and the Maildirs")
	fset.BoolVar(&o.limits, "limits", false, "enforce Exchange Online limits: 3 connections and 30 messages/minute per mailbox, 10,000 recipients/24 h")
	fset.DurationVar(&o.lifetime, "token-lifetime", 3599*time.Second, "lifetime of the access tokens issued")
	fset.StringVar(&o.smtpAddr, "smtp-addr", "127.0.0.1:0", "SMTP listen address (loopback only)")
	fset.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:0", "HTTPS listen address for the token endpoint, Graph and /_emulator/ (loopback only)")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "exo-sendmail emulator: unexpected argument %q\n", fset.Arg(0))
		fset.Usage()
		return exitUsage
	}
	for _, a := range []string{o.smtpAddr, o.httpAddr} {
		if err := checkLoopback(a); err != nil {
			fmt.Fprintln(stderr, "exo-sendmail "+err.Error())
			return exitUsage
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, o, stdout, stderr)
}

type options struct {
	dir                string
	limits             bool
	lifetime           time.Duration
	smtpAddr, httpAddr string
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) int {
	dir, err := filepath.Abs(o.dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		fmt.Fprintf(stderr, "exo-sendmail emulator: cannot create %s: %v\n", o.dir, err)
		return exitCantCreat
	}
	cfg, err := defaultTenant(dir)
	if err != nil {
		fmt.Fprintf(stderr, "exo-sendmail emulator: %v\n", err)
		return exitCantCreat
	}
	cfg.Limits = o.limits
	cfg.TokenLifetime = o.lifetime
	cfg.SMTPListen, cfg.HTTPListen = o.smtpAddr, o.httpAddr
	e, err := Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "exo-sendmail emulator: %v\n", err)
		return exitSoftware
	}
	defer e.Close()

	confPath := filepath.Join(dir, "sendmail.toml")
	conf, err := sendmailTOML(e, dir)
	if err == nil {
		err = atomicfile.Write(confPath, conf, 0o644, true)
	}
	if err != nil {
		fmt.Fprintf(stderr, "exo-sendmail emulator: writing %s: %v\n", confPath, err)
		return exitCantCreat
	}
	readyPath := filepath.Join(dir, "ready")
	if err := atomicfile.Write(readyPath, []byte(confPath+"\n"), 0o644, true); err != nil {
		fmt.Fprintf(stderr, "exo-sendmail emulator: writing %s: %v\n", readyPath, err)
		return exitCantCreat
	}
	defer os.Remove(readyPath)

	limits := "off"
	if o.limits {
		limits = "on (3 connections and 30 messages/minute per mailbox, 10,000 recipients/24 h)"
	}
	fmt.Fprintf(stdout, `exo-sendmail emulator: tenant %s (%s)
  token endpoint  %s
  SMTP            %s (STARTTLS, AUTH XOAUTH2)
  Graph           %s
  control         %s/_emulator/faults, /_emulator/stats, /_emulator/messages
  CA certificate  %s
  client id       %s
  client secret   %s
  certificate     %s (key %s)
  mailbox         %s (Send-As %s)
  maildirs        %s
  limits          %s
  config          %s
ready
`, e.Tenant, e.TenantID, e.TokenURL, e.SMTPAddr, e.GraphURL, e.BaseURL, e.CAFile, DefaultClientID,
		filepath.Join(dir, "secret"), filepath.Join(dir, "app-cert.pem"), filepath.Join(dir, "app-key.pem"),
		DefaultMailbox, DefaultSendAs, filepath.Join(dir, "maildir"), limits, confPath)

	<-ctx.Done()
	fmt.Fprintln(stdout, "exo-sendmail emulator: stopping")
	return exitOK
}

// defaultTenant builds the default tenant, creating its credentials in dir
// or reusing the ones a previous run left there.
func defaultTenant(dir string) (Config, error) {
	secretPath := filepath.Join(dir, "secret")
	secret, err := os.ReadFile(secretPath)
	if errors.Is(err, fs.ErrNotExist) {
		secret = []byte(newClientSecret())
		err = atomicfile.Write(secretPath, secret, 0o600, true)
	}
	if err != nil {
		return Config{}, fmt.Errorf("client secret %s: %w", secretPath, err)
	}
	certPath, keyPath := filepath.Join(dir, "app-cert.pem"), filepath.Join(dir, "app-key.pem")
	cert, _, err := readCertificateAndKey(certPath, keyPath)
	if err != nil {
		c, key, err := NewAppCertificate("exo-sendmail emulator app")
		if err != nil {
			return Config{}, fmt.Errorf("creating the app certificate: %w", err)
		}
		if err := WritePrivateKeyPEM(keyPath, key); err != nil {
			return Config{}, fmt.Errorf("writing %s: %w", keyPath, err)
		}
		if err := WriteCertificatePEM(certPath, c); err != nil {
			return Config{}, fmt.Errorf("writing %s: %w", certPath, err)
		}
		cert = c
	}
	return Config{
		Dir:    dir,
		Tenant: DefaultTenant,
		Apps: []App{{
			ClientID:     DefaultClientID,
			Secrets:      []Secret{{Value: string(bytes.TrimSpace(secret))}},
			Certificates: []*x509.Certificate{cert},
			SMTPRole:     true,
			GraphRole:    true,
			Mailboxes:    []string{DefaultMailbox},
		}},
		Mailboxes: []Mailbox{{Address: DefaultMailbox, SendAs: []string{DefaultSendAs}}},
	}, nil
}

// newClientSecret returns a secret shaped like Entra's: 40 characters with
// "8Q~" after a three-character prefix.
func newClientSecret() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-"
	pick := func(n int, set string) string {
		var b strings.Builder
		var one [1]byte
		for b.Len() < n {
			rand.Read(one[:])
			if int(one[0]) < 256-256%len(set) { // no modulo bias
				b.WriteByte(set[int(one[0])%len(set)])
			}
		}
		return b.String()
	}
	return pick(3, alphabet[:62]) + "8Q~" + pick(34, alphabet)
}

// sendmailTOML is a configuration of the project that sends through e.
func sendmailTOML(e *Emulator, dir string) ([]byte, error) {
	type account struct {
		Name             string   `toml:"name"`
		Tenant           string   `toml:"tenant"`
		ClientID         string   `toml:"client_id"`
		ClientSecretFile string   `toml:"client_secret_file"`
		Mailbox          string   `toml:"mailbox"`
		Transport        string   `toml:"transport"`
		SendAs           []string `toml:"send_as"`
		TokenURL         string   `toml:"token_url"`
		SMTPServer       string   `toml:"smtp_server"`
		GraphURL         string   `toml:"graph_url"`
		CAFile           string   `toml:"ca_file"`
	}
	conf := struct {
		SpoolDir string            `toml:"spool_dir"`
		StateDir string            `toml:"state_dir"`
		Hostname string            `toml:"hostname"`
		Aliases  map[string]string `toml:"aliases"`
		Account  []account         `toml:"account"`
	}{
		SpoolDir: filepath.Join(dir, "spool"),
		StateDir: filepath.Join(dir, "state"),
		Hostname: "web1.contoso.com",
		Aliases:  map[string]string{"root": "ops@contoso.com"},
		Account: []account{{
			Name:             "contoso",
			Tenant:           e.Tenant,
			ClientID:         DefaultClientID,
			ClientSecretFile: filepath.Join(dir, "secret"),
			Mailbox:          DefaultMailbox,
			Transport:        "smtp",
			SendAs:           []string{DefaultSendAs},
			TokenURL:         e.TokenURL,
			SMTPServer:       e.SMTPAddr,
			GraphURL:         e.GraphURL,
			CAFile:           e.CAFile,
		}},
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Written by `exo-sendmail emulator` on %s: sends through the emulator.\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&buf, "# For certificate credentials instead of the secret, replace client_secret_file with\n")
	fmt.Fprintf(&buf, "#   certificate_file = %q\n#   private_key_file = %q\n", filepath.Join(dir, "app-cert.pem"), filepath.Join(dir, "app-key.pem"))
	fmt.Fprintf(&buf, "# For Graph, set transport = \"graph\".\n\n")
	if err := toml.NewEncoder(&buf).Encode(conf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
