package qemu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/wrenn/wrenn/internal/testenv"
)

// TestJailedFileSystem: QEMU runs in a mount namespace of its own whose
// root holds only what it needs (its directory, kernel, memory file, the
// system's libraries read-only, a few devices). Host files around it (a
// neighbour sandbox's directory, /etc/passwd, /root, /var) do not exist
// there, the libraries cannot be written through it, and the host still
// drives QEMU through the sockets in its directory at their host paths.
func TestJailedFileSystem(t *testing.T) {
	testenv.RequireRoot(t)
	kernel := haltKernel(t)
	neighbour := sandboxDir(t)
	secret := filepath.Join(neighbour, "secret")
	if err := os.WriteFile(secret, []byte("neighbour's"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := haltSpec(t, kernel)
	spec.MemoryFile = filepath.Join(spec.Dir, "mem")
	spec.Net = nil
	m, err := testDriver(t).Boot(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)
	root := "/proc/" + strconv.Itoa(m.PID()) + "/root"

	var own, qemuNS syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &own); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/proc/"+strconv.Itoa(m.PID())+"/ns/mnt", &qemuNS); err != nil {
		t.Fatal(err)
	}
	if own.Ino == qemuNS.Ino {
		t.Fatal("qemu shares the agent's mount namespace")
	}

	for _, p := range []string{spec.Dir, filepath.Join(spec.Dir, "qmp.sock"), spec.Kernel, spec.MemoryFile, "/usr", "/dev/urandom", "/dev/null"} {
		if _, err := os.Stat(root + p); err != nil {
			t.Errorf("%s missing in the jail: %v", p, err)
		}
	}
	for _, p := range []string{secret, neighbour, "/etc/passwd", "/etc/shadow", "/root", "/home", "/var", "/run/netns", "/proc/1", "/sys/kernel"} {
		if _, err := os.Lstat(root + p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s visible in the jail (%v); want absent", p, err)
		}
	}
	entries, err := os.ReadDir(root + "/")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"usr": true, "lib": true, "lib64": true, "lib32": true, "libx32": true, "bin": true, "sbin": true,
		"etc": true, "dev": true}
	top := func(p string) string {
		for filepath.Dir(p) != "/" {
			p = filepath.Dir(p)
		}
		return p[1:]
	}
	allowed[top(spec.Dir)], allowed[top(kernel)] = true, true
	for _, e := range entries {
		if !allowed[e.Name()] {
			t.Errorf("unexpected /%s in the jail's root", e.Name())
		}
	}
	probe := root + "/usr/wrenn-jail-probe"
	if err := os.WriteFile(probe, nil, 0o600); !errors.Is(err, syscall.EROFS) {
		os.Remove(probe)
		t.Errorf("write to /usr through the jail: %v, want EROFS", err)
	}
	// The host-side QMP still works (a pause and resume round trip).
	ctx := context.Background()
	if err := m.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
}
