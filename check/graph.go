package check

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// probeBody is what the Graph probe posts to sendMail: not base64, so not a
// message. Graph checks the token, the Mail.Send permission and the mailbox
// before it reads the body, then refuses the body with 400: a request that
// proves the account without sending anything (with only Mail.Send, no
// harmless read such as GET /users/{mailbox} is allowed).
const probeBody = "!"

// graphProbe checks that Graph accepts the token for the mailbox.
func (c *checker) graphProbe(ctx context.Context, tok string, cl *token.Claims) bool {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	endpoint := strings.TrimRight(c.ep.GraphURL, "/") + "/users/" + url.PathEscape(c.a.Mailbox) + "/sendMail"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(probeBody))
	if err != nil {
		c.r.fail(failure.Config, "graph", fmt.Sprintf("graph_url %s: %v", c.ep.GraphURL, err), "graph_url must be the API root, e.g. https://graph.microsoft.com/v1.0")
		return false
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := c.http.Do(req)
	if err != nil {
		class, what, fix := explainHTTP(c.ep.GraphURL, err)
		c.r.fail(class, "graph", what, fix)
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	code, message := body.Error.Code, shorten(body.Error.Message, 300)
	said := strings.TrimSpace(fmt.Sprintf("%s %s: %s", resp.Status, code, message))
	mb := c.a.Mailbox
	app, sp := c.who(cl)
	switch st := resp.StatusCode; {
	case st == http.StatusBadRequest && (containsFold(code, "MimeContent") || containsFold(code, "Base64")):
		c.r.ok("graph", "%s accepted the token for %s: the probe, a body that is not a message, was refused as intended (%s %s); nothing was sent", c.ep.GraphURL, mb, resp.Status, code)
		if c.sendTo == "" {
			c.r.ok("graph", "note: --send-to ADDR sends a real test message")
		}
		return true
	case st == http.StatusBadRequest:
		c.r.warn("graph", fmt.Sprintf("token checked, but Graph answered the probe with %s, so whether %s may send is not known", said, mb),
			"check graph_url (the API root, e.g. https://graph.microsoft.com/v1.0); use --send-to ADDR to send a real test message")
		return true
	case st >= 200 && st < 300:
		c.r.warn("graph", fmt.Sprintf("Graph accepted a probe that is not a message (%s): an empty message may have gone out from %s", resp.Status, mb), "")
		return true
	case st == http.StatusUnauthorized:
		c.r.fail(failure.Config, "graph", "Graph refused the token: "+said,
			"the token must be for https://graph.microsoft.com (scope "+c.ep.GraphScope+") of the same cloud and tenant: check token_url and cloud")
	case st == http.StatusForbidden && (containsFold(message, "OData") || containsFold(message, "AccessPolicy")):
		c.r.fail(failure.Config, "graph", "an Application Access Policy or an RBAC for Applications scope keeps the app from "+mb+": "+said,
			"Test-ApplicationAccessPolicy -Identity "+mb+" -AppId "+app+"; add the mailbox to the policy's group, or grant it: "+
				"New-ManagementRoleAssignment -App "+sp+" -Role 'Application Mail.Send' -CustomResourceScope <scope>; "+permissionDelay)
	case st == http.StatusForbidden:
		c.r.fail(failure.Config, "graph", "Graph denied sendMail for "+mb+": "+said,
			"add Microsoft Graph > Application permissions > Mail.Send in Entra > App registrations > API permissions, then Grant admin consent "+
				"(or grant the mailbox through RBAC for Applications: 'Application Mail.Send'); "+permissionDelay)
	case st == http.StatusNotFound && (containsFold(code, "User") || containsFold(code, "Mailbox") || containsFold(message, "user")):
		c.r.fail(failure.Config, "graph", "Graph does not know mailbox "+mb+" or it is not enabled for Graph: "+said,
			"set mailbox to the primary address of a licensed, active Exchange Online mailbox (not on-premises)")
	case st == http.StatusNotFound:
		c.r.fail(failure.Config, "graph", "no sendMail at "+endpoint+": "+said, "graph_url must be the API root, e.g. https://graph.microsoft.com/v1.0")
	case st == http.StatusTooManyRequests:
		c.r.fail(failure.Throttled, "graph", "Graph throttles this app or mailbox: "+said, "try again in a few minutes")
	case st >= 500:
		c.r.fail(failure.Temporary, "graph", "Graph failed: "+said, "try again later")
	default:
		c.r.fail(failure.Config, "graph", "Graph answered "+said, "")
	}
	return false
}

// explainHTTP says what a failed HTTPS request to base means.
func explainHTTP(base string, err error) (failure.Class, string, string) {
	host := base
	if u, perr := url.Parse(base); perr == nil {
		host = u.Host
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is signed by a CA this host does not trust", host),
			"if a private CA signs it (a TLS-inspecting proxy, the emulator), set ca_file to that CA's PEM; TLS is always verified"
	case errors.As(err, &badHost):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is not for this name (%v)", host, badHost), "check graph_url"
	case errors.As(err, &invalid):
		return failure.Config, fmt.Sprintf("%s: the server's TLS certificate is not valid (%v)", host, invalid), "check the host clock (NTP)"
	case isTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		return failure.Temporary, fmt.Sprintf("%s: no answer within %s", host, sessionTimeout),
			"check that this host may reach it over HTTPS (firewall), then try again"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is named already
	}
	return failure.Temporary, fmt.Sprintf("%s: %v", host, err), "check graph_url and that this host may reach it over HTTPS, then try again"
}

// untrusted reports a TLS certificate verification failure.
func untrusted(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid)
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
