// Package token obtains OAuth 2.0 client-credentials access tokens from
// Microsoft Entra for one account, with a client secret or a certificate,
// and caches them in memory and in a file shared by every process of the
// service user, so that a token is fetched once per lifetime however many
// messages, connections or `sendmail -q` runs use it.
//
// Credentials are read when a token is fetched, never earlier and never kept:
// a replaced secret or certificate file is picked up without a restart.
//
// Systemd credentials: when $CREDENTIALS_DIRECTORY is set (LoadCredential= or
// LoadCredentialEncrypted= in the unit) and holds a file with the base name of
// a configured credential file (client secret, certificate, private key,
// certificate password), that file is read instead of the configured path.
// For example client_secret_file = "/etc/exo-sendmail/secret" and
// LoadCredentialEncrypted=secret:/etc/credstore.encrypted/exo-secret.
//
// The cache file holds the access token, its type, its expiry and when it was
// obtained; never the secret, the key or the client assertion. Nothing here
// logs: errors carry their failure class and the administrator's remedy.
package token

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// MinMargin is the default and smallest refresh margin: a token is replaced
// this long before it expires (HVE warns at 10 minutes; connections outlive
// the moment a token was checked).
const MinMargin = 10 * time.Minute

// fetchTimeout bounds one token request when the HTTP client has no timeout.
const fetchTimeout = 30 * time.Second

// unknownLifetime is assumed for a token whose response gave no expires_in
// and whose claims carry no exp: short, so that a guess is not kept long.
const unknownLifetime = 10 * time.Minute

// Config describes one account's credentials. Paths should be absolute.
type Config struct {
	TokenURL                string        // full token endpoint, e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
	ClientID                string        // the application (client) ID
	Scope                   string        // exactly one "<resource>/.default"
	SecretFile              string        // client secret VALUE in a file (trailing newline trimmed)
	CertificateFile         string        // PEM certificate, or a PKCS#12 .pfx/.p12 holding cert + key
	PrivateKeyFile          string        // PEM key (PKCS#1 or PKCS#8, RSA) when CertificateFile is PEM without a key
	CertificatePasswordFile string        // password of a .pfx, optional
	CacheDir                string        // token cache directory (created 0700); "" = memory only
	HTTPClient              *http.Client  // with timeouts and the CA pool; nil = a default with 30 s timeout
	Margin                  time.Duration // refresh this long before expiry; default and minimum MinMargin
}

// Source hands out access tokens for one (TokenURL, ClientID, Scope). It is
// safe for concurrent use; several Sources (in one process or many) sharing a
// CacheDir fetch one token between them.
type Source struct {
	cfg    Config
	key    string // hex SHA-256 of TokenURL, ClientID, Scope
	client *http.Client
	now    func() time.Time // the clock for freshness; tests move it

	turn    chan struct{} // held by the one caller refreshing for this Source
	fetches atomic.Int64

	mu       sync.Mutex
	mem      entry
	cacheErr error
}

// New validates cfg and returns a Source. It reads no file: credentials are
// read at the first fetch.
func New(cfg Config) (*Source, error) {
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: fetchTimeout}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		client = &c
	}
	// Never carry the credentials to another URL: Entra does not redirect
	// its token endpoint, so a redirect is answered as an error.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	sum := sha256.Sum256([]byte(cfg.TokenURL + "\x00" + cfg.ClientID + "\x00" + cfg.Scope))
	return &Source{
		cfg:    cfg,
		key:    hex.EncodeToString(sum[:]),
		client: client,
		now:    time.Now,
		turn:   make(chan struct{}, 1),
	}, nil
}

