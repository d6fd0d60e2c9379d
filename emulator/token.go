package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Resources the emulated tenant has service principals for, and the role an
// app needs in a token for each.
const (
	resourceExchange  = "https://outlook.office365.com"
	resourceExchange2 = "https://outlook.office.com"
	resourceGraph     = "https://graph.microsoft.com"

	roleSMTP  = "SMTP.SendAsApp"
	roleGraph = "Mail.Send"

	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// resourceOf maps a scope's resource (URI or well-known app id) to the
// audience a token for it carries.
func resourceOf(uri string) (string, bool) {
	switch strings.ToLower(strings.TrimRight(uri, "/")) {
	case resourceExchange, "00000002-0000-0ff1-ce00-000000000000":
		return resourceExchange, true
	case resourceExchange2:
		return resourceExchange2, true
	case resourceGraph, "00000003-0000-0000-c000-000000000000":
		return resourceGraph, true
	}
	return "", false
}

// entraError is a refusal of the token endpoint, worded as Entra words it.
type entraError struct {
	status int
	error  string // the OAuth error value
	code   int    // the AADSTS number
	text   string
}

func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	e.count(func(s *Stats) *int { return &s.TokenRequests })
	e.pause(e.currentFaults().Latency)
	if e.currentFaults().TokenDown {
		e.writeEntraError(w, r, &entraError{http.StatusServiceUnavailable, "temporarily_unavailable", 90033,
			"A transient error has occurred. Please try again."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	tok, ee := e.tokenFor(r, tenant)
	if ee != nil {
		if ee.error == "invalid_client" || ee.error == "unauthorized_client" {
			e.count(func(s *Stats) *int { return &s.AuthFailures })
		}
		e.writeEntraError(w, r, ee)
		return
	}
	e.count(func(s *Stats) *int { return &s.TokensIssued })
	secs := int(e.cfg.TokenLifetime / time.Second)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	json.NewEncoder(w).Encode(map[string]any{
		"token_type":     "Bearer",
		"expires_in":     secs,
		"ext_expires_in": secs,
		"access_token":   tok,
	})
}

// tokenFor checks a client credentials request in the order Entra does:
// tenant, grant, client, scope, credential, resource.
func (e *Emulator) tokenFor(r *http.Request, tenant string) (string, *entraError) {
	switch strings.ToLower(tenant) {
	case "common", "consumers":
		return "", &entraError{400, "invalid_request", 9001023,
			"The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint."}
	}
	if !strings.EqualFold(tenant, e.cfg.Tenant) && !strings.EqualFold(tenant, e.cfg.TenantID) {
		return "", &entraError{400, "invalid_request", 90002, fmt.Sprintf(
			"Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
			tenant)}
	}
	if r.Method != http.MethodPost {
		return "", &entraError{400, "invalid_request", 900561,
			fmt.Sprintf("The endpoint only accepts POST requests. Received a %s request.", r.Method)}
	}
	if err := r.ParseForm(); err != nil {
		return "", &entraError{400, "invalid_request", 900144,
			"The request body must contain the following parameter: 'grant_type'."}
	}
	form := r.PostForm
	// client_secret_basic, which Entra also accepts (golang.org/x/oauth2
	// tries it first unless told otherwise).
	if id, secret, ok := r.BasicAuth(); ok && form.Get("client_secret") == "" {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if form.Get("client_id") == "" {
			form.Set("client_id", id)
		}
		form.Set("client_secret", secret)
	}
	for _, p := range []string{"grant_type", "client_id", "scope"} {
		if form.Get(p) == "" {
			return "", &entraError{400, "invalid_request", 900144,
				fmt.Sprintf("The request body must contain the following parameter: '%s'.", p)}
		}
	}
	if g := form.Get("grant_type"); g != "client_credentials" {
		return "", &entraError{400, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", g)}
	}
	clientID := form.Get("client_id")
	app, ok := e.app(clientID)
	if !ok {
		return "", &entraError{400, "unauthorized_client", 700016, fmt.Sprintf(
			"Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
			clientID, e.cfg.Tenant)}
	}

	scope := form.Get("scope")
	var resources []string
	for _, s := range strings.Fields(scope) {
		res, found := strings.CutSuffix(s, "/.default")
		if !found {
			return "", &entraError{400, "invalid_scope", 1002012, fmt.Sprintf(
				"The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
				scope)}
		}
		if !slices.Contains(resources, strings.ToLower(res)) {
			resources = append(resources, strings.ToLower(res))
		}
	}
	if len(resources) > 1 {
		return "", &entraError{400, "invalid_scope", 700022, fmt.Sprintf(
			"The provided value for the input parameter scope is not valid because it contains more than one resource. Scope %s is not valid.",
			scope)}
	}

	viaCert, ee := e.authenticate(r, app)
	if ee != nil {
		return "", ee
	}

	aud, ok := resourceOf(resources[0])
	if !ok {
		return "", &entraError{400, "invalid_resource", 500011, fmt.Sprintf(
			"The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
			resources[0], e.cfg.Tenant)}
	}
	tok, err := e.issue(app, aud, viaCert)
	if err != nil {
		return "", &entraError{500, "server_error", 90033, "A transient error has occurred. Please try again."}
	}
	return tok, nil
}

// authenticate checks the client secret or the certificate assertion and
// reports which one was used.
func (e *Emulator) authenticate(r *http.Request, app *App) (viaCert bool, ee *entraError) {
	form := r.PostForm
	if assertion := form.Get("client_assertion"); assertion != "" {
		if form.Get("client_assertion_type") != assertionType {
			return true, &entraError{400, "invalid_request", 900144,
				"The request body must contain the following parameter: 'client_assertion_type'."}
		}
		return true, e.checkAssertion(r, app, assertion)
	}
	secret := form.Get("client_secret")
	if secret == "" {
		return false, &entraError{401, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}
	}
	for _, s := range app.Secrets {
		if subtle.ConstantTimeCompare([]byte(s.Value), []byte(secret)) == 1 {
			if s.Expired {
				return false, &entraError{401, "invalid_client", 7000222, fmt.Sprintf(
					"The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
					app.ClientID)}
			}
			return false, nil
		}
	}
	return false, &entraError{401, "invalid_client", 7000215, fmt.Sprintf(
		"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.",
		app.ClientID)}
}

// checkAssertion verifies a client_assertion JWT as Entra does for
// certificate credentials: RS256 or PS256, the certificate chosen by
// x5t#S256 (or the older x5t), iss = sub = client id, aud = this token
// endpoint, a lifetime of at most ten minutes.
func (e *Emulator) checkAssertion(r *http.Request, app *App, assertion string) *entraError {
	malformed := &entraError{401, "invalid_client", 50027, "JWT token is invalid or malformed."}
	claims := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(assertion, claims)
	if err != nil || tok == nil {
		return malformed
	}
	thumb, _ := tok.Header["x5t#S256"].(string)
	sha1Thumb, _ := tok.Header["x5t"].(string)
	cert := findCertificate(app, thumb, sha1Thumb)
	shown := strings.ToUpper(hex.EncodeToString(decodeThumbprint(thumb)))
	if thumb == "" {
		shown = strings.ToUpper(hex.EncodeToString(decodeThumbprint(sha1Thumb)))
	}
	if cert == nil {
		return &entraError{401, "invalid_client", 700027, fmt.Sprintf(
			"The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '%s', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments if you're not using Graph Explorer.]",
			shown, app.ClientID)}
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return malformed
	}
	_, err = jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "PS256"}), jwt.WithoutClaimsValidation()).
		Parse(assertion, func(*jwt.Token) (any, error) { return pub, nil })
	if err != nil {
		return &entraError{401, "invalid_client", 700027, fmt.Sprintf(
			"Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '%s', Found key 'Start=%s, End=%s']",
			shown, cert.NotBefore.UTC().Format("01/02/2006 15:04:05"), cert.NotAfter.UTC().Format("01/02/2006 15:04:05"))}
	}

	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	if iss != sub {
		return &entraError{401, "invalid_client", 50048, fmt.Sprintf(
			"Subject mismatches Issuer claim in the client assertion for application '%s'. Ensure the subject and issuer claims are both set to the client id.", app.ClientID)}
	}
	if !strings.EqualFold(iss, app.ClientID) {
		return &entraError{401, "invalid_client", 700021, fmt.Sprintf(
			"Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . Expected client_id '%s'.", app.ClientID)}
	}
	aud, _ := claims.GetAudience()
	if !slices.ContainsFunc(aud, func(a string) bool { return e.isTokenURL(r, a) }) {
		return &entraError{401, "invalid_client", 700023, fmt.Sprintf(
			"Client assertion audience claim does not match Realm issuer. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . Expected audience '%s'.",
			e.TokenURL)}
	}
	now := time.Now()
	exp, _ := claims.GetExpirationTime()
	nbf, _ := claims.GetNotBefore()
	if nbf == nil {
		nbf, _ = claims.GetIssuedAt()
	}
	const skew = 5 * time.Minute
	valid := exp != nil && now.Before(exp.Time) &&
		(nbf == nil || !now.Add(skew).Before(nbf.Time)) &&
		(nbf == nil || exp.Sub(nbf.Time) <= 10*time.Minute)
	if !valid {
		from, to := "unset", "unset"
		if nbf != nil {
			from = nbf.UTC().Format("01/02/2006 15:04:05")
		}
		if exp != nil {
			to = exp.UTC().Format("01/02/2006 15:04:05")
		}
		return &entraError{401, "invalid_client", 700024, fmt.Sprintf(
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s. An assertion may be valid for at most 10 minutes. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
			now.UTC().Format("2006-01-02T15:04:05.0000000Z"), from, to)}
	}
	return nil
}

// isTokenURL reports whether aud names this tenant's token endpoint, by
// domain or by tenant id, at the address the client used.
func (e *Emulator) isTokenURL(r *http.Request, aud string) bool {
	for _, tenant := range []string{e.cfg.Tenant, e.cfg.TenantID} {
		for _, host := range []string{r.Host, strings.TrimPrefix(e.BaseURL, "https://")} {
			if strings.EqualFold(aud, "https://"+host+"/"+tenant+"/oauth2/v2.0/token") {
				return true
			}
		}
	}
	return false
}

func findCertificate(app *App, s256, s1 string) *x509.Certificate {
	want256, want1 := decodeThumbprint(s256), decodeThumbprint(s1)
	for _, c := range app.Certificates {
		a, b := thumbprints(c)
		if (len(want256) > 0 && bytes.Equal(a, want256)) || (len(want256) == 0 && len(want1) > 0 && bytes.Equal(b, want1)) {
			return c
		}
	}
	return nil
}

// decodeThumbprint accepts the base64url form the documents ask for and the
// padded and standard forms some libraries send.
func decodeThumbprint(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

// issue signs an access token like the v1 tokens Entra issues to apps for
// Exchange and Graph. Real ones are 1.5–2.5 KB; ours are as long, so clients
// meet the same line lengths (XOAUTH2) and header sizes.
func (e *Emulator) issue(app *App, aud string, viaCert bool) (string, error) {
	k, err := signingKey()
	if err != nil {
		return "", err
	}
	now := time.Now()
	iss := "https://sts.windows.net/" + e.cfg.TenantID + "/"
	oid := guidOf("sp:" + strings.ToLower(app.ClientID))
	acr := "1"
	if viaCert {
		acr = "2"
	}
	claims := jwt.MapClaims{
		"aud":             aud,
		"iss":             iss,
		"iat":             now.Add(-5 * time.Minute).Unix(),
		"nbf":             now.Add(-5 * time.Minute).Unix(),
		"exp":             now.Add(e.cfg.TokenLifetime).Unix(),
		"aio":             randomText(440),
		"app_displayname": "exo-sendmail",
		"appid":           app.ClientID,
		"appidacr":        acr,
		"idp":             iss,
		"idtyp":           "app",
		"oid":             oid,
		"rh":              "1.AAAA" + randomText(120) + ".",
		"sub":             oid,
		"tid":             e.cfg.TenantID,
		"uti":             randomText(22),
		"ver":             "1.0",
		"wids":            []string{"0997a1d0-0d1d-4acb-b408-d5ca73121e90"},
		"xms_ftd":         randomText(64),
		"xms_idrel":       "7 12",
		"xms_rd":          "0.42Lj" + randomText(160),
	}
	var roles []string
	switch {
	case aud == resourceGraph && app.GraphRole:
		roles = []string{roleGraph}
	case aud != resourceGraph && app.SMTPRole:
		roles = []string{roleSMTP}
	}
	if len(roles) > 0 {
		claims["roles"] = roles
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["x5t"] = k.kid
	t.Header["kid"] = k.kid
	return t.SignedString(k.key)
}

// grant is what a verified access token allows.
type grant struct {
	app   *App
	roles []string
}

// refusal says why an access token was refused, in Graph's words.
type refusal string

func (r refusal) Error() string { return string(r) }

const (
	errTokenMalformed refusal = "IDX14100: JWT is not well formed, there are no dots (.)."
	errTokenSignature refusal = "Access token validation failure. Invalid signature."
	errTokenExpired   refusal = "Lifetime validation failed, the token is expired."
	errTokenAudience  refusal = "Access token validation failure. Invalid audience."
	errTokenIssuer    refusal = "Access token validation failure. Invalid issuer."
	errTokenApp       refusal = "Access token validation failure. The application is not registered in the tenant."
)

// verify checks an access token the emulator issued: signature, lifetime,
// tenant, audience (one of auds) and that its app still exists.
func (e *Emulator) verify(raw string, auds ...string) (*grant, error) {
	k, err := signingKey()
	if err != nil {
		return nil, err
	}
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired()).
		ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return &k.key.PublicKey, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, errTokenExpired
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, errTokenMalformed
	case err != nil:
		return nil, errTokenSignature
	}
	if iss, _ := claims.GetIssuer(); iss != "https://sts.windows.net/"+e.cfg.TenantID+"/" {
		return nil, errTokenIssuer
	}
	aud, _ := claims.GetAudience()
	if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(auds, a) }) {
		return nil, errTokenAudience
	}
	appid, _ := claims["appid"].(string)
	app, ok := e.app(appid)
	if !ok {
		return nil, errTokenApp
	}
	g := &grant{app: app}
	if rs, ok := claims["roles"].([]any); ok {
		for _, r := range rs {
			if s, ok := r.(string); ok {
				g.roles = append(g.roles, s)
			}
		}
	}
	return g, nil
}

func (e *Emulator) writeEntraError(w http.ResponseWriter, r *http.Request, ee *entraError) {
	trace := newGUID()
	corr := r.Header.Get("client-request-id")
	if corr == "" {
		corr = newGUID()
	}
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("x-ms-request-id", trace)
	w.WriteHeader(ee.status)
	json.NewEncoder(w).Encode(map[string]any{
		"error": ee.error,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			ee.code, ee.text, trace, corr, ts),
		"error_codes":    []int{ee.code},
		"timestamp":      ts,
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", ee.code),
	})
}

// newGUID returns a random (version 4) GUID.
func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b)
}

// guidOf returns a GUID derived from name, stable across runs.
func guidOf(name string) string {
	sum := sha1.Sum([]byte("exo-sendmail emulator/" + name))
	var b [16]byte
	copy(b[:], sum[:])
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b)
}

func formatGUID(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// randomText returns n characters of base64url noise.
func randomText(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}
