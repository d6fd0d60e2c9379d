package check

import (
	"fmt"
	"slices"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// permissionDelay closes every list of permission fixes.
const permissionDelay = "permission changes take from minutes to over an hour to apply: after a change, run the check again later"

// who names the app and its service principal in the commands the check
// prints: the token's oid is the Enterprise application's object id, the
// one New-ServicePrincipal and Add-MailboxPermission want.
func (c *checker) who(cl *token.Claims) (app, sp string) {
	app, sp = c.a.ClientID, "<object id under Entra > Enterprise applications>"
	if cl != nil && cl.ObjectID != "" {
		sp = cl.ObjectID
	}
	return app, sp
}

// explainReply says what an Exchange SMTP reply means for this account and
// how to fix it (exchange-online.md §4, §8). cl may be nil.
func (c *checker) explainReply(r transport.Reply, cl *token.Claims) (class failure.Class, meaning, fix string) {
	mb := c.a.Mailbox
	text := strings.ToLower(strings.Join(r.Lines, " "))
	switch {
	case r.Code == 535 && r.Enhanced == "5.7.139":
		return failure.Config, "SMTP AUTH is disabled for mailbox " + mb + " or for the whole tenant, and that blocks OAuth too",
			"Set-CASMailbox -Identity " + mb + " -SmtpClientAuthenticationDisabled $false (this mailbox), " +
				"or Set-TransportConfig -SmtpClientAuthenticationDisabled $false (the whole tenant); " + permissionDelay
	case r.Code == 535:
		return failure.Config, "Exchange refused the token for " + mb + ", and 535 5.7.3 says no more. Likely causes, most likely first:\n" +
			numbered(c.authCauses(cl)) + "\n" + permissionDelay, ""
	case r.Code == 430 || strings.Contains(text, "mailbox logon failure"):
		return failure.Config, "Exchange accepted the token but the app may not log on to mailbox " + mb + "; grant it:\n" +
			strings.Join(c.mailboxGrant(cl), "\n") + "\n" + permissionDelay, ""
	case strings.Contains(text, "sendasdenied") || r.Enhanced == "5.7.60":
		return failure.Config, "Exchange refused to let " + mb + " send as the message's From address (the check sends From: " + mb + ")",
			"mailbox must be the mailbox's primary SMTP address, not an alias; to send as another address: " +
				"Add-RecipientPermission -Identity <that address> -AccessRights SendAs -Trustee " + mb
	case r.Enhanced == "5.7.30":
		return failure.Config, "the server took the login for basic authentication", "smtp_server must be Exchange Online's submission endpoint, smtp.office365.com:587"
	case r.Enhanced == "5.7.57":
		return failure.Config, "the server says the client did not authenticate before sending", "this is a bug of exo-sendmail: please report it with this output"
	case r.Enhanced == "4.3.2" || r.Code == 432:
		return failure.Throttled, "more than 3 connections to " + mb + " are open (the flusher, or other programs using this mailbox)", "try again in a few minutes"
	case strings.Contains(text, "submissionquotaexceeded"):
		return failure.Throttled, mb + " reached its 10,000 recipients per 24 hours", "wait until the rolling window frees (mailq shows the account paused)"
	case r.Code == 550 && strings.HasPrefix(r.Enhanced, "5.2.25"):
		return failure.Throttled, "Exchange throttles " + mb + " after continuous errors", "fix the errors, then wait before sending again"
	case r.Enhanced == "5.7.708":
		return failure.Permanent, "Exchange Online does not accept traffic from this host's IP address", "contact Microsoft support to delist it"
	case r.Code >= 400 && r.Code < 500:
		return failure.Temporary, "the server is busy or closing the connection", "try again later"
	}
	return failure.Config, "", ""
}

// authCauses lists the causes of 535 5.7.3, the likeliest first, with what
// the token showed taken into account.
func (c *checker) authCauses(cl *token.Claims) []string {
	app, sp := c.who(cl)
	mb := c.a.Mailbox
	hasRole := cl != nil && slices.Contains(cl.Roles, roleSMTP)
	var causes []string
	if cl != nil && isGraph(cl.Audience) {
		causes = append(causes, "the token is for Microsoft Graph, not Exchange: the scope must be https://outlook.office365.com/.default (check token_url and cloud)")
	}
	if !hasRole {
		causes = append(causes, "the app lacks SMTP.SendAsApp or its admin consent (the token has no such role): Entra > App registrations > "+
			"API permissions > Office 365 Exchange Online > Application permissions > SMTP.SendAsApp, then Grant admin consent "+
			"(not needed only when the mailbox is granted through RBAC for Applications)")
	}
	causes = append(causes,
		"the service principal was registered with the App registration's object id instead of the Enterprise application's: "+
			"Get-ServicePrincipal | where AppId -eq '"+app+"' | fl ObjectId must show "+sp+"; if not, Remove-ServicePrincipal it and "+
			"New-ServicePrincipal -AppId "+app+" -ObjectId "+sp,
		"the service principal has no right on the mailbox: "+strings.Join(c.mailboxGrant(cl), "; "),
		"mailbox = "+mb+" is not the primary address of a mailbox of this tenant (for a shared mailbox, its own address)")
	return causes
}

// mailboxGrant lists how to let the app use the mailbox, a step a line.
func (c *checker) mailboxGrant(cl *token.Claims) []string {
	_, sp := c.who(cl)
	mb := c.a.Mailbox
	rbac := "or, with RBAC for Applications: New-ManagementRoleAssignment -App " + sp + " -Role 'Application SMTP.SendAsApp' -CustomResourceScope <scope>"
	if cl != nil && slices.Contains(cl.Roles, roleSMTP) {
		rbac += ", and remove SMTP.SendAsApp from the app in Entra: while the token carries it, Exchange wants FullAccess instead"
	}
	return []string{
		"Add-MailboxPermission -Identity " + mb + " -User " + sp + " -AccessRights FullAccess",
		rbac,
		"test with Test-ServicePrincipalAuthorization -Identity " + sp + " -Resource " + mb,
	}
}

func numbered(items []string) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%d. %s", i+1, it)
	}
	return b.String()
}
