package check_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/check"
	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/emulator"
	"software.sslmate.com/src/go-pkcs12"
)

const (
	clientID = emulator.DefaultClientID
	mailbox  = "alerts@contoso.com"
	secret   = "Qx8~s3cr3t.Value_With-Chars~0123456789abcd"
)

// goodApp is an app set up as the runbook says: secret, SMTP.SendAsApp,
// Mail.Send, FullAccess on the mailbox.
func goodApp() emulator.App {
	return emulator.App{ClientID: clientID, Secrets: []emulator.Secret{{Value: secret}},
		SMTPRole: true, GraphRole: true, Mailboxes: []string{mailbox}}
}

// tenant starts an emulator with the apps and mailboxes given.
func tenant(t *testing.T, apps []emulator.App, mailboxes ...emulator.Mailbox) *emulator.Emulator {
	t.Helper()
	if len(mailboxes) == 0 {
		mailboxes = []emulator.Mailbox{{Address: mailbox}}
	}
	e, err := emulator.Start(emulator.Config{Dir: t.TempDir(), Tenant: "contoso.onmicrosoft.com", Apps: apps, Mailboxes: mailboxes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// account is one [[account]] of the configuration written for a test.
type account struct {
	name, transport, clientID string
	secret                    string // the secret file's content; "" = no secret file (certificate)
	secretMode                os.FileMode
	extra                     string // more TOML lines
	noCA                      bool   // leave ca_file out
}

// configure writes the secret files and the configuration pointing at e,
// and loads it as exo-sendmail does.
func configure(t *testing.T, e *emulator.Emulator, accounts ...account) *conf.Config {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "spool_dir = %q\nstate_dir = %q\nhostname = \"host.example.com\"\n", filepath.Join(dir, "spool"), filepath.Join(dir, "state"))
	for i, a := range accounts {
		if a.name == "" {
			a.name = fmt.Sprintf("acct%d", i+1)
		}
		if a.transport == "" {
			a.transport = "smtp"
		}
		if a.clientID == "" {
			a.clientID = clientID
		}
		secretFile := ""
		if a.secret != "" {
			secretFile = filepath.Join(dir, a.name+".secret")
			mode := a.secretMode
			if mode == 0 {
				mode = 0o600
			}
			if err := os.WriteFile(secretFile, []byte(a.secret+"\n"), mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(secretFile, mode)
		}
		block := e.AccountTOML(a.name, a.clientID, secretFile, mailbox)
		if a.noCA { // TestUntrustedServer fails if this stops matching
			block = strings.Replace(block, fmt.Sprintf("ca_file = %q\n", e.CAFile), "", 1)
		}
		fmt.Fprintf(&b, "\n%stransport = %q\n%s", block, a.transport, a.extra)
	}
	path := filepath.Join(dir, "sendmail.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return cfg
}

// run runs the check and asserts that its report holds no secret and no
// token: neither the secret files' content nor any token in the cache the
// check warmed.
func run(t *testing.T, cfg *conf.Config, opt check.Options, hidden ...string) (check.Outcome, string) {
	t.Helper()
	var out strings.Builder
	opt.Out = &out
	outcome, err := check.Run(context.Background(), cfg, opt)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	report := out.String()
	t.Logf("report:\n%s", report)
	hidden = append(hidden, secret)
	for _, a := range cfg.Accounts {
		if a.ClientSecretFile != "" {
			if b, err := os.ReadFile(a.ClientSecretFile); err == nil {
				hidden = append(hidden, strings.TrimSpace(string(b)))
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(cfg.StateDir, "tokens", "*.json"))
	for _, f := range files {
		var c struct {
			AccessToken string `json:"access_token"`
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &c) == nil && c.AccessToken != "" {
			parts := strings.Split(c.AccessToken, ".")
			hidden = append(hidden, c.AccessToken, parts[len(parts)-1])
		}
	}
	for _, h := range hidden {
		if h != "" && strings.Contains(report, h) {
			t.Fatalf("the report holds a secret or token (%d bytes)", len(h))
		}
	}
	return outcome, report
}

func wantIn(t *testing.T, report string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(report, p) {
			t.Errorf("report lacks %q", p)
		}
	}
}

func wantOutcome(t *testing.T, got, want check.Outcome) {
	t.Helper()
	if got != want {
		t.Errorf("outcome %v, want %v", got, want)
	}
}

func TestGoodSMTPAccount(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "ok   secret:", "mode 0600", "ok   token:", "roles SMTP.SendAsApp", "audience https://outlook.office365.com",
		"app "+clientID, "tenant "+e.TenantID, "STARTTLS TLS 1.3", "authenticated as "+mailbox, "--send-to", "result: passed")
	if strings.Contains(report, "FAIL") || strings.Contains(report, "warn") {
		t.Error("a good account gets a FAIL or warn line")
	}
	if n := len(e.Messages()); n != 0 {
		t.Errorf("check without --send-to sent %d messages", n)
	}
}

func TestCheckFetchesAgainDespiteCache(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret})
	run(t, cfg, check.Options{})
	before := e.Stats().TokenRequests
	// A cached token is valid, but the credentials may have changed since:
	// the check must ask Entra again.
	os.WriteFile(cfg.Accounts[0].ClientSecretFile, []byte("wrong-secret-value-0000\n"), 0o600)
	outcome, report := run(t, cfg, check.Options{}, "wrong-secret-value-0000")
	wantOutcome(t, outcome, check.Failed)
	if e.Stats().TokenRequests == before {
		t.Error("the check used the cached token without asking the token endpoint")
	}
	wantIn(t, report, "AADSTS7000215", "a token fetched before is valid until")
}

func TestWrongSecret(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: "not-the-secret-value-42"})
	outcome, report := run(t, cfg, check.Options{}, "not-the-secret-value-42")
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL token: AADSTS7000215", "use the secret's Value, not its Secret ID", "result: failed")
	if strings.Contains(report, "smtp:") {
		t.Error("SMTP was tried without a token")
	}
}

