// Package crashtest proves the flusher's crash safety against the Exchange
// Online emulator: the built sendmail binary runs the queue as a subprocess
// (`sendmail -q`, `sendmail -bd`) and is killed with SIGKILL at random
// points while the emulator drops connections, over hundreds of messages.
// The tests count every delivered copy by its Message-ID: nothing may be
// lost, and a message may arrive twice only in the one window design.md
// allows (the server's 250 arrived, or was lost, but the state was not yet
// written). Two flushers running at once must never deliver a message
// twice.
//
// The package holds tests only: go test ./crashtest/
package crashtest
