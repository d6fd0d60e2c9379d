// Package binary builds the sendmail that the benchmarks measure.
package binary

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build builds ./cmd/sendmail into dir as the Makefile and the packages
// build it (static, stripped, -trimpath) and returns its path. It must run
// from the repository root.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "sendmail")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/sendmail")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sendmail (run from the repository root): %v\n%s", err, out)
	}
	return bin, nil
}
