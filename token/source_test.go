package token

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"software.sslmate.com/src/go-pkcs12"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// secretSource returns a Source using the client secret, stored with a
// trailing newline as `echo secret > file` leaves it.
func secretSource(t *testing.T, e *entra, cacheDir string) *Source {
	t.Helper()
	cfg := e.config(cacheDir)
	cfg.SecretFile = writeFile(t, t.TempDir(), "client-secret", []byte(testSecret+"\n"))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustToken(t *testing.T, e *entra, s *Source) string {
	t.Helper()
	tok, err := s.Token(context.Background())
	if err != nil {
		e.noLeak(t, err)
		t.Fatalf("Token: %v", err)
	}
	return tok
}

// wantConfig checks that err is a configuration error whose text holds every
// one of parts and no credential.
func wantConfig(t *testing.T, e *entra, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	e.noLeak(t, err)
	if c := failure.ClassOf(err); c != failure.Config {
		t.Fatalf("class %v, want configuration: %v", c, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestSecret(t *testing.T) {
	e := newEntra(t)
	s := secretSource(t, e, "")
	tok := mustToken(t, e, s)
	if again := mustToken(t, e, s); again != tok {
		t.Error("second Token fetched a different token")
	}
	if s.Fetches() != 1 || e.count() != 1 {
		t.Errorf("Fetches %d, endpoint saw %d requests; want 1, 1", s.Fetches(), e.count())
	}
	c, err := DecodeClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.AppID != testClientID || c.Audience != "https://outlook.office365.com" || !slices.Equal(c.Roles, []string{"SMTP.SendAsApp"}) {
		t.Errorf("claims %+v", c)
	}
}

// A replaced secret file is read at the next fetch, without a new Source.
func TestSecretReadAtFetch(t *testing.T) {
	e := newEntra(t)
	e.set(func(e *entra) { e.secret = "Rotated~secret.value" })
	s := secretSource(t, e, "")
	_, err := s.Token(context.Background())
	wantConfig(t, e, err, "AADSTS7000215", "not its Secret ID")
	if err := os.WriteFile(s.cfg.SecretFile, []byte("Rotated~secret.value\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustToken(t, e, s)
	if s.Fetches() != 2 {
		t.Errorf("Fetches %d, want 2", s.Fetches())
	}
}

func TestSecretFileProblems(t *testing.T) {
	e := newEntra(t)
	dir := t.TempDir()
	for name, path := range map[string]string{
		"missing":   filepath.Join(dir, "no-such-secret"),
		"directory": dir, // unreadable as a file, even for root
		"empty":     writeFile(t, dir, "empty", []byte("\n")),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := e.config("")
			cfg.SecretFile = path
			s, err := New(cfg) // reads nothing yet
			if err != nil {
				t.Fatalf("New read the secret file: %v", err)
			}
			_, err = s.Token(context.Background())
			want := []string{path}
			if name != "empty" {
				want = append(want, "readable only by the service user")
			}
			wantConfig(t, e, err, want...)
			if s.Fetches() != 0 {
				t.Errorf("a request was sent without a secret")
			}
		})
	}
}

func TestCredentialsDirectory(t *testing.T) {
	e := newEntra(t)
	creds := t.TempDir()
	writeFile(t, creds, "client-secret", []byte(testSecret))
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := e.config("")
	cfg.SecretFile = "/etc/exo-sendmail/nonexistent/client-secret"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustToken(t, e, s)

	// The private key of a certificate credential, likewise.
	pair := testPairs(t)[0]
	e.set(func(e *entra) { e.cert = pair.cert })
	writeFile(t, creds, "sender.key", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(pair.key)))
	cfg = e.config("")
	cfg.CertificateFile = writeFile(t, t.TempDir(), "sender.crt", pemBlock("CERTIFICATE", pair.cert.Raw))
	cfg.PrivateKeyFile = "/etc/exo-sendmail/nonexistent/sender.key"
	s, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustToken(t, e, s)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestCertificate(t *testing.T) {
	pair := testPairs(t)[0]
	pkcs8, err := x509.MarshalPKCS8PrivateKey(pair.key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pemBlock("CERTIFICATE", pair.cert.Raw)
	pfx, err := pkcs12.Modern.Encode(pair.key, pair.cert, nil, "pfx-pass")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name              string
		cert, key, passwd []byte
		certName, keyName string
	}{
		{name: "PEM and PKCS#1 key", cert: certPEM, key: pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(pair.key))},
		{name: "PEM and PKCS#8 key", cert: certPEM, key: pemBlock("PRIVATE KEY", pkcs8)},
		{name: "PEM with key in one file", cert: append(slices.Clone(certPEM), pemBlock("PRIVATE KEY", pkcs8)...)},
		{name: "PKCS#12 with password", cert: pfx, passwd: []byte("pfx-pass\n"), certName: "sender.pfx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEntra(t)
			e.set(func(e *entra) { e.cert = pair.cert; e.secret = "" })
			dir := t.TempDir()
			cfg := e.config("")
			cfg.CertificateFile = writeFile(t, dir, "sender.crt", c.cert)
			if c.key != nil {
				cfg.PrivateKeyFile = writeFile(t, dir, "sender.key", c.key)
			}
			if c.passwd != nil {
				cfg.CertificatePasswordFile = writeFile(t, dir, "pfx-password", c.passwd)
			}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			first := mustToken(t, e, s)
			// A fresh assertion (new jti) for every fetch: the endpoint refuses replays.
			second, err := s.Renew(context.Background(), first)
			if err != nil {
				e.noLeak(t, err)
				t.Fatal(err)
			}
			if second == first || s.Fetches() != 2 {
				t.Errorf("Renew: same token %v, Fetches %d", second == first, s.Fetches())
			}
		})
	}
}

func TestCertificateProblems(t *testing.T) {
	p := testPairs(t)
	pfx, err := pkcs12.Modern.Encode(p[0].key, p[0].cert, nil, "right")
	if err != nil {
		t.Fatal(err)
	}
	e := newEntra(t)
	e.set(func(e *entra) { e.cert = p[0].cert })
	dir := t.TempDir()
	cert0 := writeFile(t, dir, "zero.crt", pemBlock("CERTIFICATE", p[0].cert.Raw))
	cert1 := writeFile(t, dir, "one.crt", pemBlock("CERTIFICATE", p[1].cert.Raw))
	key1 := writeFile(t, dir, "one.key", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(p[1].key)))
	cases := []struct {
		name      string
		cert, key string
		passwd    string
		requests  int
		mentions  []string
	}{
		{"key of another certificate", cert0, key1, "", 0, []string{cert0, key1, "does not belong"}},
		{"PEM without key", cert0, "", "", 0, []string{cert0, "private_key_file"}},
		{"missing key file", cert0, filepath.Join(dir, "absent.key"), "", 0, []string{"absent.key", "readable only by the service user"}},
		{"encrypted key", cert0, writeFile(t, dir, "enc.key", pemBlock("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3})), "", 0, []string{"enc.key", "encrypted"}},
		{"PKCS#12 wrong password", writeFile(t, dir, "s.pfx", pfx), "", writeFile(t, dir, "pw", []byte("wrong")), 0, []string{"s.pfx", "certificate_password_file"}},
		{"certificate not registered", cert1, key1, "", 1, []string{"AADSTS700027", "Certificates & secrets"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := e.config("")
			cfg.CertificateFile, cfg.PrivateKeyFile, cfg.CertificatePasswordFile = c.cert, c.key, c.passwd
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Token(context.Background())
			wantConfig(t, e, err, c.mentions...)
			if s.Fetches() != c.requests {
				t.Errorf("Fetches %d, want %d", s.Fetches(), c.requests)
			}
		})
	}
}

func TestCacheFile(t *testing.T) {
	e := newEntra(t)
	dir := filepath.Join(t.TempDir(), "state", "token-cache")
	a := secretSource(t, e, dir)
	tok := mustToken(t, e, a)

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v %v, want mode 0700", fi.Mode(), err)
	}
	file := filepath.Join(dir, a.key+".json")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v, want mode 0600", fi.Mode(), err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), testSecret) || strings.Contains(string(data), "Zq48Q") {
		t.Fatal("cache file holds the secret")
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range fields {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, []string{"access_token", "expiry", "obtained", "token_type"}) || fields["access_token"] != tok {
		t.Errorf("cache file fields %v", keys)
	}

	b := secretSource(t, e, dir)
	if got := mustToken(t, e, b); got != tok || b.Fetches() != 0 {
		t.Errorf("second Source: same token %v, Fetches %d; want the cached one, 0", got == tok, b.Fetches())
	}
	if a.CacheError() != nil || b.CacheError() != nil {
		t.Error(a.CacheError(), b.CacheError())
	}
}

// Bad cache files are ignored and replaced, never fatal.
func TestCacheFileIgnored(t *testing.T) {
	valid, _ := json.Marshal(entry{AccessToken: "planted.by.someone", TokenType: "Bearer",
		Expiry: time.Now().Add(time.Hour), Obtained: time.Now()})
	cases := map[string]func(path string){
		"corrupt":            func(p string) { os.WriteFile(p, []byte("{\"access_token\": tru"), 0o600) },
		"readable by others": func(p string) { os.WriteFile(p, valid, 0o644); os.Chmod(p, 0o644) },
		"symlink": func(p string) {
			target := p + ".elsewhere"
			os.WriteFile(target, valid, 0o600)
			os.Symlink(target, p)
		},
		"directory": func(p string) { os.Mkdir(p, 0o700) },
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEntra(t)
			dir := t.TempDir()
			s := secretSource(t, e, dir)
			path := filepath.Join(dir, s.key+".json")
			plant(path)
			tok := mustToken(t, e, s)
			if tok == "planted.by.someone" || s.Fetches() != 1 {
				t.Fatalf("bad cache file was used (Fetches %d)", s.Fetches())
			}
			if name == "directory" {
				if s.CacheError() == nil {
					t.Error("no CacheError for a cache file that cannot be replaced")
				}
				return
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("cache file not replaced: %v %v", fi, err)
			}
			if again := secretSource(t, e, dir); mustToken(t, e, again) != tok || again.Fetches() != 0 {
				t.Error("the replaced cache file is not used")
			}
		})
	}
}

// A cache directory that cannot be created costs the file cache, not the token.
func TestCacheDirUnusable(t *testing.T) {
	e := newEntra(t)
	notDir := writeFile(t, t.TempDir(), "file", nil)
	s := secretSource(t, e, filepath.Join(notDir, "cache"))
	mustToken(t, e, s)
	mustToken(t, e, s)
	if s.Fetches() != 1 {
		t.Errorf("Fetches %d, want 1 (memory cache)", s.Fetches())
	}
	if err := s.CacheError(); err == nil || !strings.Contains(err.Error(), notDir) {
		t.Errorf("CacheError %v, want it to name the directory", err)
	}
}

func TestConcurrentSourcesFetchOnce(t *testing.T) {
	e := newEntra(t)
	dir := t.TempDir()
	var sources []*Source
	for range 4 {
		sources = append(sources, secretSource(t, e, dir))
	}
	start := make(chan struct{})
	tokens := make(chan string, 20)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			<-start
			tok, err := sources[i%4].Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			tokens <- tok
		})
	}
	close(start)
	wg.Wait()
	close(tokens)
	first := <-tokens
	for tok := range tokens {
		if tok != first {
			t.Fatal("goroutines got different tokens")
		}
	}
	total := 0
	for _, s := range sources {
		total += s.Fetches()
	}
	if e.count() != 1 || total != 1 {
		t.Errorf("endpoint saw %d requests, Sources counted %d; want 1", e.count(), total)
	}
}

