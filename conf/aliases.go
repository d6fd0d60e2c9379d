package conf

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// maxAliasDepth bounds alias chains so that a loop (a: b, b: a) ends.
const maxAliasDepth = 10

// Resolve returns the addresses that addr becomes: a local name (no domain,
// or this host's name) is replaced by its aliases, recursively: [aliases]
// first, then aliases_file, then the "*" catch-all. A local name with no
// alias becomes name@hostname. Other addresses are returned as they are.
func (c *Config) Resolve(addr string) []string {
	var out []string
	seen := map[string]bool{}
	c.resolve(strings.TrimSpace(addr), map[string]bool{}, seen, &out)
	return out
}

// resolve expands addr; path holds the local names being expanded, so a
// cycle (root: admin, admin: root) delivers to the name it returns to.
func (c *Config) resolve(addr string, path map[string]bool, seen map[string]bool, out *[]string) {
	add := func(a string) {
		if k := strings.ToLower(a); !seen[k] {
			seen[k] = true
			*out = append(*out, a)
		}
	}
	local, domain := c.split(addr)
	if domain != "" {
		add(strings.Trim(addr, "<>"))
		return
	}
	targets := c.lookup(local)
	if targets == nil || path[local] || len(path) >= maxAliasDepth {
		add(local + "@" + c.Hostname)
		return
	}
	path[local] = true
	for _, t := range targets {
		c.resolve(t, path, seen, out)
	}
	delete(path, local)
}

// lookup finds the alias of a local name, nil when it has none.
func (c *Config) lookup(local string) []string {
	if t, ok := c.aliases[local]; ok {
		return t
	}
	file, _ := c.readAliasesFile()
	if t, ok := file[local]; ok {
		return supported(t)
	}
	if t, ok := c.aliases["*"]; ok {
		return t
	}
	if t, ok := file["*"]; ok {
		return supported(t)
	}
	return nil
}

// supported drops /etc/aliases targets that a relay cannot deliver to:
// pipes, files and :include: lists (CheckAliases reports them).
func supported(targets []string) []string {
	var out []string
	for _, t := range targets {
		if unsupportedTarget(t) == "" {
			out = append(out, t)
		}
	}
	if out == nil {
		return nil
	}
	return out
}

func unsupportedTarget(t string) string {
	switch {
	case strings.HasPrefix(t, "|"):
		return "pipes to commands are not supported (exo-sendmail only relays to Exchange Online)"
	case strings.HasPrefix(t, "/"):
		return "delivery to files is not supported"
	case strings.HasPrefix(strings.ToLower(t), ":include:"):
		return ":include: lists are not supported"
	}
	return ""
}

func checkAlias(name string, targets []string) string {
	if name == "" || strings.ContainsAny(name, " \t\r\n,:") {
		return fmt.Sprintf("alias name %q: want a local name such as root", name)
	}
	if len(targets) == 0 {
		return fmt.Sprintf("alias %q has no target address", name)
	}
	for _, t := range targets {
		if why := unsupportedTarget(t); why != "" {
			return fmt.Sprintf("alias %q -> %q: %s", name, t, why)
		}
		if strings.ContainsAny(t, " \t\r\n<>") {
			return fmt.Sprintf("alias %q -> %q: not an address", name, t)
		}
	}
	return ""
}

// readAliasesFile parses aliases_file once (/etc/aliases format: "name:
// target, target", continuation lines start with white space, # comments).
func (c *Config) readAliasesFile() (map[string][]string, error) {
	if c.fileRead || c.AliasesFile == "" {
		return c.fileAliases, c.fileErr
	}
	c.fileRead = true
	src, err := os.ReadFile(c.AliasesFile)
	if err != nil {
		c.fileErr = &Error{File: c.AliasesFile, Msg: "cannot read aliases_file: " + errText(err)}
		return nil, c.fileErr
	}
	c.fileAliases, c.fileLines, c.fileErr = parseAliases(c.AliasesFile, src)
	return c.fileAliases, c.fileErr
}

func parseAliases(path string, src []byte) (aliases map[string][]string, lines map[string]int, err error) {
	aliases, lines = map[string][]string{}, map[string]int{}
	var firstErr error
	name := ""
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		if i := strings.IndexByte(raw, '#'); i >= 0 {
			raw = raw[:i]
		}
		if strings.TrimSpace(raw) == "" {
			continue
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if name == "" {
				firstErr = firstOf(firstErr, &Error{File: path, Line: n, Msg: "continuation line without an alias before it"})
				continue
			}
			aliases[name] = append(aliases[name], splitList(raw)...)
			continue
		}
		colon := strings.IndexByte(raw, ':')
		if colon <= 0 {
			firstErr = firstOf(firstErr, &Error{File: path, Line: n, Msg: fmt.Sprintf("%q: want \"name: address, address\"", strings.TrimSpace(raw))})
			name = ""
			continue
		}
		name = strings.ToLower(strings.TrimSpace(raw[:colon]))
		lines[name] = n
		aliases[name] = append(aliases[name], splitList(raw[colon+1:])...)
	}
	if err := sc.Err(); err != nil {
		firstErr = firstOf(firstErr, &Error{File: path, Msg: err.Error()})
	}
	return aliases, lines, firstErr
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// CheckAliases validates [aliases] and aliases_file (newaliases, -bi). It
// returns the number of aliases and the first problem found; targets that
// cannot be relayed (pipes, files) are reported, not silently dropped.
func (c *Config) CheckAliases() (int, error) {
	n := len(c.aliases)
	file, err := c.readAliasesFile()
	if err != nil {
		return n, err
	}
	for name, targets := range file {
		n++
		if why := checkAlias(name, targets); why != "" {
			return n, &Error{File: c.AliasesFile, Line: c.fileLines[name], Msg: why}
		}
	}
	return n, nil
}
