package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wrenn/wrenn/internal/vmm"
)

// TestBackingChain: the jail carries every image under an overlay, as
// qemu-img records them (absolute, or relative to the naming image's
// directory), and a raw base ends the chain.
func TestBackingChain(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("needs qemu-img to make qcow2 chains")
	}
	dir := t.TempDir()
	for _, d := range []string{"base", "mid", "top"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(dir, "base", "rootfs.ext4")
	mid := filepath.Join(dir, "mid", "disk.qcow2")
	top := filepath.Join(dir, "top", "rootfs.qcow2")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, mid},
		// Relative: QEMU resolves it against top's directory.
		{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../mid/disk.qcow2", top},
	} {
		if out, err := exec.Command(qemuImg, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	got, err := backingChain(top)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{mid, base}; !slices.Equal(got, want) {
		t.Fatalf("backingChain = %q, want %q", got, want)
	}
	if got, err := backingChain(base); err != nil || len(got) != 0 {
		t.Fatalf("backingChain(raw) = %q, %v; want none", got, err)
	}

	spec := vmm.Spec{Dir: filepath.Join(dir, "top"), Kernel: base, RootDisk: vmm.Disk{Path: top, Format: "qcow2"},
		MemoryFile: filepath.Join(dir, "mem"), Net: &vmm.NetDevice{TAP: "tap0"}}
	j, err := jailFor(spec, "/usr/bin/true", AccelKVM)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mid, base} {
		if !slices.Contains(j.ReadOnly, p) {
			t.Errorf("jail read-only paths %q lack %s", j.ReadOnly, p)
		}
	}
	if !slices.Contains(j.ReadWrite, spec.Dir) || !slices.Contains(j.ReadWrite, top) {
		t.Errorf("jail read-write paths %q lack the sandbox dir or its overlay", j.ReadWrite)
	}
	if slices.Contains(j.ReadOnly, spec.MemoryFile) || slices.Contains(j.ReadWrite, filepath.Dir(base)) {
		t.Errorf("jail carries more than asked: ro %q rw %q", j.ReadOnly, j.ReadWrite)
	}
}
