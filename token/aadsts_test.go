package token

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Every AADSTS code we explain, answered by the endpoint as Entra words it.
func TestAADSTSClasses(t *testing.T) {
	cases := []struct {
		status  int
		oauth   string
		code    int
		class   failure.Class
		mention string // in the remedy
	}{
		{401, "invalid_client", 7000215, failure.Config, "not its Secret ID"},
		{401, "invalid_client", 7000222, failure.Config, "expired"},
		{401, "invalid_client", 7000218, failure.Config, "client_secret_file"},
		{400, "unauthorized_client", 700016, failure.Config, "client_id"},
		{400, "invalid_request", 90002, failure.Config, "tenant"},
		{400, "invalid_request", 90038, failure.Config, `cloud = "usgov"`},
		{401, "invalid_client", 700027, failure.Config, "Certificates & secrets"},
		{401, "invalid_client", 50012, failure.Config, "Certificates & secrets"},
		{401, "invalid_client", 700024, failure.Config, "clock"},
		{401, "invalid_client", 50048, failure.Config, "client_id"},
		{400, "unauthorized_client", 7000112, failure.Config, "disabled"},
		{400, "invalid_scope", 70011, failure.Config, "/.default"},
		{400, "invalid_scope", 1002012, failure.Config, "/.default"},
		{400, "invalid_scope", 700022, failure.Config, "exactly one"},
		{400, "invalid_resource", 500011, failure.Config, "admin consent"},
		{400, "invalid_request", 9001023, failure.Config, "/common"},
		{400, "invalid_grant", 53003, failure.Config, "Conditional Access"},
		{400, "invalid_request", 50196, failure.Throttled, "cached"},
		{400, "invalid_request", 123456, failure.Config, "error?code=123456"},
	}
	e := newEntra(t)
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			e.set(func(e *entra) {
				e.fault = func(w http.ResponseWriter, _ url.Values) bool {
					aadError(w, c.status, c.oauth, c.code, "Something Entra says.")
					return true
				}
			})
			s := secretSource(t, e, "")
			_, err := s.Token(context.Background())
			e.noLeak(t, err)
			var fe *failure.Error
			if !errors.As(err, &fe) {
				t.Fatalf("not a *failure.Error: %v", err)
			}
			if fe.Class != c.class || !strings.Contains(fe.Remedy, c.mention) {
				t.Errorf("class %v remedy %q; want %v mentioning %q", fe.Class, fe.Remedy, c.class, c.mention)
			}
			msg := err.Error()
			for _, want := range []string{fmt.Sprintf("AADSTS%d", c.code), e.url(), testClientID, "Trace ID"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error spans lines: %q", msg)
			}
		})
	}
}

// Without AADSTS in the description, error_codes still classifies.
func TestErrorCodesOnly(t *testing.T) {
	e := newEntra(t)
	e.set(func(e *entra) {
		e.fault = func(w http.ResponseWriter, _ url.Values) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"Invalid client secret provided.","error_codes":[7000215]}`)
			return true
		}
	})
	_, err := secretSource(t, e, "").Token(context.Background())
	wantConfig(t, e, err, "not its Secret ID")
}

func TestTemporary(t *testing.T) {
	cases := []struct {
		name       string
		answer     func(w http.ResponseWriter)
		retryAfter time.Duration
	}{
		{"503 page", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			fmt.Fprint(w, "<html><body>Service Unavailable</body></html>")
		}, 0},
		{"500 AADSTS", func(w http.ResponseWriter) {
			aadError(w, 500, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
		}, 0},
		{"429 seconds", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "7")
			aadError(w, 429, "invalid_request", 90055, "The request was throttled.")
		}, 7 * time.Second},
		{"429 date", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		}, 2 * time.Minute},
		{"400 temporarily_unavailable", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"temporarily_unavailable","error_description":"try later"}`)
		}, 0},
	}
	e := newEntra(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.set(func(e *entra) {
				e.fault = func(w http.ResponseWriter, _ url.Values) bool { c.answer(w); return true }
			})
			_, err := secretSource(t, e, "").Token(context.Background())
			e.noLeak(t, err)
			var fe *failure.Error
			if !errors.As(err, &fe) || fe.Class != failure.Temporary {
				t.Fatalf("%v: want a temporary failure", err)
			}
			// An HTTP date loses sub-second precision and a moment passes.
			if d := fe.RetryAfter - c.retryAfter; d > 0 || d < -2*time.Second {
				t.Errorf("RetryAfter %v, want %v", fe.RetryAfter, c.retryAfter)
			}
		})
	}
}

