package token

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The secret has characters that must be form-encoded, as Entra's do (~ . _).
const (
	testSecret   = "Zq48Q~k2.Ab_c+d/e=f%g&h~SECRETVALUE"
	testTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "0d5b6a2e-3a1c-4d63-9f0e-5d3c1b2a7e91"
	testSPObject = "4c1a9d7e-2b3f-4e5a-8c6d-7e8f9a0b1c2d"
	smtpScope    = "https://outlook.office365.com/.default"
)

// entra is a token endpoint that checks each request as Entra does and
// answers with Entra's JSON: tokens, or AADSTS errors.
type entra struct {
	srv    *httptest.Server
	tenant string

	mu       sync.Mutex
	clientID string
	scope    string
	secret   string            // the registered secret value ("" = none)
	cert     *x509.Certificate // the registered certificate (nil = none)
	lifetime int               // expires_in, seconds
	// fault, when set, may answer a well-formed request itself.
	fault    func(w http.ResponseWriter, form url.Values) bool
	requests int
	jtis     map[string]bool
	seen     []string // credentials sent and tokens issued: must never appear in an error
}

func newEntra(t *testing.T) *entra {
	t.Helper()
	e := &entra{
		tenant:   "contoso.onmicrosoft.com",
		clientID: testClientID,
		scope:    smtpScope,
		secret:   testSecret,
		lifetime: 3599,
		jtis:     map[string]bool{},
		seen:     []string{testSecret},
	}
	e.srv = httptest.NewUnstartedServer(e)
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-certificate test makes handshakes fail
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *entra) url() string { return e.srv.URL + "/" + e.tenant + "/oauth2/v2.0/token" }

// config is an account configuration for this endpoint, with no credential.
func (e *entra) config(cacheDir string) Config {
	return Config{TokenURL: e.url(), ClientID: testClientID, Scope: smtpScope, CacheDir: cacheDir, HTTPClient: e.srv.Client()}
}

