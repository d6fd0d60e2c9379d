package token_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// Against the project's Exchange Online emulator: the other implementation
// of Entra's token endpoint in this tree.
func TestEmulator(t *testing.T) {
	const secret = "Emu8Q~valid.secret_value"
	cert, key, err := emulator.NewAppCertificate("exo-sendmail test")
	if err != nil {
		t.Fatal(err)
	}
	emu, err := emulator.Start(emulator.Config{
		Dir:    t.TempDir(),
		Tenant: emulator.DefaultTenant,
		Apps: []emulator.App{{
			ClientID:     emulator.DefaultClientID,
			Secrets:      []emulator.Secret{{Value: secret}, {Value: "Old8Q~expired", Expired: true}},
			Certificates: []*x509.Certificate{cert},
			SMTPRole:     true,
			Mailboxes:    []string{emulator.DefaultMailbox},
		}},
		Mailboxes: []emulator.Mailbox{{Address: emulator.DefaultMailbox}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })

	dir := t.TempDir()
	client := emu.HTTPClient()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	source := func(cfg token.Config) *token.Source {
		cfg.TokenURL, cfg.ClientID, cfg.Scope, cfg.HTTPClient = emu.TokenURL, emulator.DefaultClientID, "https://outlook.office365.com/.default", client
		s, err := token.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()

	cache := filepath.Join(dir, "cache")
	a := source(token.Config{SecretFile: file("secret", secret+"\n"), CacheDir: cache})
	tok, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := token.DecodeClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(claims.Roles, "SMTP.SendAsApp") || !strings.HasPrefix(claims.Audience, "https://outlook.office") {
		t.Errorf("claims: audience %q roles %v", claims.Audience, claims.Roles)
	}
	b := source(token.Config{SecretFile: file("secret", secret), CacheDir: cache})
	if got, err := b.Token(ctx); err != nil || got != tok || b.Fetches() != 0 {
		t.Errorf("second Source: %v, same %v, Fetches %d", err, got == tok, b.Fetches())
	}
	if n := emu.Stats().TokenRequests; n != 1 {
		t.Errorf("emulator saw %d token requests, want 1", n)
	}

	certFile, keyFile := filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	if err := emulator.WriteCertificatePEM(certFile, cert); err != nil {
		t.Fatal(err)
	}
	if err := emulator.WritePrivateKeyPEM(keyFile, key); err != nil {
		t.Fatal(err)
	}
	if _, err := source(token.Config{CertificateFile: certFile, PrivateKeyFile: keyFile}).Token(ctx); err != nil {
		t.Errorf("certificate credential: %v", err)
	}

	for _, c := range []struct {
		secret, code string
	}{{"Wrong8Q~secret", "AADSTS7000215"}, {"Old8Q~expired", "AADSTS7000222"}} {
		_, err := source(token.Config{SecretFile: file("bad", c.secret)}).Token(ctx)
		var fe *failure.Error
		if !errors.As(err, &fe) || fe.Class != failure.Config || !strings.Contains(err.Error(), c.code) || fe.Remedy == "" {
			t.Errorf("secret %q: %v, want a configuration error with %s and a remedy", c.secret, err, c.code)
		}
		if err != nil && strings.Contains(err.Error(), c.secret) {
			t.Errorf("error leaks the secret: %v", err)
		}
	}

	emu.SetFaults(emulator.Faults{TokenDown: true})
	_, err = source(token.Config{SecretFile: file("secret", secret)}).Token(ctx)
	if failure.ClassOf(err) != failure.Temporary || err == nil {
		t.Errorf("token endpoint down: %v, want a temporary failure", err)
	}
}
