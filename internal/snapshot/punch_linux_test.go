package snapshot

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func punchHole(t testing.TB, f *os.File, off, n int64) {
	t.Helper()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		t.Skipf("needs hole punching on %s: %v", f.Name(), err)
	}
}