func TestSecretIDInsteadOfValue(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	id := "0b6f3c1e-2d4a-4e8b-9f10-a1b2c3d4e5f6"
	cfg := configure(t, e, account{secret: id, secretMode: 0o644})
	outcome, report := run(t, cfg, check.Options{}, id)
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "warn secret:", "shape of a Secret ID", "readable by every user (mode 0644)", "chmod 0600", "AADSTS7000215")
}

func TestExpiredSecret(t *testing.T) {
	app := goodApp()
	app.Secrets = []emulator.Secret{{Value: secret, Expired: true}}
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "AADSTS7000222", "expired")
}

func TestUnknownClient(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	other := "11111111-2222-4333-8444-555555555555"
	cfg := configure(t, e, account{secret: secret, clientID: other})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "AADSTS700016", "check client_id")
}

func TestMissingSecretFile(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{extra: "client_secret_file = \"/nonexistent/exo/secret\"\n"})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL secret: client secret file /nonexistent/exo/secret does not exist")
	if e.Stats().TokenRequests != 0 {
		t.Error("a token was requested without credentials")
	}
}

func TestAppWithoutSMTPRole(t *testing.T) {
	app := goodApp()
	app.SMTPRole = false
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "roles (none)", "warn roles: the token carries no SMTP.SendAsApp role", "RBAC for Applications",
		"FAIL smtp:", "535 5.7.3", "1. the app lacks SMTP.SendAsApp or its admin consent",
		"2. the service principal was registered with the App registration's object id",
		"New-ServicePrincipal -AppId "+clientID+" -ObjectId ",
		"Add-MailboxPermission -Identity "+mailbox, "permission changes take")
	// Exchange's first 535, for the token just fetched: no renewal, no
	// second connection.
	wantIn(t, report, "FAIL smtp: "+e.SMTPAddr+" answered AUTH with 535 5.7.3")
	if st := e.Stats(); st.TokenRequests != 1 || st.SMTPConnections != 1 {
		t.Errorf("%d token requests, %d SMTP connections; want 1, 1", st.TokenRequests, st.SMTPConnections)
	}
}

