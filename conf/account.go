package conf

import (
	"fmt"
	"net/mail"
	"path"
	"strings"

	"github.com/BurntSushi/toml"
)

// IsGUID reports whether s has the form of a GUID (a client ID, a tenant
// ID, or the Secret ID administrators paste instead of the secret's value).
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// Clouds are the Entra/Exchange environments whose endpoints we know.
var Clouds = []string{"global", "usgov", "usgov-dod", "china"}

// account validates the i-th [[account]] and applies its defaults.
func (v *validator) account(i int, fa fileAccount, abs func(string) string) Account {
	fail := func(key, msg string) {
		v.failAt(v.line(toml.Key{"account", key}, i), fmt.Sprintf("account %s: %s", accountLabel(i, fa.Name), msg))
	}
	a := Account{
		Name: fa.Name, Tenant: fa.Tenant, ClientID: fa.ClientID,
		ClientSecretFile: abs(fa.ClientSecretFile), CertificateFile: abs(fa.CertificateFile),
		PrivateKeyFile: abs(fa.PrivateKeyFile), CertificatePasswordFile: abs(fa.CertificatePasswordFile),
		Mailbox: strings.TrimSpace(fa.Mailbox), Transport: fa.Transport,
		Senders: fa.Senders, SendAs: fa.SendAs, Cloud: fa.Cloud,
		TokenURL: fa.TokenURL, SMTPServer: fa.SMTPServer, GraphURL: fa.GraphURL,
		CAFile: abs(fa.CAFile), SMTPFallback: fa.SMTPFallback,
		MaxConnections: intOr(fa.MaxConnections, 3), MessagesPerMinute: intOr(fa.MessagesPerMinute, 30),
		RecipientsPerDay: intOr(fa.RecipientsPerDay, 10000), RecipientsPerMessage: intOr(fa.RecipientsPerMessage, 500),
	}
	if a.Name == "" {
		a.Name = fmt.Sprintf("account%d", i+1)
		fail("", `needs a name, e.g. name = "contoso"`)
	}
	if a.Tenant == "" && a.TokenURL == "" {
		fail("tenant", `needs tenant = "contoso.onmicrosoft.com" (the tenant's domain or directory ID)`)
	}
	if strings.EqualFold(a.Tenant, "common") || strings.EqualFold(a.Tenant, "organizations") || strings.EqualFold(a.Tenant, "consumers") {
		fail("tenant", "tenant must be the tenant's own domain or directory ID: client credentials are refused on /"+a.Tenant)
	}
	if !IsGUID(a.ClientID) {
		fail("client_id", "client_id must be the application (client) ID, a GUID like 00000000-0000-0000-0000-000000000000")
	}
	switch {
	case a.ClientSecretFile != "" && a.CertificateFile != "":
		fail("certificate_file", "give either client_secret_file or certificate_file, not both")
	case a.ClientSecretFile == "" && a.CertificateFile == "":
		fail("", "needs a credential: client_secret_file, or certificate_file (+ private_key_file unless it is a .pfx)")
	case a.PrivateKeyFile != "" && isPKCS12(a.CertificateFile):
		fail("private_key_file", "a .pfx/.p12 certificate_file holds its key: remove private_key_file")
	}
	if addr, err := mail.ParseAddress(a.Mailbox); err != nil || addr.Address != a.Mailbox || !strings.Contains(a.Mailbox, "@") {
		fail("mailbox", fmt.Sprintf("mailbox %q must be the address of the mailbox the app sends as, e.g. alerts@contoso.com", a.Mailbox))
	}
	switch a.Transport {
	case "":
		a.Transport = "smtp"
	case "smtp", "graph":
	default:
		fail("transport", fmt.Sprintf(`transport %q: want "smtp" or "graph"`, a.Transport))
	}
	if a.Cloud == "" {
		a.Cloud = "global"
	} else if !contains(Clouds, a.Cloud) {
		fail("cloud", fmt.Sprintf("cloud %q: want one of %s", a.Cloud, strings.Join(Clouds, ", ")))
	}
	for _, u := range []struct{ key, val string }{{"token_url", a.TokenURL}, {"graph_url", a.GraphURL}} {
		if u.val != "" && !strings.HasPrefix(u.val, "https://") {
			fail(u.key, u.key+" must be an https:// URL (TLS is always verified; add ca_file for a private CA)")
		}
	}
	if a.SMTPServer != "" && !strings.Contains(a.SMTPServer, ":") {
		a.SMTPServer += ":587"
	}
	for _, p := range append(append([]string{}, a.Senders...), a.SendAs...) {
		if _, err := path.Match(strings.ToLower(p), ""); err != nil || p == "" {
			fail("senders", fmt.Sprintf("bad address pattern %q", p))
		}
	}
	for _, l := range []struct {
		key string
		n   int
	}{{"max_connections", a.MaxConnections}, {"messages_per_minute", a.MessagesPerMinute}, {"recipients_per_day", a.RecipientsPerDay}, {"recipients_per_message", a.RecipientsPerMessage}} {
		if l.n < 0 {
			fail(l.key, l.key+" must not be negative (0 turns the limit off)")
		}
	}
	if a.MaxConnections == 0 {
		fail("max_connections", "max_connections must be at least 1")
	}
	return a
}

