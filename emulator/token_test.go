package emulator

import (
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenWithSecret(t *testing.T) {
	e := start(t, testConfig(t))
	r := postToken(t, e, e.TokenURL, secretForm(clientID, goodSecret, smtpScope))
	if r.status != 200 || r.TokenType != "Bearer" || r.ExpiresIn != 3599 || r.ExtExpiresIn != 3599 {
		t.Fatalf("got %d %+v", r.status, r)
	}
	if n := len(r.AccessToken); n < 1500 || n > 2600 {
		t.Errorf("access token is %d bytes; real Entra tokens are 1.5-2.5 KB", n)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(r.AccessToken, claims); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"aud": "https://outlook.office365.com", "appid": clientID, "tid": e.TenantID,
		"iss": "https://sts.windows.net/" + e.TenantID + "/", "appidacr": "1",
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if fmt.Sprint(claims["roles"]) != "[SMTP.SendAsApp]" {
		t.Errorf("roles = %v, want [SMTP.SendAsApp]", claims["roles"])
	}
	for _, k := range []string{"exp", "iat", "nbf", "oid"} {
		if claims[k] == nil {
			t.Errorf("claim %s missing", k)
		}
	}

	// The tenant id works in the URL as well as the domain; Graph tokens
	// carry Mail.Send; an app without permissions gets a token without roles.
	byID := strings.Replace(e.TokenURL, tenant, e.TenantID, 1)
	g := postToken(t, e, byID, secretForm(clientID, goodSecret, graphScope))
	gc := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(g.AccessToken, gc)
	if gc["aud"] != "https://graph.microsoft.com" || fmt.Sprint(gc["roles"]) != "[Mail.Send]" {
		t.Errorf("graph token: aud %v roles %v", gc["aud"], gc["roles"])
	}
	nr := postToken(t, e, e.TokenURL, secretForm(noRoleID, goodSecret, smtpScope))
	nc := jwt.MapClaims{}
	jwt.NewParser().ParseUnverified(nr.AccessToken, nc)
	if _, ok := nc["roles"]; ok || nr.status != 200 {
		t.Errorf("app without permissions: %d, roles %v; want a token without roles", nr.status, nc["roles"])
	}

	// client_secret_basic works as well as client_secret_post.
	form := secretForm("", "", smtpScope)
	form.Del("client_id")
	form.Del("client_secret")
	req, _ := http.NewRequest("POST", e.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(goodSecret))
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("client_secret_basic: %s", resp.Status)
	}

	if s := e.Stats(); s.TokenRequests != 4 || s.TokensIssued != 4 {
		t.Errorf("stats %+v, want 4 requests and 4 tokens", s)
	}
}

func TestTokenErrors(t *testing.T) {
	e := start(t, testConfig(t))
	base := strings.TrimSuffix(e.TokenURL, "/"+tenant+"/oauth2/v2.0/token")
	form := func(edit func(url.Values)) url.Values {
		f := secretForm(clientID, goodSecret, smtpScope)
		edit(f)
		return f
	}
	tests := []struct {
		name   string
		url    string
		form   url.Values
		status int
		error  string
		code   int
	}{
		{"unknown tenant", base + "/fabrikam.onmicrosoft.com/oauth2/v2.0/token", form(func(url.Values) {}), 400, "invalid_request", 90002},
		{"common", base + "/common/oauth2/v2.0/token", form(func(url.Values) {}), 400, "invalid_request", 9001023},
		{"unknown client", e.TokenURL, form(func(f url.Values) { f.Set("client_id", "99999999-0000-4000-8000-000000000000") }), 400, "unauthorized_client", 700016},
		{"wrong secret", e.TokenURL, form(func(f url.Values) { f.Set("client_secret", "secret-id-not-value") }), 401, "invalid_client", 7000215},
		{"expired secret", e.TokenURL, form(func(f url.Values) { f.Set("client_secret", oldSecret) }), 401, "invalid_client", 7000222},
		{"no credential", e.TokenURL, form(func(f url.Values) { f.Del("client_secret") }), 401, "invalid_client", 7000218},
		{"scope without /.default", e.TokenURL, form(func(f url.Values) { f.Set("scope", "https://outlook.office.com/SMTP.SendAsApp") }), 400, "invalid_scope", 1002012},
		{"two resources", e.TokenURL, form(func(f url.Values) { f.Set("scope", smtpScope+" "+graphScope) }), 400, "invalid_scope", 700022},
		{"unknown resource", e.TokenURL, form(func(f url.Values) { f.Set("scope", "https://example.com/.default") }), 400, "invalid_resource", 500011},
		{"no grant type", e.TokenURL, form(func(f url.Values) { f.Del("grant_type") }), 400, "invalid_request", 900144},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := postToken(t, e, tc.url, tc.form)
			if r.status != tc.status || r.Error != tc.error || len(r.ErrorCodes) != 1 || r.ErrorCodes[0] != tc.code {
				t.Fatalf("got %d %s %v (%s), want %d %s [%d]", r.status, r.Error, r.ErrorCodes, r.ErrorDescription, tc.status, tc.error, tc.code)
			}
			hasPrefix(t, "error_description", r.ErrorDescription, fmt.Sprintf("AADSTS%d: ", tc.code))
			if !strings.Contains(r.ErrorDescription, "\r\nTrace ID: "+r.TraceID) || r.TraceID == "" || r.CorrelationID == "" {
				t.Errorf("trace and correlation ids missing: %+v", r)
			}
			if r.AccessToken != "" {
				t.Error("an error reply carries an access token")
			}
		})
	}
}

