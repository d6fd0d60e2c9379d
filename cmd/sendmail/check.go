package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/exo-sendmail/exo-sendmail/check"
	"github.com/exo-sendmail/exo-sendmail/conf"
)

const checkUsage = "usage: exo-sendmail check [--account NAME] [--send-to ADDR]\n"

// runCheck is `exo-sendmail check`: exit 0 only when every step of every
// account passed; 75 when only temporary failures happened; 78 otherwise.
func runCheck(cfg *conf.Config, args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	account := fs.String("account", "", "check only this account")
	sendTo := fs.String("send-to", "", "send a test message to this address")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(checkUsage)
			return exOK
		}
		fmt.Fprint(os.Stderr, checkUsage)
		return exUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	outcome, err := check.Run(ctx, cfg, check.Options{Account: *account, SendTo: *sendTo, Out: os.Stdout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "exo-sendmail check: %v\n", err)
		return exUsage
	}
	switch outcome {
	case check.Passed:
		return exOK
	case check.TempFailed:
		return exTempFail
	}
	return exConfig
}
