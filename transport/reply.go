package transport

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// Reply is one SMTP reply, possibly of several lines.
type Reply struct {
	Code     int
	Enhanced string   // "5.7.3", or "" when the server sent none
	Lines    []string // the text of each line, code and enhanced code removed
}

// String formats the reply as "<code> <enhanced> <text>", lines joined by a space.
func (r Reply) String() string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if t := strings.Join(r.Lines, " "); t != "" {
		s += " " + t
	}
	return s
}

func (r Reply) text() string { return strings.Join(r.Lines, " ") }

// ParseReply reads a reply as String writes it, which is how a
// *failure.Error of this package holds it in Reply: "535 5.7.3 text".
// false when s does not start with a reply code.
func ParseReply(s string) (Reply, bool) {
	code, more, enh, text, err := parseReplyLine(s)
	if err != nil || more {
		return Reply{}, false
	}
	r := Reply{Code: code, Enhanced: enh}
	if text != "" {
		r.Lines = []string{text}
	}
	return r, true
}

// smtpError returns the reply as go-smtp's error type, for callers that want
// the codes as numbers (errors.As on the *failure.Error's cause).
func (r Reply) smtpError() *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.text()}
	if p := strings.Split(r.Enhanced, "."); len(p) == 3 {
		for i := range p {
			e.EnhancedCode[i], _ = strconv.Atoi(p[i])
		}
	}
	return e
}

// StepError is the cause (the Err) of the *failure.Error of a connection
// that failed before it was authenticated (Connect, or the connection a
// Send opens): the step that failed, with the server's refusal or the
// network, TLS or protocol error. Its text is the cause's.
type StepError struct {
	Step  string // "connect", "greeting", "EHLO", "STARTTLS", "TLS handshake" or "AUTH"
	Reply *Reply // the server's refusal; nil when the step failed otherwise
	Err   error  // the cause: the refusal as a go-smtp *smtp.SMTPError, or the error met
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Causes of a server that is not a submission server, under a StepError;
// their text follows the server's name: "server smtp.example:25 does not
// offer STARTTLS".
var (
	ErrNoSTARTTLS = errors.New("does not offer STARTTLS")
	ErrNoXOAUTH2  = errors.New("does not offer AUTH XOAUTH2")
)

// refused classifies the server's refusal at a step of connecting.
func refused(step string, r Reply, mailbox string) *failure.Error {
	fe := classify(stageConnect, r, mailbox)
	fe.Err = &StepError{Step: step, Reply: &r, Err: fe.Err}
	return fe
}

// parseReplyLine splits "250-2.0.0 text" into code, continuation flag,
// enhanced code and text.
func parseReplyLine(line string) (code int, more bool, enhanced, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", "", fmt.Errorf("malformed SMTP reply %q", line)
	}
	code, err = strconv.Atoi(line[:3])
	if err != nil || code < 200 || code > 599 {
		return 0, false, "", "", fmt.Errorf("malformed SMTP reply %q", line)
	}
	rest := line[3:]
	if rest != "" {
		switch rest[0] {
		case '-':
			more = true
		case ' ':
		default:
			return 0, false, "", "", fmt.Errorf("malformed SMTP reply %q", line)
		}
		rest = rest[1:]
	}
	if first, after, _ := strings.Cut(rest, " "); isEnhancedCode(first, code) {
		return code, more, first, after, nil
	}
	return code, more, "", rest, nil
}

// isEnhancedCode reports whether s is an RFC 3463 status code of the same
// class as the reply code.
func isEnhancedCode(s string, code int) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || p[0] != strconv.Itoa(code/100) {
		return false
	}
	for _, n := range p[1:] {
		if n == "" || len(n) > 3 {
			return false
		}
		if _, err := strconv.Atoi(n); err != nil {
			return false
		}
	}
	return true
}

// stage is where in the session a reply was received; the same code means
// different things at different stages (5.2.2 at RCPT is the recipient's
// mailbox, after DATA Exchange means the sending mailbox).
type stage int

const (
	stageConnect stage = iota // greeting, EHLO, STARTTLS, AUTH
	stageMail
	stageRcpt
	stageData // the DATA command and the reply after the message
)