func TestTokenDown(t *testing.T) {
	e := start(t, testConfig(t))
	e.SetFaults(Faults{TokenDown: true})
	r := postToken(t, e, e.TokenURL, secretForm(clientID, goodSecret, smtpScope))
	if r.status != 503 || r.Error != "temporarily_unavailable" {
		t.Fatalf("got %d %s, want 503 temporarily_unavailable", r.status, r.Error)
	}
	e.SetFaults(Faults{})
	token(t, e, clientID, smtpScope)
}

// assertion builds a client assertion the way MSAL does (PS256, x5t#S256)
// or the older way (RS256, x5t), signed with key.
func assertion(t *testing.T, alg jwt.SigningMethod, key *rsa.PrivateKey, edit func(h map[string]any, c jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{
		"aud": "", "iss": clientID, "sub": clientID, "jti": newGUID(),
		"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	tok := jwt.NewWithClaims(alg, c)
	s256 := sha256.Sum256(testCert.Raw)
	s1 := sha1.Sum(testCert.Raw)
	if alg == jwt.SigningMethodPS256 {
		tok.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(s256[:])
	} else {
		tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(s1[:])
	}
	edit(tok.Header, c)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionForm(a string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {clientID},
		"scope":                 {smtpScope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {a},
	}
}

func TestTokenWithCertificate(t *testing.T) {
	e := start(t, testConfig(t))
	aud := func(h map[string]any, c jwt.MapClaims) { c["aud"] = e.TokenURL }
	otherCert, otherKey := mustAppCertificate()
	tests := []struct {
		name string
		alg  jwt.SigningMethod
		key  *rsa.PrivateKey
		edit func(h map[string]any, c jwt.MapClaims)
		code int // 0: a token
	}{
		{"PS256 x5t#S256", jwt.SigningMethodPS256, testKey, aud, 0},
		{"RS256 x5t", jwt.SigningMethodRS256, testKey, aud, 0},
		{"forged signature", jwt.SigningMethodPS256, otherKey, aud, 700027},
		{"unregistered certificate", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) {
			aud(h, c)
			sum := sha256.Sum256(otherCert.Raw)
			h["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum[:])
		}, 700027},
		{"iss is not sub", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) { aud(h, c); c["sub"] = noRoleID }, 50048},
		{"iss is not the client", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) {
			aud(h, c)
			c["sub"], c["iss"] = noRoleID, noRoleID
		}, 700021},
		{"aud is another endpoint", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) {
			c["aud"] = "https://login.microsoftonline.com/" + tenant + "/oauth2/token"
		}, 700023},
		{"lives over 10 minutes", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) {
			aud(h, c)
			c["exp"] = time.Now().Add(11 * time.Minute).Unix()
		}, 700024},
		{"expired", jwt.SigningMethodPS256, testKey, func(h map[string]any, c jwt.MapClaims) {
			aud(h, c)
			c["nbf"], c["exp"] = time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-15*time.Minute).Unix()
		}, 700024},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := postToken(t, e, e.TokenURL, assertionForm(assertion(t, tc.alg, tc.key, tc.edit)))
			if tc.code == 0 {
				if r.status != 200 || r.AccessToken == "" {
					t.Fatalf("got %d %s, want a token", r.status, r.ErrorDescription)
				}
				c := jwt.MapClaims{}
				jwt.NewParser().ParseUnverified(r.AccessToken, c)
				if c["appidacr"] != "2" {
					t.Errorf("appidacr = %v, want 2 (certificate)", c["appidacr"])
				}
				return
			}
			if r.status != 401 || r.Error != "invalid_client" || len(r.ErrorCodes) != 1 || r.ErrorCodes[0] != tc.code {
				t.Fatalf("got %d %s %v, want 401 invalid_client [%d]", r.status, r.Error, r.ErrorCodes, tc.code)
			}
			hasPrefix(t, "error_description", r.ErrorDescription, fmt.Sprintf("AADSTS%d: ", tc.code))
		})
	}
}

func TestCAFileIsTrusted(t *testing.T) {
	e := start(t, testConfig(t))
	pem, err := os.ReadFile(e.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", e.CAFile)
	}
	for _, u := range []string{e.TokenURL, strings.Replace(e.TokenURL, "127.0.0.1", "localhost", 1)} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.PostForm(u, secretForm(clientID, goodSecret, smtpScope))
		if err != nil {
			t.Fatalf("with %s as the only CA: %v", e.CAFile, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s", u, resp.Status)
		}
	}
	// A client that does not trust the CA is refused by TLS itself.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	if resp, err := c.PostForm(e.TokenURL, secretForm(clientID, goodSecret, smtpScope)); err == nil {
		resp.Body.Close()
		t.Fatal("a client without the emulator's CA connected")
	}
}
