//go:build linux

package vmmproc

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// TestStartJailed: a jailed process sees the paths it was given (a file
// of its own dir read-write, a read-only one) and nothing else; the
// agent's threads keep their own mount namespace and root however many
// jails are made (the thread that builds one is discarded, and is never
// the main thread, whose namespaces /proc/self/ns shows).
func TestStartJailed(t *testing.T) {
	requireRoot(t)
	var before syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &before); err != nil {
		t.Fatal(err)
	}
	own := t.TempDir()
	ro := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(ro, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	hidden := filepath.Join(t.TempDir(), "hidden")
	if err := os.WriteFile(hidden, []byte("h"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleep := "/bin/sleep"
	if _, err := os.Stat(sleep); err != nil {
		t.Skipf("needs %s: %v", sleep, err)
	}
	for i := range 8 {
		p, err := Start(Command{Path: sleep, Args: []string{"60"}, Jail: &Jail{
			ReadOnly:  []string{"/usr", "/lib", "/lib64", "/bin", ro},
			ReadWrite: []string{own},
			Devices:   []string{"/dev/null"},
		}}, testLog(t))
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		root := "/proc/" + strconv.Itoa(p.PID()) + "/root"
		if _, err := os.Stat(root + ro); err != nil {
			t.Errorf("read-only path missing in the jail: %v", err)
		}
		if err := os.WriteFile(root+ro, []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write to the read-only path: %v, want EROFS", err)
		}
		if err := os.WriteFile(root+filepath.Join(own, "f"), []byte("x"), 0o644); err != nil {
			t.Errorf("write to the read-write dir: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(own, "f")); err != nil || string(b) != "x" {
			t.Errorf("the host does not see the jail's write: %q, %v", b, err)
		}
		for _, gone := range []string{hidden, "/etc", "/proc", "/root", "/dev/kvm"} {
			if _, err := os.Lstat(root + gone); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s visible in the jail: %v", gone, err)
			}
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = p.Release()
	}
	var after syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino {
		t.Fatal("the test process's main thread was left in a jail's mount namespace")
	}
	if _, err := os.Stat(hidden); err != nil {
		t.Fatalf("the agent's own view lost a file: %v", err)
	}
}
