package token

import (
	"fmt"
	"strings"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// loginHosts are the Entra token hosts per cloud (exchange-online.md §1);
// tokens of one cloud are not accepted in another.
var loginHosts = map[string]string{
	"global":    "login.microsoftonline.com",
	"usgov":     "login.microsoftonline.us",
	"usgov-dod": "login.microsoftonline.us",
	"china":     "login.partner.microsoftonline.cn",
}

// TokenURLFor returns the v2.0 token endpoint of tenant (directory ID or
// verified domain) in cloud: global (also ""), usgov, usgov-dod or china.
func TokenURLFor(cloud, tenant string) (string, error) {
	if cloud == "" {
		cloud = "global"
	}
	host, ok := loginHosts[cloud]
	if !ok {
		return "", misconfigured(`set cloud to "global", "usgov", "usgov-dod" or "china"`, "unknown cloud %q", cloud)
	}
	switch strings.ToLower(tenant) {
	case "":
		return "", misconfigured(`set tenant to the directory ID or a verified domain, e.g. "contoso.onmicrosoft.com"`, "no tenant")
	case "common", "organizations", "consumers":
		class, remedy := Explain("9001023")
		return "", &failure.Error{Class: class, Reply: fmt.Sprintf("tenant %q cannot issue client-credentials tokens", tenant), Remedy: remedy}
	}
	for i, r := range tenant {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '.')
		if !ok || len(tenant) > 253 {
			return "", misconfigured(`set tenant to the directory ID (a GUID) or a verified domain, e.g. "contoso.onmicrosoft.com"`,
				"tenant %q is neither a directory ID nor a domain name", tenant)
		}
	}
	return "https://" + host + "/" + tenant + "/oauth2/v2.0/token", nil
}
