package disk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// btrfsDir mounts a small btrfs filesystem (a loop-mounted file) and
// returns a directory on it, so the reflink path runs even where the
// test's own filesystem (ext4 on the reference host) cannot share blocks.
func btrfsDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop-mounts a btrfs image")
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Skip("needs mkfs.btrfs (Debian package btrfs-progs): not in PATH")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 * mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("needs loop devices: mount -o loop failed: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

func TestReflinkOnBtrfs(t *testing.T) {
	requireQemuIO(t)
	dir := btrfsDir(t)
	ctx := context.Background()
	base := makeBase(t, dir, 64*mib)
	baseSum := checksum(t, base)

	raw := filepath.Join(dir, "root.raw")
	d, method, err := NewRaw(ctx, base, raw, 64)
	if err != nil {
		t.Fatalf("NewRaw: %v", err)
	}
	if method != Reflink {
		t.Errorf("NewRaw on btrfs used %s, want %s", method, Reflink)
	}
	if d.SizeBytes != 64*mib || checksum(t, raw) != baseSum {
		t.Errorf("reflinked raw disk %+v differs from the base", d)
	}
	// Writing the clone must not reach the base's shared blocks.
	f, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, mib), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if checksum(t, base) != baseSum {
		t.Fatal("base changed after a write to its reflinked clone")
	}

	src := filepath.Join(dir, "src.qcow2")
	if _, err := NewOverlay(ctx, base, src, 64); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, src, "write -P 0xab 0 1M"); err != nil {
		t.Fatal(err)
	}
	frozen := filepath.Join(dir, "frozen.qcow2")
	if _, method, err := Freeze(ctx, src, frozen); err != nil || method != Reflink {
		t.Fatalf("Freeze on btrfs = %s, %v; want %s", method, err, Reflink)
	}
	fork := filepath.Join(dir, "fork.qcow2")
	if _, err := Clone(ctx, frozen, fork); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, fork, "read -P 0xab 0 1M"); err != nil {
		t.Errorf("fork over a reflinked frozen file: %v", err)
	}
}