func TestNetworkErrorsTemporary(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		e := newEntra(t)
		release := make(chan struct{})
		defer close(release)
		e.set(func(e *entra) {
			e.fault = func(http.ResponseWriter, url.Values) bool { <-release; return true }
		})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := secretSource(t, e, "").Token(ctx)
		e.noLeak(t, err)
		if failure.ClassOf(err) != failure.Temporary || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: want a temporary failure from the deadline", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		e := newEntra(t)
		s := secretSource(t, e, "")
		e.srv.Close()
		_, err := s.Token(context.Background())
		e.noLeak(t, err)
		if failure.ClassOf(err) != failure.Temporary || !strings.Contains(err.Error(), e.url()) {
			t.Errorf("%v: want a temporary failure naming the endpoint", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		e := newEntra(t)
		cfg := e.config("")
		cfg.HTTPClient = nil // the default client trusts the system pool only
		cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret))
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Token(context.Background())
		e.noLeak(t, err)
		var fe *failure.Error
		if !errors.As(err, &fe) || fe.Class != failure.Temporary || !strings.Contains(fe.Remedy, "ca_file") {
			t.Fatalf("%v: want a temporary failure pointing at ca_file", err)
		}
		if e.count() != 0 {
			t.Error("the request went through an unverified TLS connection")
		}
	})
}

// A server that echoes what it got must not get it into our errors.
func TestSecretNeverInErrors(t *testing.T) {
	pair := testPairs(t)[0]
	echoes := map[string]func(w http.ResponseWriter, form url.Values){
		"AADSTS description": func(w http.ResponseWriter, form url.Values) {
			aadError(w, 401, "invalid_client", 7000215, "got secret '"+form.Get("client_secret")+"' assertion '"+form.Get("client_assertion")+"'")
		},
		"5xx body": func(w http.ResponseWriter, form url.Values) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(502)
			fmt.Fprint(w, form.Get("client_secret")+form.Get("client_assertion"))
		},
		"long body cut": func(w http.ResponseWriter, form url.Values) {
			w.WriteHeader(400)
			fmt.Fprint(w, strings.Repeat("x", 180)+form.Get("client_secret")+form.Get("client_assertion"))
		},
		"4xx body": func(w http.ResponseWriter, form url.Values) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(403)
			fmt.Fprint(w, form.Encode())
		},
	}
	for name, echo := range echoes {
		for _, cred := range []string{"secret", "certificate"} {
			t.Run(name+"/"+cred, func(t *testing.T) {
				e := newEntra(t)
				e.set(func(e *entra) {
					e.fault = func(w http.ResponseWriter, form url.Values) bool { echo(w, form); return true }
				})
				cfg := e.config("")
				dir := t.TempDir()
				if cred == "secret" {
					cfg.SecretFile = writeFile(t, dir, "secret", []byte(testSecret))
				} else {
					cfg.CertificateFile = writeFile(t, dir, "c.pem", append(pemBlock("CERTIFICATE", pair.cert.Raw), pemBlock("RSA PRIVATE KEY", x509MarshalPKCS1(pair))...))
				}
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.Token(context.Background())
				if err == nil {
					t.Fatal("no error")
				}
				e.noLeak(t, err)
				if url.QueryEscape(testSecret) != testSecret && strings.Contains(err.Error(), url.QueryEscape(testSecret)) {
					t.Fatalf("error leaks the form-encoded secret: %v", err)
				}
			})
		}
	}
}

// Redirects are answered as errors: the form would follow them.
func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the redirect was followed to %s", r.URL)
	}))
	defer elsewhere.Close()
	e := newEntra(t)
	e.set(func(e *entra) {
		e.fault = func(w http.ResponseWriter, _ url.Values) bool {
			w.Header().Set("Location", elsewhere.URL+"/token")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return true
		}
	})
	_, err := secretSource(t, e, "").Token(context.Background())
	wantConfig(t, e, err, "redirect")
}

