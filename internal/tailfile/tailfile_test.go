package tailfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
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

// A log in a directory another user owns (the VMM's) may be replaced by a
// symbolic link to a secret, or by a FIFO: Read must neither disclose the
// secret nor hang.
func TestReadRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "console.log")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	got, err := Read(link, 1024)
	if strings.Contains(string(got), "secret") {
		t.Fatalf("Read followed the link: %q", got)
	}
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("symlink: err = %v; want failed precondition", err)
	}

	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Read(fifo, 1024); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("fifo: err = %v; want failed precondition", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read blocked on a FIFO")
	}
}
