package atomicfile

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, durable := range []bool{true, false} {
		if err := Write(p, []byte("first"), 0o600, durable); err != nil {
			t.Fatal(err)
		}
		if err := Write(p, []byte("second"), 0o640, durable); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		st, _ := os.Stat(p)
		if string(b) != "second" || st.Mode().Perm() != 0o640 {
			t.Errorf("durable=%v: %q mode %v", durable, b, st.Mode())
		}
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("temporary files left: %v", names)
	}
}

// TestConcurrentWritersNeverMix: each reader sees one writer's whole
// content, never a mix or a truncated file.
func TestConcurrentWritersNeverMix(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for i := range a {
		a[i], b[i] = 'a', 'b'
	}
	Write(p, a, 0o600, false)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				data := a
				if i%2 == 1 {
					data = b
				}
				if err := Write(p, data, 0o600, false); err != nil {
					t.Error(err)
				}
				got, _ := os.ReadFile(p)
				if len(got) != len(a) || (got[0] != got[len(got)-1]) {
					t.Errorf("a reader saw a mixed or short file (%d bytes)", len(got))
				}
			}
		}()
	}
	wg.Wait()
}
