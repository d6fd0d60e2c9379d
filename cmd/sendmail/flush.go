package main

import (
	"fmt"
	"os"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
)

// runFlusher runs the queue: once (-q), every interval (-q30m) or as the
// foreground daemon (-bd).
func runFlusher(cfg *conf.Config, daemon bool, interval time.Duration, verbose bool) int {
	fmt.Fprintln(os.Stderr, "sendmail: the flusher is not built yet; the message stays queued")
	return exTempFail
}

// ensureFlusher makes sure a flusher will deliver what was just queued
// (single-user mode: start a detached one when none holds the lock).
func ensureFlusher(cfg *conf.Config) {}

// runMailq lists the queue (mailq, sendmail -bp).
func runMailq(cfg *conf.Config) int {
	fmt.Fprintln(os.Stderr, "mailq: not built yet")
	return exSoftware
}
