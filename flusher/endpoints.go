package flusher

import (
	"fmt"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// Endpoint is where an account's tokens come from and its mail goes, with
// the scope of each resource.
type Endpoint struct {
	TokenURL   string // the tenant's v2.0 token endpoint
	SMTPServer string // host:port of SMTP client submission
	SMTPScope  string // "<Exchange resource>/.default"
	GraphURL   string // Graph API root, e.g. https://graph.microsoft.com/v1.0
	GraphScope string // "<Graph resource>/.default"
}

// Endpoints returns the endpoints of account a: its cloud's, with the
// token_url, smtp_server and graph_url overrides applied. The scopes always
// follow the cloud: an override moves the endpoint, not the resource.
func Endpoints(a *conf.Account) (Endpoint, error) {
	name := a.Cloud
	if name == "" {
		name = "global"
	}
	cl, ok := clouds[name]
	if !ok {
		return Endpoint{}, &failure.Error{Class: failure.Config,
			Reply:  fmt.Sprintf("account %s: unknown cloud %q", a.Name, a.Cloud),
			Remedy: `set cloud to "global", "usgov", "usgov-dod" or "china"`}
	}
	ep := Endpoint{
		TokenURL: a.TokenURL, SMTPServer: a.SMTPServer, GraphURL: a.GraphURL,
		SMTPScope: cl.smtpScope, GraphScope: cl.graphScope,
	}
	if ep.TokenURL == "" {
		u, err := token.TokenURLFor(name, a.Tenant)
		if err != nil {
			return Endpoint{}, err
		}
		ep.TokenURL = u
	}
	if ep.SMTPServer == "" {
		ep.SMTPServer = cl.smtpServer
	}
	if ep.GraphURL == "" {
		ep.GraphURL = cl.graphURL
	}
	return ep, nil
}
