package emulator

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// The test tenant: one app with every right on alerts@, one without roles,
// one without mailbox access, and a mailbox with SMTP AUTH disabled.
const (
	tenant       = "contoso.onmicrosoft.com"
	clientID     = "11111111-2222-4333-8444-555555555555"
	noRoleID     = "22222222-2222-4333-8444-555555555555"
	noAccessID   = "33333333-2222-4333-8444-555555555555"
	goodSecret   = "Abc8Q~good-secret-value"
	oldSecret    = "Abc8Q~expired-secret-value"
	mailbox      = "alerts@contoso.com"
	sendAs       = "noreply@contoso.com"
	disabledMbox = "legacy@contoso.com"
)

var testCert, testKey = mustAppCertificate()

func mustAppCertificate() (*x509.Certificate, *rsa.PrivateKey) {
	c, k, err := NewAppCertificate("test app")
	if err != nil {
		panic(err)
	}
	return c, k
}

func testConfig(t *testing.T) Config {
	return Config{
		Dir:    t.TempDir(),
		Tenant: tenant,
		Apps: []App{
			{
				ClientID:     clientID,
				Secrets:      []Secret{{Value: oldSecret, Expired: true}, {Value: goodSecret}},
				Certificates: []*x509.Certificate{testCert},
				SMTPRole:     true,
				GraphRole:    true,
				Mailboxes:    []string{mailbox, disabledMbox},
			},
			{ClientID: noRoleID, Secrets: []Secret{{Value: goodSecret}}, Mailboxes: []string{mailbox}},
			{ClientID: noAccessID, Secrets: []Secret{{Value: goodSecret}}, SMTPRole: true, GraphRole: true},
		},
		Mailboxes: []Mailbox{
			{Address: mailbox, SendAs: []string{sendAs}},
			{Address: disabledMbox, SMTPAuthDisabled: true},
		},
	}
}

func start(t *testing.T, cfg Config) *Emulator {
	t.Helper()
	e, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// tokenReply is the JSON of a token endpoint answer, success or error.
type tokenReply struct {
	status           int
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	ExtExpiresIn     int    `json:"ext_expires_in"`
	AccessToken      string `json:"access_token"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
}

func postToken(t *testing.T, e *Emulator, tokenURL string, form url.Values) tokenReply {
	t.Helper()
	resp, err := e.HTTPClient().PostForm(tokenURL, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r tokenReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("token endpoint answered %s with a body that is not JSON: %v", resp.Status, err)
	}
	r.status = resp.StatusCode
	return r
}

func secretForm(client, secret, scope string) url.Values {
	return url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {client},
		"client_secret": {secret},
		"scope":         {scope},
	}
}

// token fetches a token with a client secret and fails the test otherwise.
func token(t *testing.T, e *Emulator, client, scope string) string {
	t.Helper()
	r := postToken(t, e, e.TokenURL, secretForm(client, goodSecret, scope))
	if r.status != 200 || r.AccessToken == "" {
		t.Fatalf("token for %s %s: %d %s", client, scope, r.status, r.ErrorDescription)
	}
	return r.AccessToken
}

const (
	smtpScope  = "https://outlook.office365.com/.default"
	graphScope = "https://graph.microsoft.com/.default"
)

func hasPrefix(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s = %q, want it to start with %q", what, got, want)
	}
}
