package main

import (
	"fmt"
	"os"
)

// runAdmin is the exo-sendmail face: check, queue, token, emulator, version.
// args are the arguments after the program name.
func runAdmin(args []string) int {
	fmt.Fprintln(os.Stderr, "exo-sendmail: administrator commands are not built yet")
	return exSoftware
}
