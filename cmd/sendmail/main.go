// Command sendmail is exo-sendmail's one binary. Its name selects the face:
// sendmail (the sendmail command line), mailq (sendmail -bp), newaliases
// (sendmail -bi) and exo-sendmail (the administrator's commands).
//
// Callers may start it with standard descriptors closed (mailutils closes
// stdout and stderr): the Go runtime opens /dev/null on any of fds 0, 1 and
// 2 that is closed before main runs (runtime.checkfds), so an error message
// can neither fail nor land in a file that happened to get fd 2. A caller
// may also hand us a pipe it no longer reads: SIGPIPE is ignored, so that
// a warning written there fails quietly instead of killing the submission.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/exo-sendmail/exo-sendmail/conf"
)

func main() {
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args))
}

func run(argv []string) int {
	face, start := "sendmail", modeSubmit
	if len(argv) > 0 {
		switch filepath.Base(argv[0]) {
		case "exo-sendmail":
			return runAdmin(argv[1:])
		case "mailq":
			face, start = "mailq", modeMailq
		case "newaliases":
			face, start = "newaliases", modeAliases
		}
		argv = argv[1:]
	}
	c, err := parseArgs(argv, start)
	for _, w := range c.warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", face, w)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", face, err)
		return exUsage
	}
	// A user who is not root and chooses the configuration (-C or
	// $EXO_SENDMAIL_CONFIG) loses the spool group of a setgid install first:
	// a file of theirs must not steer the group's rights (another
	// spool_dir, a file only the group may read).
	if (c.config != "" || os.Getenv("EXO_SENDMAIL_CONFIG") != "") && os.Getuid() != 0 {
		dropSetgid()
	}
	cfg, err := conf.Load(c.config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", face, err)
		return exConfig
	}
	switch c.mode {
	case modeMailq:
		return runMailq(cfg)
	case modeAliases:
		return checkAliases(cfg, face)
	case modeVerify:
		return verify(cfg, c)
	case modeSMTP:
		return serveSMTP(cfg, c)
	case modeFlush:
		return runFlusher(cfg, false, c.interval, c.verbose)
	case modeDaemon:
		return runFlusher(cfg, true, 0, c.verbose)
	}
	return submit(cfg, c)
}

// checkAliases is newaliases / sendmail -bi: aliases live in the
// configuration and are read at delivery, so there is nothing to build;
// this validates them.
func checkAliases(cfg *conf.Config, face string) int {
	n, err := cfg.CheckAliases()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", face, err)
		return exConfig
	}
	fmt.Printf("aliases: %d entries OK\n", n)
	return exOK
}