func TestSMTPAuthDisabled(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()}, emulator.Mailbox{Address: mailbox, SMTPAuthDisabled: true})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "535 5.7.139", "Set-CASMailbox -Identity "+mailbox+" -SmtpClientAuthenticationDisabled $false",
		"Set-TransportConfig -SmtpClientAuthenticationDisabled $false")
}

func TestSendTo(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{SendTo: "admin@example.net"})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "ok   send: test message <check.", "to admin@example.net accepted: 250")
	msgs := e.Messages()
	if len(msgs) != 1 {
		t.Fatalf("emulator holds %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Via != "smtp" || m.MailFrom != mailbox || len(m.Rcpts) != 1 || m.Rcpts[0] != "admin@example.net" {
		t.Errorf("message via %s from %s to %v", m.Via, m.MailFrom, m.Rcpts)
	}
	for _, h := range []string{"From: " + mailbox, "Subject: exo-sendmail check from host.example.com", "Date: ", "Message-ID: <check."} {
		if !strings.Contains(string(m.Data), h) {
			t.Errorf("test message lacks %q", h)
		}
	}
}

// The test message goes over the connection the SMTP step authenticated.
func TestSendToOnTheCheckedConnection(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret})
	outcome, _ := run(t, cfg, check.Options{SendTo: "admin@example.net"})
	wantOutcome(t, outcome, check.Passed)
	if st := e.Stats(); st.SMTPConnections != 1 || len(e.Messages()) != 1 {
		t.Errorf("%d SMTP connections, %d messages; want 1, 1", st.SMTPConnections, len(e.Messages()))
	}
}

func TestSendToWithoutMailboxPermission(t *testing.T) {
	app := goodApp()
	app.Mailboxes = nil // service principal without FullAccess
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{SendTo: "admin@example.net"})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "authenticated as", "FAIL send:", "430 4.2.0", "may not log on to mailbox "+mailbox,
		"Add-MailboxPermission -Identity "+mailbox, "remove SMTP.SendAsApp from the app in Entra")
	if len(e.Messages()) != 0 {
		t.Error("a message was accepted")
	}
}

func TestSendToRefusedRecipient(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	e.SetFaults(emulator.Faults{RcptPerm: []string{"nobody@example.net"}})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{SendTo: "nobody@example.net"})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL send:", "550 5.1.10", "check the --send-to address")
}

func TestGraphAccount(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret, transport: "graph"})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "roles Mail.Send", "audience https://graph.microsoft.com", "ok   graph:", "accepted the token for "+mailbox, "nothing was sent")
	if strings.Contains(report, "FAIL") || strings.Contains(report, "warn") {
		t.Error("a good Graph account gets a FAIL or warn line")
	}
	if len(e.Messages()) != 0 {
		t.Error("the Graph probe sent a message")
	}

	outcome, report = run(t, cfg, check.Options{SendTo: "admin@example.net"})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "ok   send:", "non-delivery report")
	if msgs := e.Messages(); len(msgs) != 1 || msgs[0].Via != "graph" {
		t.Errorf("emulator holds %+v, want one message via Graph", msgs)
	}
}

func TestGraphWithoutMailSend(t *testing.T) {
	app := goodApp()
	app.GraphRole = false
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret, transport: "graph"})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "warn roles: the token carries no Mail.Send role", "FAIL graph:", "403", "Mail.Send", "Grant admin consent")
}

func TestGraphMailboxNotAllowed(t *testing.T) {
	app := goodApp()
	app.Mailboxes = nil
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret, transport: "graph"})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL graph: an Application Access Policy", "Test-ApplicationAccessPolicy -Identity "+mailbox)
}