// Remedies the administrator reads (reference: exchange-online.md §2, §4, §8).
const (
	remedyAuth = "Exchange refused the token for mailbox %s: check that the app has the " +
		"Office 365 Exchange Online application permission SMTP.SendAsApp with admin consent " +
		"(a Graph Mail.Send token is refused at SMTP), that the token's audience is " +
		"https://outlook.office365.com (scope https://outlook.office365.com/.default), that " +
		"New-ServicePrincipal was given the Enterprise application's object id (not the App " +
		"registration's), and that the service principal may use the mailbox (Add-MailboxPermission " +
		"-AccessRights FullAccess, or an RBAC 'Application SMTP.SendAsApp' role assignment); " +
		"'exo-sendmail check' shows the token's claims"
	remedySMTPAuthDisabled = "SMTP AUTH is disabled for the tenant or mailbox: " +
		"Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false " +
		"(or Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant)"
	remedyLogon = "the app may not log on to mailbox %s: Add-MailboxPermission -Identity %s " +
		"-User <service principal id> -AccessRights FullAccess, and check that mailbox names it"
	remedyBasicAuth = "the server treated the login as basic authentication: check that server " +
		"points at Exchange Online submission (smtp.office365.com:587)"
	remedyBug   = "exo-sendmail sent mail before authenticating: this is a bug, please report it"
	remedyQuota = "the sending mailbox %s is over its storage quota (sent mail is kept in " +
		"Sent Items): an administrator must free space or raise the quota"
	remedyIP = "Exchange Online does not accept traffic from this host's IP address: " +
		"contact Microsoft support to delist it"
	remedyThrottle = "Exchange throttles mailbox %s: wait before sending more"
)

// classify turns a negative SMTP reply into a classified error. mailbox is
// the account's mailbox, named in remedies.
func classify(st stage, r Reply, mailbox string) *failure.Error {
	e := &failure.Error{Reply: r.String(), Err: r.smtpError()}
	e.Class, e.Remedy = classOf(st, r, mailbox)
	return e
}

func classOf(st stage, r Reply, mailbox string) (failure.Class, string) {
	text := strings.ToLower(r.text())
	enh := r.Enhanced
	switch {
	// Send-As refused: the message's fault, whatever the wording.
	case strings.Contains(text, "sendasdenied"), enh == "5.7.60":
		return failure.Permanent, ""
	case r.Code == 535 && enh == "5.7.139":
		return failure.Config, fmt.Sprintf(remedySMTPAuthDisabled, mailbox)
	case r.Code == 535:
		return failure.Config, fmt.Sprintf(remedyAuth, mailbox)
	case r.Code == 430 && enh == "4.2.0", strings.Contains(text, "mailbox logon failure"):
		return failure.Config, fmt.Sprintf(remedyLogon, mailbox, mailbox)
	case enh == "5.7.30":
		return failure.Config, remedyBasicAuth
	case enh == "5.7.57":
		return failure.Config, remedyBug
	case strings.Contains(text, "submissionquotaexceeded"):
		return failure.Throttled, fmt.Sprintf(remedyThrottle, mailbox)
	case st == stageData && (enh == "5.2.2" || strings.Contains(text, "quotaexceededexception")):
		return failure.Config, fmt.Sprintf(remedyQuota, mailbox)
	case r.Code == 550 && isThrottleCode(enh):
		return failure.Throttled, fmt.Sprintf(remedyThrottle, mailbox)
	case enh == "4.3.2" && (r.Code == 432 || r.Code == 421):
		return failure.Throttled, fmt.Sprintf(remedyThrottle, mailbox)
	case r.Code == 432, r.Code == 452 && enh == "4.5.3":
		return failure.Throttled, ""
	case enh == "4.7.500":
		// "Server busy. Please try again later": Exchange's rate limiting;
		// every message would get it now, so the mailbox waits.
		return failure.Throttled, fmt.Sprintf(remedyThrottle, mailbox)
	case enh == "5.7.708":
		return failure.Permanent, remedyIP
	case r.Code >= 500 && st == stageConnect:
		// Nothing this message could change: the account cannot submit at all.
		return failure.Config, ""
	case r.Code >= 500:
		return failure.Permanent, ""
	}
	return failure.Temporary, ""
}

// isThrottleCode reports 5.2.251 to 5.2.255 (continuous-error throttling).
func isThrottleCode(enh string) bool {
	n, ok := strings.CutPrefix(enh, "5.2.")
	if !ok {
		return false
	}
	v, err := strconv.Atoi(n)
	return err == nil && v >= 251 && v <= 255
}
