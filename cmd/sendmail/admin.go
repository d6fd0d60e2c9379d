package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/queue"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const adminUsage = `usage: exo-sendmail [-C config] COMMAND [ARGS]

commands:
  check [--account NAME] [--send-to ADDR]   test the configuration against Exchange Online
  queue list                                list the queue (as mailq)
  queue show ID                             one message: envelope, state, headers
  queue delete ID...                        remove messages without delivering them
  queue hold ID...                          keep messages queued but do not attempt them
  queue release ID...                       undo hold; attempt at the next run
  queue retry [ID...]                       attempt now (all when no ID is given)
  emulator [--dir DIR] [--limits]           run the Exchange Online emulator
  version                                   print the version
`

// runAdmin is the exo-sendmail face. args are the arguments after the
// program name.
func runAdmin(args []string) int {
	// The administrator's face is the same setgid binary; none of its
	// commands needs the spool group, so it never keeps it.
	dropSetgid()
	fs := flag.NewFlagSet("exo-sendmail", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("C", "", "configuration file")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return exUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "version", "--version":
		fmt.Println("exo-sendmail", version)
		return exOK
	case "help", "-h", "--help":
		fmt.Print(adminUsage)
		return exOK
	case "emulator":
		return emulator.Main(rest, os.Stdout, os.Stderr)
	}
	cfg, err := conf.Load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "exo-sendmail: %v\n", err)
		return exConfig
	}
	switch cmd {
	case "check":
		// As the service user: its token cache, its view of the secrets. A
		// configuration whose spool does not exist yet is checked as the
		// caller (trying a new set-up).
		if _, err := os.Stat(cfg.SpoolDir); err == nil {
			if code := becomeSpoolOwner(cfg, "check the accounts"); code != exOK {
				return code
			}
		}
		return runCheck(cfg, rest)
	case "queue":
		return runQueueCommand(cfg, rest)
	}
	fmt.Fprintf(os.Stderr, "exo-sendmail: unknown command %q\n%s", cmd, adminUsage)
	return exUsage
}

func runQueueCommand(cfg *conf.Config, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return exUsage
	}
	if code := becomeSpoolOwner(cfg, "manage the queue"); code != exOK {
		return code
	}
	spool := queue.Open(cfg.SpoolDir)
	// Mail still in drop/ is as much the administrator's as queued mail.
	if _, _, err := spool.Pickup(); err != nil {
		return failQueue("exo-sendmail: cannot pick up new mail", err)
	}
	sub, ids := args[0], args[1:]
	switch sub {
	case "list":
		return runMailq(cfg)
	case "show":
		if len(ids) != 1 {
			fmt.Fprintln(os.Stderr, "usage: exo-sendmail queue show ID")
			return exUsage
		}
		if err := showEntry(os.Stdout, cfg, ids[0]); err != nil {
			fmt.Fprintf(os.Stderr, "exo-sendmail: %v\n", err)
			return exNoInput
		}
		return exOK
	case "delete", "hold", "release":
		if len(ids) == 0 {
			fmt.Fprintf(os.Stderr, "usage: exo-sendmail queue %s ID...\n", sub)
			return exUsage
		}
	case "retry":
		if len(ids) == 0 {
			all, err := spool.IDs()
			if err != nil {
				return failQueue("exo-sendmail: cannot read the queue", err)
			}
			ids = all
		}
		// An explicit retry also lifts the accounts' pauses.
		for _, a := range cfg.Accounts {
			os.Remove(filepath.Join(cfg.StateDir, "accounts", a.Name+".json"))
		}
	default:
		fmt.Fprintf(os.Stderr, "exo-sendmail: unknown queue command %q\n%s", sub, adminUsage)
		return exUsage
	}
	code := exOK
	for _, id := range ids {
		if err := queueAction(spool, sub, id); err != nil {
			fmt.Fprintf(os.Stderr, "exo-sendmail: %s %s: %v\n", sub, id, err)
			code = exUnavailable
			continue
		}
		if sub != "retry" || len(args) > 1 {
			fmt.Printf("%s: %s\n", id, map[string]string{"delete": "deleted", "hold": "held", "release": "released", "retry": "due now"}[sub])
		}
	}
	spool.RequestRescan(sub == "retry") // tell a running flusher
	return code
}

func queueAction(spool *queue.Spool, action, id string) error {
	switch action {
	case "delete":
		e, err := spool.Claim(id)
		if errors.Is(err, queue.ErrBusy) {
			return errors.New("being delivered right now; try again in a moment")
		}
		if err != nil {
			return err
		}
		defer e.Close()
		return spool.Remove(id)
	case "hold", "release":
		return spool.SetHeld(id, action == "hold")
	case "retry":
		return spool.Update(id, func(st *queue.State) { st.NextAttempt = time.Time{} })
	}
	return nil
}