func TestGraphWithSMTPFallbackChecksBoth(t *testing.T) {
	app := goodApp()
	app.SMTPRole = false
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{secret: secret, transport: "graph", extra: "smtp_fallback = true\n"})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "ok   graph:", "FAIL smtp:", "535 5.7.3")
}

// certificateTenant starts a tenant whose app has a new certificate
// credential (and no secret), named cn.
func certificateTenant(t *testing.T, cn string) (*emulator.Emulator, *x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	cert, key, err := emulator.NewAppCertificate(cn)
	if err != nil {
		t.Fatal(err)
	}
	app := goodApp()
	app.Secrets, app.Certificates = nil, []*x509.Certificate{cert}
	return tenant(t, []emulator.App{app}), cert, key
}

func TestCertificateAccount(t *testing.T) {
	e, cert, key := certificateTenant(t, "exo-sendmail test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	emulator.WriteCertificatePEM(certFile, cert)
	emulator.WritePrivateKeyPEM(keyFile, key)
	cfg := configure(t, e, account{extra: fmt.Sprintf("certificate_file = %q\nprivate_key_file = %q\n", certFile, keyFile)})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "ok   certificate: "+certFile, "RSA 2048 bits", "thumbprint ", "ok   key: "+keyFile, "matches the certificate", "authenticated as")
	if strings.Contains(report, "warn") {
		t.Error("a public certificate file readable by all was warned about")
	}
}

func TestCertificateProblems(t *testing.T) {
	cert, _, err := emulator.NewAppCertificate("registered")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := emulator.NewAppCertificate("other")
	if err != nil {
		t.Fatal(err)
	}
	app := goodApp()
	app.Certificates = []*x509.Certificate{cert}
	e := tenant(t, []emulator.App{app})
	dir := t.TempDir()

	certFile, keyFile := filepath.Join(dir, "app.crt"), filepath.Join(dir, "other.key")
	emulator.WriteCertificatePEM(certFile, cert)
	emulator.WritePrivateKeyPEM(keyFile, otherKey)
	os.Chmod(keyFile, 0o640)
	os.Chown(keyFile, -1, 65534) // a group that is not the service user's
	cfg := configure(t, e, account{extra: fmt.Sprintf("certificate_file = %q\nprivate_key_file = %q\n", certFile, keyFile)})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "warn key: private key file "+keyFile+" holds a secret but is readable by its group (mode 0640)",
		"FAIL key: the private key in "+keyFile+" does not belong to the certificate")

	// A certificate that expires in 10 days.
	soon, soonKey := selfSigned(t, time.Now().Add(10*24*time.Hour))
	app.Certificates = []*x509.Certificate{soon}
	e = tenant(t, []emulator.App{app})
	emulator.WriteCertificatePEM(certFile, soon)
	emulator.WritePrivateKeyPEM(keyFile, soonKey)
	cfg = configure(t, e, account{extra: fmt.Sprintf("certificate_file = %q\nprivate_key_file = %q\n", certFile, keyFile)})
	outcome, report = run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "warn certificate:", "expires on", "(in 9 days)", "result: passed (1 warning)")

	// An expired one.
	old, oldKey := selfSigned(t, time.Now().Add(-time.Hour))
	emulator.WriteCertificatePEM(certFile, old)
	emulator.WritePrivateKeyPEM(keyFile, oldKey)
	outcome, report = run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL certificate:", "expired on")
}

