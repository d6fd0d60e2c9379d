package token

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"golang.org/x/oauth2"
)

const (
	scopeRemedy = `set the scope to exactly one "<resource>/.default": "https://outlook.office365.com/.default" for SMTP, "https://graph.microsoft.com/.default" for Graph (permissions are granted in Entra, not requested)`
	certRemedy  = "upload this certificate (its public part) to Entra > App registrations > Certificates & secrets of this application, check that the private key belongs to it, and that the host clock is right"
)

// explanations maps AADSTS codes (reference: exchange-online.md §4, §8) to
// the class of the failure and what the administrator should do.
var explanations = map[string]struct {
	class  failure.Class
	remedy string
}{
	"7000215": {failure.Config, "the client secret is wrong: use the secret's Value, not its Secret ID, from Entra > App registrations > Certificates & secrets"},
	"7000222": {failure.Config, "the client secret has expired: add a new one in Entra > App registrations > Certificates & secrets and put its Value into the secret file (a certificate is the longer-lived choice)"},
	"7000218": {failure.Config, "the request carried neither a client secret nor a certificate assertion: set client_secret_file or certificate_file"},
	"700016":  {failure.Config, "the application was not found in the tenant: check client_id (the Application (client) ID) and tenant, and that an administrator granted consent to the app in this tenant"},
	"90002":   {failure.Config, "the tenant was not found: check tenant (the directory ID or a verified domain) and cloud"},
	"90038":   {failure.Config, `the tenant lives in another (national) cloud: set cloud = "usgov", "usgov-dod" or "china" to match it`},
	"700027":  {failure.Config, "the client assertion was rejected (certificate not registered or signature invalid): " + certRemedy},
	"50012":   {failure.Config, "authentication failed (certificate not registered for this app, or the assertion is invalid): " + certRemedy},
	"700024":  {failure.Config, "the client assertion is outside its valid time range: set the host clock right (NTP)"},
	"50048":   {failure.Config, "the client assertion's subject differs from its issuer: both must be the client_id"},
	"7000112": {failure.Config, "the application is disabled: enable it in Entra > Enterprise applications > Properties"},
	"70011":   {failure.Config, "the scope is invalid: " + scopeRemedy},
	"1002012": {failure.Config, "the scope lacks /.default: " + scopeRemedy},
	"700022":  {failure.Config, "the scope names more than one resource: " + scopeRemedy},
	"500011":  {failure.Config, "the resource of the scope has no service principal in the tenant: check that the scope's host matches the cloud, that the tenant has Exchange Online (or Graph), and grant admin consent for the API permission"},
	"9001023": {failure.Config, "client credentials are refused on /common, /organizations and /consumers: set tenant to the directory ID or a verified domain"},
	"53003":   {failure.Config, "Conditional Access blocked the token: exclude this workload identity from the policy or allow this host's address (Entra > Protection > Conditional Access)"},
	"50196":   {failure.Throttled, "Entra saw a loop of identical token requests: tokens must be cached; check that the token cache directory is writable by the service user and that one flusher runs per account"},
}

// Explain returns the class of an AADSTS code ("7000215" or "AADSTS7000215")
// and what the administrator should do about it. Unknown codes are
// configuration errors with no remedy.
func Explain(aadsts string) (class failure.Class, remedy string) {
	code := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(aadsts)), "AADSTS")
	if x, ok := explanations[code]; ok {
		return x.class, x.remedy
	}
	return failure.Config, ""
}

var aadstsCode = lazyRegexp(`AADSTS(\d+)`)

// entraError is the part of Entra's error body not in *oauth2.RetrieveError.
type entraError struct {
	ErrorCodes []int `json:"error_codes"`
}

// classify turns a failed token request into a *failure.Error whose text
// never holds hidden (the secret or the assertion sent).
func (s *Source) classify(err error, hidden string) error {
	// The credential as sent (form-encoded) and as a server may echo it.
	var forms []string
	if hidden != "" {
		quoted, _ := json.Marshal(hidden)
		forms = []string{hidden, url.QueryEscape(hidden), url.PathEscape(hidden), string(quoted[1 : len(quoted)-1])}
	}
	scrub := func(t string) string {
		for _, f := range forms {
			t = strings.ReplaceAll(t, f, "[redacted]")
		}
		return strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, t)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// Network, TLS, timeout, cancellation, a response we cannot parse.
		// The error names the URL, never the form.
		fe := &failure.Error{Class: failure.Temporary, Err: err,
			Reply: scrub(fmt.Sprintf("token request to %s failed: %v", s.cfg.TokenURL, err))}
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			fe.Remedy = "the token endpoint's TLS certificate is not trusted: add its CA with ca_file (TLS is always verified)"
		}
		return fe
	}
	// Keep neither re nor its Response: the request behind it can replay the form.
	status := 0
	statusText := "no status"
	if re.Response != nil {
		status, statusText = re.Response.StatusCode, re.Response.Status
	}
	code := ""
	var body entraError
	if code = AADSTSCode(re.ErrorDescription); code != "" {
	} else if json.Unmarshal(re.Body, &body) == nil && len(body.ErrorCodes) > 0 {
		code = strconv.Itoa(body.ErrorCodes[0])
	}
	said := strings.TrimSpace(re.ErrorCode + ": " + re.ErrorDescription)
	if re.ErrorCode == "" && re.ErrorDescription == "" {
		said = strings.TrimSpace(scrub(string(re.Body))) // before cutting: a cut could keep part of it
		if len(said) > 200 {
			said = said[:200] + "..."
		}
	}
	fe := &failure.Error{Reply: scrub(fmt.Sprintf("token endpoint %s refused client %s: HTTP %s: %s", s.cfg.TokenURL, s.cfg.ClientID, statusText, said))}
	switch {
	case status >= 500 || status == http.StatusRequestTimeout:
		fe.Class = failure.Temporary
	case status == http.StatusTooManyRequests:
		fe.Class = failure.Temporary
		if re.Response != nil {
			fe.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		}
	case code != "":
		fe.Class, fe.Remedy = Explain(code)
		if fe.Remedy == "" {
			fe.Remedy = "look the code up at https://login.microsoftonline.com/error?code=" + code
		}
	case re.ErrorCode == "temporarily_unavailable":
		fe.Class = failure.Temporary
	case status >= 300 && status < 400:
		fe.Class, fe.Remedy = failure.Config, "the token endpoint redirected: check token_url (redirects are not followed, to keep the credentials at the endpoint)"
	case status >= 400 || re.ErrorCode != "":
		fe.Class = failure.Config
	default:
		fe.Class = failure.Temporary
	}
	return fe
}

// retryAfter reads a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// lazyRegexp compiles a pattern on first use. sendmail links this
// package but never fetches a token: its start-up time counts.
func lazyRegexp(pattern string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(pattern) })
}

// AADSTSCode returns the number of the first AADSTS code in text
// ("AADSTS7000215: Invalid client secret…" → "7000215"), "" if none.
func AADSTSCode(text string) string {
	if m := aadstsCode().FindStringSubmatch(text); m != nil {
		return m[1]
	}
	return ""
}
