//go:build race

package transport

// The race detector makes byte-crunching (base64 of megabytes) many times
// slower; tests that move big messages move smaller ones under it.
const raceEnabled = true
