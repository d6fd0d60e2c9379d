package emulator

import (
	"fmt"
	"strconv"
	"strings"
)

// AccountTOML returns an [[account]] block of the project's sendmail.toml
// that sends through e as the app clientID on behalf of mailbox: its
// tenant, token_url, smtp_server, graph_url and ca_file are e's.
// secretFile becomes client_secret_file ("" leaves it out, for an app that
// signs in with a certificate) and sendAs, if any, send_as. The block ends
// with a newline, so a caller may append more keys of the same account
// (transport, limits) after it.
//
// Values are quoted with %q, a valid TOML basic string for the ASCII paths,
// URLs and addresses of tests and benchmarks; sendmailTOML, which writes
// paths an administrator chose, uses the TOML encoder instead.
func (e *Emulator) AccountTOML(name, clientID, secretFile, mailbox string, sendAs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[[account]]\nname = %q\ntenant = %q\nclient_id = %q\n", name, e.Tenant, clientID)
	if secretFile != "" {
		fmt.Fprintf(&b, "client_secret_file = %q\n", secretFile)
	}
	fmt.Fprintf(&b, "mailbox = %q\n", mailbox)
	if len(sendAs) > 0 {
		quoted := make([]string, len(sendAs))
		for i, a := range sendAs {
			quoted[i] = strconv.Quote(a)
		}
		fmt.Fprintf(&b, "send_as = [%s]\n", strings.Join(quoted, ", "))
	}
	fmt.Fprintf(&b, "token_url = %q\nsmtp_server = %q\ngraph_url = %q\nca_file = %q\n", e.TokenURL, e.SMTPAddr, e.GraphURL, e.CAFile)
	return b.String()
}
