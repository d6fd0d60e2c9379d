package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"software.sslmate.com/src/go-pkcs12"
)

// paths lists the paths of files, in order.
func paths(files []*File) []string {
	var p []string
	for _, f := range files {
		p = append(p, f.Path)
	}
	return p
}

// LoadCertificate says where the certificate and the key came from, and
// which files hold a secret, with the systemd credential lookup applied.
func TestLoadCertificateFiles(t *testing.T) {
	pair := testPairs(t)[0]
	pkcs8, err := x509.MarshalPKCS8PrivateKey(pair.key)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := pkcs12.Modern.Encode(pair.key, pair.cert, nil, "pfx-pass")
	if err != nil {
		t.Fatal(err)
	}
	dir, creds := t.TempDir(), t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	certPEM := writeFile(t, dir, "app.crt", pemBlock("CERTIFICATE", pair.cert.Raw))
	credKey := writeFile(t, creds, "app.key", pemBlock("PRIVATE KEY", pkcs8))
	both := writeFile(t, dir, "both.pem", append(pemBlock("CERTIFICATE", pair.cert.Raw), pemBlock("PRIVATE KEY", pkcs8)...))
	pfxFile := writeFile(t, dir, "app.pfx", pfx)
	pw := writeFile(t, dir, "pfx-password", []byte("pfx-pass\n"))

	for _, tc := range []struct {
		name                string
		cert, key, password string
		certPath, keyPath   string
		keySystemd          bool
		secrets             []string
	}{
		{"key as systemd credential", certPEM, "/etc/exo-sendmail/app.key", "", certPEM, credKey, true, []string{credKey}},
		{"key in the certificate file", both, "", "", both, both, false, []string{both}},
		{"PKCS#12 with password", pfxFile, "", pw, pfxFile, pfxFile, false, []string{pfxFile, pw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadCertificate(tc.cert, tc.key, tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Cert.Equal(pair.cert) || !c.Key.Equal(pair.key) {
				t.Error("another certificate or key than the one written")
			}
			if c.CertFile.Path != tc.certPath || c.KeyFile.Path != tc.keyPath || c.KeyFile.Systemd != tc.keySystemd {
				t.Errorf("certificate from %s, key from %s (systemd %v); want %s, %s (%v)",
					c.CertFile.Path, c.KeyFile.Path, c.KeyFile.Systemd, tc.certPath, tc.keyPath, tc.keySystemd)
			}
			if got := paths(c.Secrets); !slices.Equal(got, tc.secrets) {
				t.Errorf("secrets %q, want %q", got, tc.secrets)
			}
			if c.KeyFile.Info == nil || c.KeyFile.Info.Mode().Perm() != 0o600 {
				t.Errorf("key file info %v", c.KeyFile.Info)
			}
		})
	}
}

// Every error names the part of the credential at fault and its file, and
// lists the files holding a secret read before it.
func TestLoadCertificateErrors(t *testing.T) {
	p := testPairs(t)
	dir := t.TempDir()
	cert0 := writeFile(t, dir, "zero.crt", pemBlock("CERTIFICATE", p[0].cert.Raw))
	key1 := writeFile(t, dir, "one.key", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(p[1].key)))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := writeFile(t, dir, "ec.key", pemBlock("EC PRIVATE KEY", ecDER))
	fifo := filepath.Join(dir, "fifo.crt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent")

	for _, tc := range []struct {
		name, cert, key, password string
		part, file                string // CredentialError.Part and .File.Path
		notExist                  bool
		secrets                   []string
		says                      string
	}{
		{"certificate missing", absent, "", "", "certificate", absent, true, nil, "cannot read the certificate file"},
		{"certificate a FIFO", fifo, "", "", "certificate", fifo, false, nil, "not a regular file"},
		{"key missing", cert0, absent, "", "key", absent, true, nil, "cannot read the private key file"},
		{"key of another certificate", cert0, key1, "", "key", key1, false, []string{key1}, "does not belong to the certificate in " + cert0},
		{"ECDSA key", cert0, ecKey, "", "key", ecKey, false, []string{ecKey}, "is an ECDSA key, not RSA"},
		{"no key in the key file", cert0, cert0, "", "key", cert0, false, []string{cert0}, "no private key in the private key file"},
		{"no key at all", cert0, "", "", "key", cert0, false, nil, "private_key_file"},
		{"password missing", writeFile(t, dir, "s.pfx", []byte{0x30, 0x03, 0x02, 0x01, 0x03}), "", absent, "password", absent, true,
			[]string{filepath.Join(dir, "s.pfx")}, "certificate password file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadCertificate(tc.cert, tc.key, tc.password)
			if failure.ClassOf(err) != failure.Config || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v, want a configuration error saying %q", err, tc.says)
			}
			var ce *CredentialError
			if !errors.As(err, &ce) || ce.Part != tc.part || ce.File.Path != tc.file {
				t.Fatalf("cause %#v, want part %s of %s", ce, tc.part, tc.file)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist || tc.notExist && ce.File.Info != nil {
				t.Errorf("not-exist %v, info %v", errors.Is(err, fs.ErrNotExist), ce.File.Info)
			}
			if c.Cert != nil || c.Key != nil {
				t.Error("a certificate or key after an error")
			}
			if got := paths(c.Secrets); !slices.Equal(got, tc.secrets) {
				t.Errorf("secrets %q, want %q", got, tc.secrets)
			}
		})
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	secret, f, err := ReadSecret(writeFile(t, dir, "secret", []byte(testSecret+"\r\n")))
	if err != nil || secret != testSecret || f.What != "client secret file" || f.Info == nil || f.Systemd {
		t.Errorf("ReadSecret = %q, %+v, %v", secret, f, err)
	}
	empty := writeFile(t, dir, "empty", []byte("\n"))
	_, f, err = ReadSecret(empty)
	var ce *CredentialError
	if !errors.As(err, &ce) || ce.Part != "secret" || f == nil || f.Path != empty || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty secret file: %v", err)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Error("the error holds the secret")
	}
}