func validate(cfg *Config) error {
	u, err := url.Parse(cfg.TokenURL)
	switch {
	case cfg.TokenURL == "":
		return misconfigured("set tenant (and cloud) or token_url", "no token endpoint URL")
	case err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil:
		return misconfigured("the token endpoint must be an https:// URL such as https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
			"token endpoint %q is not an https URL", cfg.TokenURL)
	}
	if cfg.ClientID == "" || strings.ContainsFunc(cfg.ClientID, notVisible) {
		return misconfigured("set client_id to the Application (client) ID from Entra > App registrations > Overview",
			"client ID %q is empty or contains spaces", cfg.ClientID)
	}
	if err := checkScope(cfg.Scope); err != nil {
		return err
	}
	switch {
	case cfg.SecretFile != "" && cfg.CertificateFile != "":
		return misconfigured("keep one of them", "both a client secret file and a certificate file are set")
	case cfg.SecretFile == "" && cfg.CertificateFile == "":
		return misconfigured("set client_secret_file, or certificate_file (+ private_key_file unless it is a .pfx)", "no credential configured")
	case cfg.SecretFile != "" && (cfg.PrivateKeyFile != "" || cfg.CertificatePasswordFile != ""):
		return misconfigured("private_key_file and certificate_password_file go with certificate_file",
			"a private key or certificate password file is set together with a client secret")
	}
	if cfg.Margin < MinMargin {
		cfg.Margin = MinMargin
	}
	return nil
}

// checkScope insists on one "<resource>/.default": Entra refuses anything
// else for client credentials (AADSTS1002012, 70011, 700022).
func checkScope(scope string) error {
	const remedy = `use exactly one "<resource>/.default": "https://outlook.office365.com/.default" for SMTP, "https://graph.microsoft.com/.default" for Graph`
	switch {
	case scope == "":
		return misconfigured(remedy, "no scope")
	case strings.ContainsFunc(scope, notVisible):
		return misconfigured(remedy, "scope %q names more than one value", scope)
	case !strings.HasSuffix(scope, "/.default") || len(scope) == len("/.default"):
		return misconfigured(remedy+" (permissions such as SMTP.SendAsApp are granted in Entra, not requested)",
			"scope %q does not end in /.default", scope)
	}
	return nil
}

func notVisible(r rune) bool { return r <= ' ' || r == 0x7f }

func misconfigured(remedy, format string, a ...any) *failure.Error {
	return &failure.Error{Class: failure.Config, Reply: fmt.Sprintf(format, a...), Remedy: remedy}
}

// Token returns a valid access token: from memory, else from the cache file,
// else fetched from the token endpoint.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	e := s.mem
	s.mu.Unlock()
	if e.fresh(s.now(), s.cfg.Margin) {
		return e.AccessToken, nil
	}
	return s.refresh(ctx, "")
}

// Renew is called after the server rejected stale. It returns a different
// valid token that the memory or the cache file already holds (another
// connection or process renewed it), else it fetches a new one.
func (s *Source) Renew(ctx context.Context, stale string) (string, error) {
	return s.refresh(ctx, stale)
}

// Fetches reports how many requests this Source sent to the token endpoint.
func (s *Source) Fetches() int { return int(s.fetches.Load()) }

// CacheError returns the last problem with the cache directory (it cannot be
// created, locked or written), or nil. Tokens keep flowing without the file
// cache, but every process then fetches its own: the caller should log it.
func (s *Source) CacheError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cacheErr
}

// refresh finds or fetches a fresh token other than stale ("" for none),
// one caller per Source at a time and, through the lock file, one process
// per cache directory at a time.
func (s *Source) refresh(ctx context.Context, stale string) (string, error) {
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return "", &failure.Error{Class: failure.Temporary, Reply: "waiting for a token: " + ctx.Err().Error(), Err: ctx.Err()}
	}
	defer func() { <-s.turn }()

	usable := func(e entry) bool { return e.AccessToken != stale && e.fresh(s.now(), s.cfg.Margin) }
	s.mu.Lock()
	e := s.mem
	s.mu.Unlock()
	if usable(e) {
		return e.AccessToken, nil
	}
	var lockErr error
	if s.cfg.CacheDir != "" {
		if e, ok := s.readCache(); ok && usable(e) {
			s.keep(e, nil)
			return e.AccessToken, nil
		}
		unlock, err := s.lock(ctx)
		if err != nil && ctx.Err() != nil {
			return "", &failure.Error{Class: failure.Temporary, Reply: "waiting for the token cache lock: " + ctx.Err().Error(), Err: ctx.Err()}
		}
		lockErr = err // without the lock we still fetch: one extra request is harmless
		defer unlock()
		// Another process may have fetched while we waited for the lock.
		if e, ok := s.readCache(); ok && usable(e) {
			s.keep(e, lockErr)
			return e.AccessToken, nil
		}
	}
	e, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	cacheErr := lockErr
	if s.cfg.CacheDir != "" {
		cacheErr = errors.Join(lockErr, s.writeCache(e))
	}
	s.keep(e, cacheErr)
	return e.AccessToken, nil
}