// clock is a test clock shared by Sources.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRefreshWithinMargin(t *testing.T) {
	e := newEntra(t) // tokens live 3599 s; the default margin is 10 minutes
	dir := t.TempDir()
	c := &clock{t: time.Now()}
	a, b := secretSource(t, e, dir), secretSource(t, e, dir)
	a.now, b.now = c.now, c.now

	tok := mustToken(t, e, a)
	c.add(49 * time.Minute)
	if mustToken(t, e, a) != tok || mustToken(t, e, b) != tok {
		t.Fatal("token replaced before the margin")
	}
	c.add(2 * time.Minute) // 51 minutes: within 10 minutes of expiry
	renewed := mustToken(t, e, a)
	if renewed == tok || a.Fetches() != 2 {
		t.Fatalf("token not refreshed within the margin (Fetches %d)", a.Fetches())
	}
	if mustToken(t, e, b) != renewed || b.Fetches() != 0 {
		t.Error("the other Source did not take the refreshed token from the cache file")
	}
}

// A token living less than twice the margin is kept for half its life, so
// that short lifetimes do not turn into a fetch per call.
func TestShortLivedToken(t *testing.T) {
	e := newEntra(t)
	e.set(func(e *entra) { e.lifetime = 600 })
	c := &clock{t: time.Now()}
	s := secretSource(t, e, "")
	s.now = c.now
	tok := mustToken(t, e, s)
	c.add(4 * time.Minute)
	if mustToken(t, e, s) != tok {
		t.Fatal("a 10-minute token was replaced after 4 minutes")
	}
	c.add(2 * time.Minute)
	if mustToken(t, e, s) == tok {
		t.Fatal("a 10-minute token was kept past half its life")
	}
}