// A PKCS#12 file passed as a systemd credential is read in place of the
// configured path, and its password file, readable by all, is warned about.
func TestPKCS12SystemdCredential(t *testing.T) {
	e, cert, key := certificateTenant(t, "exo-sendmail pfx")
	pfx, err := pkcs12.Modern.Encode(key, cert, nil, "pfx-pass")
	if err != nil {
		t.Fatal(err)
	}
	creds, dir := t.TempDir(), t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	pfxFile, pwFile := filepath.Join(creds, "app.pfx"), filepath.Join(dir, "pfx-password")
	os.WriteFile(pfxFile, pfx, 0o600)
	os.WriteFile(pwFile, []byte("pfx-pass\n"), 0o644)
	os.Chmod(pwFile, 0o644)
	cfg := configure(t, e, account{extra: fmt.Sprintf("certificate_file = \"/etc/exo-sendmail/app.pfx\"\ncertificate_password_file = %q\n", pwFile)})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Passed)
	wantIn(t, report, "ok   certificate: "+pfxFile+", mode 0600", "(systemd credential)", `"exo-sendmail pfx"`,
		"warn password: certificate password file "+pwFile+" holds a secret but is readable by every user (mode 0644)", "authenticated as")
	if strings.Contains(report, "ok   key:") {
		t.Error("a key line for the key inside the PKCS#12 file")
	}

	os.WriteFile(pwFile, []byte("wrong\n"), 0o644)
	outcome, report = run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL certificate: cannot decode the PKCS#12 file "+pfxFile, "warn password:")
	if e.Stats().TokenRequests != 1 {
		t.Errorf("%d token requests, want 1 (none with an undecodable certificate)", e.Stats().TokenRequests)
	}
}

func selfSigned(t *testing.T, notAfter time.Time) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "short-lived"},
		NotBefore: notAfter.Add(-30 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestUntrustedServer(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret, noCA: true})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, "FAIL token:", "ca_file")
}

func TestTokenEndpointDown(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	e.SetFaults(emulator.Faults{TokenDown: true})
	cfg := configure(t, e, account{secret: secret})
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.TempFailed)
	wantIn(t, report, "FAIL token:", "503", "result: failed temporarily")
}

func TestSMTPServerUnreachable(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	cfg := configure(t, e, account{secret: secret})
	cfg.Accounts[0].SMTPServer = closed
	outcome, report := run(t, cfg, check.Options{})
	wantOutcome(t, outcome, check.TempFailed)
	wantIn(t, report, "FAIL smtp: "+closed+": connect failed", "port 587")
}

func TestSeveralAccountsAndAccountOption(t *testing.T) {
	app := goodApp()
	e := tenant(t, []emulator.App{app})
	cfg := configure(t, e, account{name: "good", secret: secret}, account{name: "bad", secret: "wrong-one-1234"})
	outcome, report := run(t, cfg, check.Options{}, "wrong-one-1234")
	wantOutcome(t, outcome, check.Failed)
	wantIn(t, report, `account "good"`, `account "bad"`, "authenticated as", "AADSTS7000215")

	outcome, report = run(t, cfg, check.Options{Account: "good"})
	wantOutcome(t, outcome, check.Passed)
	if strings.Contains(report, `account "bad"`) {
		t.Error("--account good also checked bad")
	}

	var out strings.Builder
	if _, err := check.Run(context.Background(), cfg, check.Options{Account: "nope", Out: &out}); err == nil || !strings.Contains(err.Error(), "good, bad") {
		t.Errorf("unknown account: error %v", err)
	}
	if _, err := check.Run(context.Background(), cfg, check.Options{SendTo: "not an address", Out: &out}); err == nil {
		t.Error("a malformed --send-to was accepted")
	}
	if out.Len() != 0 {
		t.Errorf("usage errors printed a report: %q", out.String())
	}
}

// TestPackagedSecretModeIsFine: the packaged layout, 0640 in the service
// user's own group, is no warning; the same file in another group is.
func TestPackagedSecretModeIsFine(t *testing.T) {
	e := tenant(t, []emulator.App{goodApp()})
	cfg := configure(t, e, account{secret: secret, secretMode: 0o640})
	_, report := run(t, cfg, check.Options{})
	if strings.Contains(report, "warn secret") {
		t.Errorf("0640 in the service user's group must not warn:\n%s", report)
	}
	os.Chown(cfg.Accounts[0].ClientSecretFile, -1, 65534)
	_, report = run(t, cfg, check.Options{})
	wantIn(t, report, "warn secret:", "readable by its group (mode 0640)")
}