func (s *Source) keep(e entry, cacheErr error) {
	s.mu.Lock()
	s.mem = e
	s.cacheErr = cacheErr
	s.mu.Unlock()
}

// fetch sends one token request with freshly read credentials.
func (s *Source) fetch(ctx context.Context) (entry, error) {
	cc := clientcredentials.Config{
		ClientID:  s.cfg.ClientID,
		TokenURL:  s.cfg.TokenURL,
		Scopes:    []string{s.cfg.Scope},
		AuthStyle: oauth2.AuthStyleInParams,
	}
	var hidden string // the credential sent, kept out of every error text
	if s.cfg.SecretFile != "" {
		secret, _, err := ReadSecret(s.cfg.SecretFile)
		if err != nil {
			return entry{}, err
		}
		cc.ClientSecret, hidden = secret, secret
	} else {
		cert, err := LoadCertificate(s.cfg.CertificateFile, s.cfg.PrivateKeyFile, s.cfg.CertificatePasswordFile)
		if err != nil {
			return entry{}, err
		}
		assertion, err := cert.assertion(s.cfg.TokenURL, s.cfg.ClientID, time.Now())
		if err != nil {
			return entry{}, err
		}
		cc.EndpointParams = url.Values{
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {assertion},
		}
		hidden = assertion
	}

	if s.client.Timeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fetchTimeout)
		defer cancel()
	}
	s.fetches.Add(1)
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, s.client))
	if err != nil {
		return entry{}, s.classify(err, hidden)
	}
	if strings.ContainsFunc(tok.AccessToken, notVisible) || strings.ContainsFunc(tok.AccessToken, func(r rune) bool { return r > 0x7e }) {
		return entry{}, &failure.Error{Class: failure.Temporary,
			Reply: fmt.Sprintf("token endpoint %s returned a malformed access token (not printable ASCII)", s.cfg.TokenURL)}
	}
	lifetime := time.Until(tok.Expiry)
	if tok.Expiry.IsZero() {
		lifetime = unknownLifetime
		if c, err := DecodeClaims(tok.AccessToken); err == nil && !c.Expiry.IsZero() {
			lifetime = time.Until(c.Expiry)
		}
	}
	now := s.now()
	return entry{AccessToken: tok.AccessToken, TokenType: tok.Type(), Expiry: now.Add(lifetime), Obtained: now}, nil
}

// entry is one token as kept in memory and in the cache file.
type entry struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	Expiry      time.Time `json:"expiry"`
	Obtained    time.Time `json:"obtained"`
}

// fresh reports whether e may still be handed out at now: until margin
// before expiry, or half-way through its life if that is shorter (a token
// that lives less than twice the margin would otherwise be fetched anew on
// every call, and Entra answers such loops with AADSTS50196).
func (e entry) fresh(now time.Time, margin time.Duration) bool {
	if e.AccessToken == "" || e.Expiry.IsZero() {
		return false
	}
	if life := e.Expiry.Sub(e.Obtained); !e.Obtained.IsZero() && life > 0 && life/2 < margin {
		margin = life / 2
	}
	return now.Before(e.Expiry.Add(-margin))
}