func TestNewValidates(t *testing.T) {
	good := Config{TokenURL: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
		ClientID: testClientID, Scope: smtpScope, SecretFile: "/nonexistent/secret"}
	if s, err := New(good); err != nil || s.cfg.Margin != MinMargin {
		t.Fatalf("New(good): %v", err)
	}
	if s, _ := New(func() Config { c := good; c.Margin = time.Minute; return c }()); s.cfg.Margin != MinMargin {
		t.Errorf("a 1-minute margin was kept: %v", s.cfg.Margin)
	}
	cases := map[string]func(c *Config){
		"no URL":           func(c *Config) { c.TokenURL = "" },
		"http URL":         func(c *Config) { c.TokenURL = "http://login.microsoftonline.com/x/oauth2/v2.0/token" },
		"no client":        func(c *Config) { c.ClientID = "" },
		"no scope":         func(c *Config) { c.Scope = "" },
		"permission scope": func(c *Config) { c.Scope = "https://outlook.office.com/SMTP.SendAsApp" },
		"two scopes":       func(c *Config) { c.Scope = smtpScope + " https://graph.microsoft.com/.default" },
		"no credential":    func(c *Config) { c.SecretFile = "" },
		"two credentials":  func(c *Config) { c.CertificateFile = "/etc/c.pem" },
		"key with secret":  func(c *Config) { c.PrivateKeyFile = "/etc/k.pem" },
	}
	for name, spoil := range cases {
		c := good
		spoil(&c)
		if _, err := New(c); err == nil || failure.ClassOf(err) != failure.Config {
			t.Errorf("%s: New gave %v, want a configuration error", name, err)
		}
	}
}

func TestTokenURLFor(t *testing.T) {
	for _, c := range []struct{ cloud, tenant, want string }{
		{"", "contoso.onmicrosoft.com", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
		{"global", testTenantID, "https://login.microsoftonline.com/" + testTenantID + "/oauth2/v2.0/token"},
		{"usgov", "contoso.onmicrosoft.us", "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"},
		{"usgov-dod", "contoso.onmicrosoft.us", "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"},
		{"china", "contoso.partner.onmschina.cn", "https://login.partner.microsoftonline.cn/contoso.partner.onmschina.cn/oauth2/v2.0/token"},
	} {
		if got, err := TokenURLFor(c.cloud, c.tenant); err != nil || got != c.want {
			t.Errorf("TokenURLFor(%q, %q) = %q, %v", c.cloud, c.tenant, got, err)
		}
	}
	for _, c := range []struct{ cloud, tenant, mention string }{
		{"mars", "contoso.com", "cloud"},
		{"global", "", "tenant"},
		{"global", "common", "/common"},
		{"global", "Organizations", "/common"},
		{"global", "contoso.com/../x", "directory ID"},
		{"global", "-contoso", "directory ID"},
	} {
		_, err := TokenURLFor(c.cloud, c.tenant)
		if err == nil || failure.ClassOf(err) != failure.Config || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("TokenURLFor(%q, %q): %v, want a configuration error mentioning %q", c.cloud, c.tenant, err, c.mention)
		}
	}
}

func TestExplain(t *testing.T) {
	for code, x := range explanations {
		if x.remedy == "" {
			t.Errorf("AADSTS%s has no remedy", code)
		}
	}
	c1, r1 := Explain("AADSTS7000215")
	c2, r2 := Explain("7000215")
	if c1 != failure.Config || r1 != r2 || c1 != c2 || !strings.Contains(r1, "Value") {
		t.Errorf("Explain(7000215) = %v %q / %v %q", c1, r1, c2, r2)
	}
	if c, r := Explain("AADSTS50196"); c != failure.Throttled || r == "" {
		t.Errorf("Explain(50196) = %v %q", c, r)
	}
	if c, r := Explain("42"); c != failure.Config || r != "" {
		t.Errorf("Explain(unknown) = %v %q", c, r)
	}
}

func TestDecodeClaims(t *testing.T) {
	// A v2 token: azp instead of appid, aud as an array.
	v2 := "eyJhbGciOiJub25lIn0." +
		"eyJhdWQiOlsiaHR0cHM6Ly9ncmFwaC5taWNyb3NvZnQuY29tIl0sImF6cCI6ImFwcC0xIiwicm9sZXMiOlsiTWFpbC5TZW5kIl0sImV4cCI6MTc2MDAwMDAwMCwiaWF0IjoxNzU5OTk2NDAwLCJ0aWQiOiJ0LTEiLCJvaWQiOiJvLTEifQ." +
		"c2ln"
	c, err := DecodeClaims(v2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Audience != "https://graph.microsoft.com" || c.AppID != "app-1" || c.TenantID != "t-1" || c.ObjectID != "o-1" ||
		len(c.Roles) != 1 || c.Roles[0] != "Mail.Send" || c.Expiry.Unix() != 1760000000 || c.IssuedAt.Unix() != 1759996400 {
		t.Errorf("claims %+v", c)
	}
	for _, bad := range []string{"", "opaque-token", "a.b", "a.!!!.c", "a.bm90IGpzb24.c", "a.WzEsMl0.c"} {
		if _, err := DecodeClaims(bad); err == nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Errorf("DecodeClaims(%q): %v", bad, err)
		}
	}
}

func x509MarshalPKCS1(p keyPair) []byte { return x509.MarshalPKCS1PrivateKey(p.key) }
