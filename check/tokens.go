package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// The application permissions each transport needs (exchange-online.md §1).
const (
	roleSMTP  = "SMTP.SendAsApp" // Office 365 Exchange Online, Application
	roleGraph = "Mail.Send"      // Microsoft Graph, Application
)

// Audiences Exchange accepts for SMTP AUTH, and Graph's, besides the
// resource of the scope requested (exchange-online.md §1).
var audiences = map[string][]string{
	"smtp":  {"https://outlook.office365.com", "https://outlook.office.com", "https://outlook.office365.us", "00000002-0000-0ff1-ce00-000000000000"},
	"graph": {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"},
}

// token fetches a new token for scope from the account's token endpoint,
// shows its claims and warns about the mismatches it shows. side is "smtp"
// or "graph". tok is "" when no token could be had.
func (c *checker) token(ctx context.Context, side, scope string) (src *token.Source, tok string, claims *token.Claims) {
	src, err := c.tokenSource(scope)
	if err != nil {
		c.r.failure("token", err)
		return nil, "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	tok, err = src.Token(ctx)
	var cachedUntil time.Time
	if err == nil && src.Fetches() == 0 {
		// It came from the cache: fetch anew, or broken credentials would
		// hide behind a token fetched with the old ones.
		c.r.secret(tok)
		if cl, err := token.DecodeClaims(tok); err == nil {
			cachedUntil = cl.Expiry
		}
		tok, err = src.Renew(ctx, tok)
	}
	if err != nil {
		c.tokenFailed(err, cachedUntil)
		return nil, "", nil
	}
	c.r.secret(tok)
	c.r.ok("token", "fetched for %s from %s", scope, c.ep.TokenURL)
	if err := src.CacheError(); err != nil {
		c.r.warn("token", fmt.Sprintf("the token cache cannot be used: %v", err),
			"the flusher would fetch a token per process (Entra answers loops with AADSTS50196): make "+c.cfg.StateDir+" writable by the service user only")
	}
	claims, err = token.DecodeClaims(tok)
	if err != nil {
		c.r.warn("claims", fmt.Sprintf("cannot read the token's claims: %v", err), "the next step shows whether Microsoft accepts it")
		return src, tok, nil
	}
	roles := strings.Join(claims.Roles, " ")
	if roles == "" {
		roles = "(none)"
	}
	c.r.ok("claims", "tenant %s, app %s, audience %s, roles %s, expires %s",
		orNone(claims.TenantID), orNone(claims.AppID), orNone(claims.Audience), roles, when(claims.Expiry))
	c.mismatches(side, scope, claims)
	return src, tok, claims
}

// tokenFailed reports why the token endpoint gave no token, with the
// AADSTS code's meaning and remedy first.
func (c *checker) tokenFailed(err error, cachedUntil time.Time) {
	var fe *failure.Error
	if !errors.As(err, &fe) {
		c.r.failure("token", err)
		return
	}
	said := fe.Reply
	if said == "" && fe.Err != nil {
		said = fe.Err.Error()
	}
	text := said
	if code := token.AADSTSCode(said); code != "" {
		if _, remedy := token.Explain(code); remedy != "" {
			text = "AADSTS" + code + ": " + remedy + "\n" + said
		}
	}
	if !cachedUntil.IsZero() && time.Now().Before(cachedUntil) {
		text += fmt.Sprintf("\na token fetched before is valid until %s: delivery goes on until then, then stops", when(cachedUntil))
	}
	fix := ""
	if !strings.Contains(text, fe.Remedy) {
		fix = fe.Remedy
	}
	class := fe.Class
	if untrusted(err) {
		class = failure.Config // waiting will not make the certificate trusted
	}
	if fix == "" && (class == failure.Temporary || class == failure.Throttled) {
		fix = "try again later; if it persists, check that this host reaches " + c.ep.TokenURL + " over HTTPS (firewall, proxy)"
	}
	c.r.fail(class, "token", text, fix)
}

// mismatches warns about claims that make Exchange or Graph refuse the
// token, or show that the configuration names another tenant or app.
func (c *checker) mismatches(side, scope string, cl *token.Claims) {
	a := c.a
	want := append([]string{strings.TrimSuffix(scope, "/.default")}, audiences[side]...)
	if !slices.ContainsFunc(strings.Fields(cl.Audience), func(aud string) bool {
		return slices.Contains(want, strings.TrimSuffix(aud, "/"))
	}) {
		what := fmt.Sprintf("the token's audience %s is not %s", orNone(cl.Audience), want[0])
		switch {
		case side == "smtp" && isGraph(cl.Audience):
			what = "the token is for Microsoft Graph, not Exchange: SMTP AUTH refuses it (535 5.7.3)"
		case side == "graph" && !isGraph(cl.Audience):
			what = fmt.Sprintf("the token is for %s, not Microsoft Graph: Graph refuses it (401)", orNone(cl.Audience))
		}
		c.r.warn("claims", what, fmt.Sprintf("the scope must be %s; check token_url and cloud", scope))
	}
	switch {
	case side == "smtp" && !slices.Contains(cl.Roles, roleSMTP):
		what := "the token carries no SMTP.SendAsApp role"
		if slices.Contains(cl.Roles, roleGraph) {
			what += " (Mail.Send is a Graph or HVE permission: SMTP AUTH does not accept it)"
		}
		c.r.warn("roles", what, "fine only if the mailbox is granted through RBAC for Applications "+
			"(New-ManagementRoleAssignment -Role 'Application SMTP.SendAsApp'); otherwise add it in Entra > App registrations > "+
			"API permissions > Add a permission > APIs my organization uses > Office 365 Exchange Online > Application permissions > SMTP.SendAsApp, then Grant admin consent")
	case side == "graph" && !slices.Contains(cl.Roles, roleGraph):
		c.r.warn("roles", "the token carries no Mail.Send role",
			"fine only if the mailbox is granted through RBAC for Applications (New-ManagementRoleAssignment -Role 'Application Mail.Send'); "+
				"otherwise add it in Entra > App registrations > API permissions > Add a permission > Microsoft Graph > Application permissions > Mail.Send, then Grant admin consent")
	}
	if conf.IsGUID(a.Tenant) && !strings.EqualFold(cl.TenantID, a.Tenant) {
		c.r.warn("claims", fmt.Sprintf("the token was issued by tenant %s, but tenant = %s", orNone(cl.TenantID), a.Tenant),
			"check tenant and token_url")
	}
	if !strings.EqualFold(cl.AppID, a.ClientID) {
		c.r.warn("claims", fmt.Sprintf("the token was issued to app %s, but client_id = %s", orNone(cl.AppID), a.ClientID),
			"check token_url: it must be the tenant's Entra token endpoint")
	}
	if !cl.Expiry.IsZero() && cl.Expiry.Before(time.Now()) {
		c.r.warn("claims", "the new token has already expired by this host's clock", "set the host clock right (NTP)")
	}
}

func isGraph(aud string) bool {
	return strings.Contains(aud, "graph") || strings.Contains(aud, "00000003-0000-0000-c000-000000000000")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// when formats a moment for the report: UTC, and how far away it is.
func when(t time.Time) string {
	if t.IsZero() {
		return "(unknown)"
	}
	d := time.Until(t).Round(time.Minute)
	switch {
	case d == 0:
		return t.UTC().Format("2006-01-02 15:04 UTC") + " (now)"
	case d < 0:
		return t.UTC().Format("2006-01-02 15:04 UTC") + " (" + duration(-d) + " ago)"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC") + " (in " + duration(d) + ")"
}

// duration writes whole minutes as "59m" or "1h30m", not "1h30m0s".
func duration(d time.Duration) string {
	s := strings.TrimSuffix(d.String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