func (e *entra) set(f func(e *entra)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

func (e *entra) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

// noLeak fails when the text of err holds a secret, an assertion or a token.
func (e *entra) noLeak(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	e.mu.Lock()
	seen := slices.Clone(e.seen)
	e.mu.Unlock()
	// Any 12 characters in a row count: a cut message could keep part of one.
	const window = 12
	for x := err; x != nil; x = errors.Unwrap(x) {
		for _, s := range seen {
			for i := 0; i+window <= len(s); i++ {
				if strings.Contains(x.Error(), s[i:i+window]) {
					t.Fatalf("error text leaks part of a credential or token (%q): %q", s[i:i+window], x.Error())
				}
			}
		}
	}
}

var allowedKeys = map[string]bool{"grant_type": true, "client_id": true, "scope": true,
	"client_secret": true, "client_assertion_type": true, "client_assertion": true}

func (e *entra) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.requests++
	fault, clientID, scope, secret, cert, lifetime := e.fault, e.clientID, e.scope, e.secret, e.cert, e.lifetime
	e.mu.Unlock()

	if r.Method != http.MethodPost {
		aadError(w, 405, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if r.URL.Path != "/"+e.tenant+"/oauth2/v2.0/token" {
		aadError(w, 400, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found.", strings.Split(r.URL.Path, "/")[1]))
		return
	}
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.Header.Get("Authorization") != "" {
		aadError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		aadError(w, 400, "invalid_request", 900144, "malformed form")
		return
	}
	e.mu.Lock()
	e.seen = append(e.seen, form.Get("client_secret"), form.Get("client_assertion"))
	e.mu.Unlock()
	if fault != nil && fault(w, form) {
		return
	}
	for k, v := range form {
		if !allowedKeys[k] || len(v) != 1 {
			aadError(w, 400, "invalid_request", 900144, fmt.Sprintf("unexpected or repeated parameter %q", k))
			return
		}
	}
	switch {
	case form.Get("grant_type") != "client_credentials":
		aadError(w, 400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
		return
	case form.Get("client_id") != clientID:
		aadError(w, 400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory 'Contoso'.", form.Get("client_id")))
		return
	case !strings.HasSuffix(form.Get("scope"), "/.default"):
		aadError(w, 400, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", form.Get("scope")))
		return
	case form.Get("scope") != scope:
		aadError(w, 400, "invalid_resource", 500011, fmt.Sprintf("The resource principal named %s was not found in the tenant named Contoso.", strings.TrimSuffix(form.Get("scope"), "/.default")))
		return
	}
	_, hasSecret := form["client_secret"]
	_, hasAssertion := form["client_assertion"]
	switch {
	case hasSecret && !hasAssertion && form.Get("client_assertion_type") == "":
		if secret == "" || form.Get("client_secret") != secret {
			aadError(w, 401, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID))
			return
		}
	case hasAssertion && !hasSecret:
		if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			aadError(w, 400, "invalid_request", 700026, "Client assertion type is invalid.")
			return
		}
		if err := e.checkAssertion(form.Get("client_assertion"), cert, clientID); err != nil {
			aadError(w, 401, "invalid_client", 700027, "Client assertion failed signature validation. "+err.Error())
			return
		}
	case !hasSecret && !hasAssertion:
		aadError(w, 401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	default:
		aadError(w, 400, "invalid_request", 900144, "both client_secret and client_assertion")
		return
	}
	e.issue(w, clientID, lifetime)
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// checkAssertion verifies a client assertion as Entra documents it.
func (e *entra) checkAssertion(assertion string, cert *x509.Certificate, clientID string) error {
	if cert == nil {
		return errors.New("no certificate registered")
	}
	thumb := sha256.Sum256(cert.Raw)
	tok, err := jwt.Parse(assertion, func(t *jwt.Token) (any, error) {
		if t.Header["typ"] != "JWT" {
			return nil, fmt.Errorf("typ %v", t.Header["typ"])
		}
		if t.Header["x5t#S256"] != base64.RawURLEncoding.EncodeToString(thumb[:]) {
			return nil, errors.New("[Reason - The key was not found.]")
		}
		return cert.PublicKey, nil
	}, jwt.WithValidMethods([]string{"PS256"}), jwt.WithAudience(e.url()), jwt.WithIssuer(clientID),
		jwt.WithSubject(clientID), jwt.WithExpirationRequired(), jwt.WithNotBeforeRequired(), jwt.WithIssuedAt())
	if err != nil {
		return err
	}
	c := tok.Claims.(jwt.MapClaims)
	if _, ok := c["aud"].(string); !ok {
		return errors.New("aud is not a string")
	}
	jti, _ := c["jti"].(string)
	if !uuidPattern.MatchString(jti) {
		return fmt.Errorf("jti %q is not a GUID", jti)
	}
	nbf, _ := c.GetNotBefore()
	exp, _ := c.GetExpirationTime()
	if exp.Sub(nbf.Time) > 10*time.Minute {
		return errors.New("assertion valid for more than 10 minutes")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.jtis[jti] {
		return errors.New("jti replayed")
	}
	e.jtis[jti] = true
	return nil
}

// issue answers with an app-only access token shaped like Entra's (v1).
func (e *entra) issue(w http.ResponseWriter, clientID string, lifetime int) {
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"aud": "https://outlook.office365.com", "iss": "https://sts.windows.net/" + testTenantID + "/",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Unix() + int64(lifetime),
		"appid": clientID, "oid": testSPObject, "roles": []string{"SMTP.SendAsApp"},
		"tid": testTenantID, "ver": "1.0", "uti": rand.Text(),
	})
	sig := make([]byte, 256)
	rand.Read(sig)
	b64 := base64.RawURLEncoding.EncodeToString
	access := b64([]byte(`{"typ":"JWT","alg":"RS256","x5t":"test"}`)) + "." + b64(claims) + "." + b64(sig)
	e.mu.Lock()
	e.seen = append(e.seen, access)
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	json.NewEncoder(w).Encode(map[string]any{
		"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access,
	})
}

// aadError writes an error the way Entra does.
func aadError(w http.ResponseWriter, status int, code string, aadsts int, message string) {
	trace, corr := "0a9c1f4e-6d2b-4c8a-9e3f-1b2c3d4e5f60", "7d6c5b4a-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", aadsts, message, trace, corr, ts),
		"error_codes":       []int{aadsts},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}

// keyPair is a test certificate credential.
type keyPair struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var (
	pairsOnce sync.Once
	pairs     [2]keyPair
)

// testPairs returns two distinct self-signed RSA certificates with keys.
func testPairs(t *testing.T) [2]keyPair {
	t.Helper()
	pairsOnce.Do(func() {
		for i := range pairs {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(int64(i + 1)),
				Subject:      pkix.Name{CommonName: fmt.Sprintf("exo-sendmail test %d", i)},
				NotBefore:    time.Now().Add(-time.Hour),
				NotAfter:     time.Now().Add(365 * 24 * time.Hour),
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
			if err != nil {
				panic(err)
			}
			cert, _ := x509.ParseCertificate(der)
			pairs[i] = keyPair{key, cert}
		}
	})
	return pairs
}