func accountLabel(i int, name string) string {
	if name != "" {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("#%d", i+1)
}

func isPKCS12(p string) bool {
	p = strings.ToLower(p)
	return strings.HasSuffix(p, ".pfx") || strings.HasSuffix(p, ".p12")
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// AccountFor returns the account that delivers mail from sender: the first
// whose senders patterns match, else the only account, else the first
// account without a senders list (the default). nil when none fits.
func (c *Config) AccountFor(sender string) *Account {
	local, domain := c.split(sender)
	for i := range c.Accounts {
		for _, p := range c.Accounts[i].Senders {
			if matchSender(strings.ToLower(p), local, domain, strings.ToLower(c.Hostname)) {
				return &c.Accounts[i]
			}
		}
	}
	if len(c.Accounts) == 1 {
		return &c.Accounts[0]
	}
	for i := range c.Accounts {
		if len(c.Accounts[i].Senders) == 0 {
			return &c.Accounts[i]
		}
	}
	return nil
}

// Account returns the account with this name, or nil.
func (c *Config) Account(name string) *Account {
	for i := range c.Accounts {
		if c.Accounts[i].Name == name {
			return &c.Accounts[i]
		}
	}
	return nil
}

// matchSender matches a senders pattern: "root" matches the local user root
// (bare or @hostname), "*@web1.contoso.com" and "*" match addresses; a
// bare local sender counts as local@hostname.
func matchSender(p, local, domain, hostname string) bool {
	if !strings.Contains(p, "@") && p != "*" {
		ok, _ := path.Match(p, local)
		return ok && domain == ""
	}
	if domain == "" {
		domain = hostname
	}
	ok, _ := path.Match(p, local+"@"+domain)
	return ok
}

// MatchAddress reports whether addr matches one of the patterns
// ("*@contoso.com", "noreply@contoso.com"), case-insensitively.
func MatchAddress(patterns []string, addr string) bool {
	addr = strings.ToLower(addr)
	for _, p := range patterns {
		if ok, _ := path.Match(strings.ToLower(p), addr); ok {
			return true
		}
	}
	return false
}

// split returns the lower-case local part and domain of addr; the domain is
// "" for a local address (no domain, or this host's name, or localhost).
func (c *Config) split(addr string) (local, domain string) {
	addr = strings.ToLower(strings.Trim(strings.TrimSpace(addr), "<>"))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr, ""
	}
	local, domain = addr[:at], addr[at+1:]
	if domain == strings.ToLower(c.Hostname) || domain == "localhost" || domain == "localhost.localdomain" {
		domain = ""
	}
	return local, domain
}