func TestRenew(t *testing.T) {
	e := newEntra(t)
	dir := t.TempDir()
	a, b := secretSource(t, e, dir), secretSource(t, e, dir)
	ctx := context.Background()

	t1 := mustToken(t, e, a)
	if mustToken(t, e, b) != t1 || b.Fetches() != 0 {
		t.Fatal("b did not read the cache")
	}
	t2, err := a.Renew(ctx, t1)
	if err != nil {
		t.Fatal(err)
	}
	if t2 == t1 || a.Fetches() != 2 {
		t.Fatalf("Renew of the stale token: new %v, Fetches %d; want a new token, 2", t2 != t1, a.Fetches())
	}
	if mustToken(t, e, a) != t2 {
		t.Error("Token after Renew is not the renewed token")
	}
	// b still holds t1 in memory; the server rejects it; a already renewed.
	got, err := b.Renew(ctx, t1)
	if err != nil {
		t.Fatal(err)
	}
	if got != t2 || b.Fetches() != 0 {
		t.Errorf("Renew after another Source renewed: got the renewed token %v, Fetches %d; want true, 0", got == t2, b.Fetches())
	}
	// A stale token other than the one held: the held one is still good.
	if got, _ := a.Renew(ctx, "an.older.token"); got != t2 || a.Fetches() != 2 {
		t.Errorf("Renew of an unrelated token fetched (Fetches %d)", a.Fetches())
	}
	if e.count() != 2 {
		t.Errorf("endpoint saw %d requests, want 2", e.count())
	}
}

func TestContextCancelled(t *testing.T) {
	e := newEntra(t)
	s := secretSource(t, e, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Token(ctx)
	if err == nil || failure.ClassOf(err) != failure.Temporary || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Token: %v (class %v)", err, failure.ClassOf(err))
	}
	e.noLeak(t, err)
}
