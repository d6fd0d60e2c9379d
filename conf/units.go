package conf

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ParseSize reads "35MB", "10 MiB", "512k" or a plain number of bytes.
// KB/MB/GB are decimal (Exchange's 35 MB limit), KiB/MiB/GiB binary.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), " ", ""))
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], t[i:]
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || n <= 0 || n*mult > 1<<40 {
		return 0, fmt.Errorf("size %q: want a positive size such as 35MB, 512KiB or 1000000", s)
	}
	return int64(n * mult), nil
}

// ParseDuration reads Go durations ("90s", "5m", "1h30m") and days ("5d",
// "1d12h"), which Go's own parser lacks.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("duration %q: bad day count", s)
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return days + d, nil
}

// fqdn returns this host's fully qualified name without asking DNS (which
// would cost every sendmail call a round trip): the kernel's host name, or
// its long form from /etc/hosts.
func fqdn() string {
	short, err := os.Hostname()
	if err != nil || short == "" {
		return "localhost"
	}
	if strings.Contains(short, ".") {
		return short
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return short
	}
	for _, line := range strings.Split(string(hosts), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, f := range fields[1:] {
			if f == short {
				for _, g := range fields[1:] {
					if strings.HasPrefix(g, short+".") {
						return g
					}
				}
			}
		}
	}
	return short
}
