package tailfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int64]string{4: "6789", 10: "0123456789", 50: "0123456789"} {
		got, err := Read(p, n)
		if err != nil || string(got) != want {
			t.Errorf("Read(%d) = %q, %v; want %q", n, got, err, want)
		}
	}
	if got, err := Read(filepath.Join(t.TempDir(), "none"), 10); err != nil || len(got) != 0 {
		t.Errorf("missing file: %q, %v; want empty", got, err)
	}
}
