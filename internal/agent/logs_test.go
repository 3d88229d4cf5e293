package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestConsoleLog(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{cfg: Config{Dir: dir}, sandboxes: map[string]*sandbox{}}
	sbDir := m.sandboxDir("sb1")
	m.sandboxes["sb1"] = &sandbox{dir: sbDir}
	ctx := context.Background()

	if b, err := m.ConsoleLog(ctx, "sb1", 0); err != nil || len(b) != 0 {
		t.Fatalf("no log yet = %q, %v; want empty", b, err)
	}
	if err := os.MkdirAll(vmDir(sbDir), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(vmDir(sbDir), name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("console.log.1", "old-1\nold-2\n")
	write("console.log", "new-1\nnew-2\n")

	tests := []struct {
		name string
		n    int64
		want string
	}{
		{name: "within the current file", n: 6, want: "new-2\n"},
		{name: "the whole current file", n: 12, want: "new-1\nnew-2\n"},
		{name: "into the rotated file", n: 18, want: "old-2\nnew-1\nnew-2\n"},
		{name: "more than there is", n: 1000, want: "old-1\nold-2\nnew-1\nnew-2\n"},
		{name: "default", n: 0, want: "old-1\nold-2\nnew-1\nnew-2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := m.ConsoleLog(ctx, "sb1", tt.n)
			if err != nil || string(b) != tt.want {
				t.Errorf("ConsoleLog(%d) = %q, %v; want %q", tt.n, b, err, tt.want)
			}
		})
	}

	t.Run("capped", func(t *testing.T) {
		write("console.log", strings.Repeat("x", MaxConsoleTail+10))
		b, err := m.ConsoleLog(ctx, "sb1", MaxConsoleTail*4)
		if err != nil || len(b) != MaxConsoleTail {
			t.Errorf("len = %d, %v; want %d", len(b), err, MaxConsoleTail)
		}
	})
	t.Run("unknown sandbox", func(t *testing.T) {
		if _, err := m.ConsoleLog(ctx, "nope", 0); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("err = %v, want NotFound", err)
		}
	})
}

// The VMM owns vm/ and may plant a symbolic link where its console log
// should be (issue 11): the agent must not read the link's target.
func TestConsoleLogRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{cfg: Config{Dir: dir}, sandboxes: map[string]*sandbox{}}
	sbDir := m.sandboxDir("sb1")
	m.sandboxes["sb1"] = &sandbox{dir: sbDir}
	if err := os.MkdirAll(vmDir(sbDir), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "host.key")
	if err := os.WriteFile(secret, []byte("PRIVATE KEY"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"console.log", "console.log.1"} {
		t.Run(name, func(t *testing.T) {
			for _, n := range []string{"console.log", "console.log.1"} {
				_ = os.Remove(filepath.Join(vmDir(sbDir), n))
			}
			if err := os.Symlink(secret, filepath.Join(vmDir(sbDir), name)); err != nil {
				t.Fatal(err)
			}
			b, err := m.ConsoleLog(context.Background(), "sb1", 0)
			if strings.Contains(string(b), "PRIVATE") {
				t.Fatalf("console log followed the link: %q", b)
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("err = %v; want failed precondition", err)
			}
		})
	}
}
