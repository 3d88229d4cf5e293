package disk

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func requireQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("needs qemu-img (Debian package qemu-utils): not in PATH")
	}
}

func requireQemuIO(t *testing.T) {
	t.Helper()
	requireQemuImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("needs qemu-io (Debian package qemu-utils): not in PATH")
	}
}

// makeBase writes a sparse raw image of size bytes whose first MiB and a
// MiB in the middle hold random data (so checksums mean something), the rest
// being a hole, as a freshly built ext4 image mostly is.
func makeBase(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("base-%d.ext4", size))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mib)
	for _, off := range []int64{0, size / 2} {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Template images are read-only once built; so are the tests' bases.
	if err := os.Chmod(p, 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

func checksum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// qemuIO runs qemu-io commands on a qcow2 image, as a guest's writes and
// reads would reach it through QEMU's block layer.
func qemuIO(t *testing.T, path string, cmds ...string) error {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-io %v: %w: %s", cmds, err, out)
	}
	return nil
}

func TestNewOverlayIsConstantSize(t *testing.T) {
	requireQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	const sizeMB = 2048
	for _, baseSize := range []int64{10 * mib, 1 << 30} {
		t.Run(fmt.Sprintf("base %d MiB", baseSize/mib), func(t *testing.T) {
			base := makeBase(t, dir, baseSize)
			path := filepath.Join(dir, fmt.Sprintf("overlay-%d.qcow2", baseSize))
			start := time.Now()
			d, err := NewOverlay(ctx, base, path, sizeMB)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("NewOverlay: %v", err)
			}
			t.Logf("overlay over a %d MiB base created in %v", baseSize/mib, elapsed)
			want := Disk{Path: path, Format: QCOW2, SizeBytes: sizeMB * mib, Backing: base, BackingFormat: Raw}
			if d != want {
				t.Errorf("Disk = %+v, want %+v", d, want)
			}
			// The structure, not the clock, proves no copy: the overlay
			// holds metadata only, whatever the base's size.
			used, err := Usage(path)
			if err != nil {
				t.Fatal(err)
			}
			if used > mib {
				t.Errorf("overlay takes %d bytes on the host, want < 1 MiB (was the base copied?)", used)
			}
			info, err := Inspect(ctx, path, QCOW2)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != QCOW2 || info.VirtualSize != sizeMB*mib || info.BackingFile != base || info.BackingFormat != Raw {
				t.Errorf("qemu-img info = %+v, want qcow2 of %d bytes over raw %s", info, int64(sizeMB*mib), base)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("overlay mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

func TestOverlayNeverWritesBase(t *testing.T) {
	requireQemuIO(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := makeBase(t, dir, 10*mib)
	before := checksum(t, base)
	baseInfo, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "root.qcow2")
	if _, err := NewOverlay(ctx, base, path, 64); err != nil {
		t.Fatalf("NewOverlay: %v", err)
	}
	used0, err := Usage(path)
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite base data, write past the base's end, and read it back.
	if err := qemuIO(t, path, "write -P 0xab 0 1M", "write -P 0xcd 32M 2M", "read -P 0xab 0 1M", "read -P 0xcd 32M 2M", "read -P 0 20M 1M"); err != nil {
		t.Fatal(err)
	}
	if after := checksum(t, base); after != before {
		t.Fatal("base image changed after writes through the overlay")
	}
	if fi, err := os.Stat(base); err != nil || !fi.ModTime().Equal(baseInfo.ModTime()) {
		t.Errorf("base mtime changed: %v (stat err %v)", fi.ModTime(), err)
	}
	used1, err := Usage(path)
	if err != nil {
		t.Fatal(err)
	}
	if used1-used0 < 3*mib {
		t.Errorf("Usage grew from %d to %d after 3 MiB of writes, want +3 MiB or more", used0, used1)
	}
	// The guest cannot write past its disk size, so the host file cannot
	// outgrow it.
	if err := qemuIO(t, path, "write -P 0xef 64M 1M"); err == nil {
		t.Error("write past the 64 MiB virtual size succeeded")
	}
}

func TestNewOverlayRefuses(t *testing.T) {
	requireQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := makeBase(t, dir, 10*mib)
	existing := filepath.Join(dir, "existing.qcow2")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		base   string
		path   string
		sizeMB int
		kind   error
	}{
		{"smaller than base", base, filepath.Join(dir, "a.qcow2"), 9, errdefs.ErrInvalidArgument},
		{"zero size", base, filepath.Join(dir, "a.qcow2"), 0, errdefs.ErrInvalidArgument},
		{"negative size", base, filepath.Join(dir, "a.qcow2"), -5, errdefs.ErrInvalidArgument},
		{"absurd size", base, filepath.Join(dir, "a.qcow2"), 1 << 30, errdefs.ErrInvalidArgument},
		{"missing base", filepath.Join(dir, "nope.ext4"), filepath.Join(dir, "a.qcow2"), 64, errdefs.ErrNotFound},
		{"base is a directory", dir, filepath.Join(dir, "a.qcow2"), 64, errdefs.ErrInvalidArgument},
		{"path exists", base, existing, 64, errdefs.ErrAlreadyExists},
		{"directory missing", base, filepath.Join(dir, "no", "a.qcow2"), 64, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOverlay(ctx, tt.base, tt.path, tt.sizeMB)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("NewOverlay = %v, want %v", err, tt.kind)
			}
		})
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep me" {
		t.Errorf("existing file changed: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.qcow2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused overlay was created: %v", err)
	}
	assertNoTemp(t, dir)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewOverlay(canceled, base, filepath.Join(dir, "c.qcow2"), 64); !errors.Is(err, context.Canceled) {
		t.Errorf("NewOverlay with canceled ctx = %v, want Canceled", err)
	}
	assertNoTemp(t, dir)
}

// assertNoTemp checks that no temporary file was left behind in dir.
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestRemoveAndUsage(t *testing.T) {
	requireQemuImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := makeBase(t, dir, 10*mib)
	path := filepath.Join(dir, "root.qcow2")
	if _, err := NewOverlay(ctx, base, path, 64); err != nil {
		t.Fatal(err)
	}
	if n, err := Usage(path); err != nil || n <= 0 {
		t.Errorf("Usage = %d, %v; want > 0", n, err)
	}
	for i := range 2 {
		if err := Remove(path); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overlay still there: %v", err)
	}
	if _, err := Usage(path); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Usage of removed disk = %v, want NotFound", err)
	}
	if err := Remove(dir); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Remove(dir) = %v, want InvalidArgument", err)
	}
	if _, err := os.Stat(base); err != nil {
		t.Errorf("base gone after removing its overlay: %v", err)
	}
}

func TestFreezeAndClone(t *testing.T) {
	requireQemuIO(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := makeBase(t, dir, 10*mib)
	baseSum := checksum(t, base)
	src := filepath.Join(dir, "src.qcow2")
	if _, err := NewOverlay(ctx, base, src, 64); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, src, "write -P 0xab 0 1M"); err != nil {
		t.Fatal(err)
	}

	frozen := filepath.Join(dir, "frozen.qcow2")
	fd, method, err := Freeze(ctx, src, frozen)
	if err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	t.Logf("froze with %s", method)
	want := Disk{Path: frozen, Format: QCOW2, SizeBytes: 64 * mib, Backing: base, BackingFormat: Raw}
	if fd != want {
		t.Errorf("frozen Disk = %+v, want %+v", fd, want)
	}
	if fi, err := os.Stat(frozen); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("frozen file mode = %v, %v; want 0444", fi.Mode().Perm(), err)
	}
	frozenSum := checksum(t, frozen)

	// The source carries on after the fork; the forks must not see it.
	if err := qemuIO(t, src, "write -P 0xcd 0 1M"); err != nil {
		t.Fatal(err)
	}
	var forks []string
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("fork%d.qcow2", i))
		clone := func() (Disk, error) { return Clone(ctx, frozen, p) }
		if i == 1 { // the same disk, from the Disk that Freeze returned
			clone = func() (Disk, error) { return CloneFrozen(ctx, fd, p) }
		}
		d, err := clone()
		if err != nil {
			t.Fatalf("Clone #%d: %v", i, err)
		}
		if d.Backing != frozen || d.BackingFormat != QCOW2 || d.SizeBytes != 64*mib {
			t.Errorf("Clone #%d = %+v, want 64 MiB over qcow2 %s", i, d, frozen)
		}
		forks = append(forks, p)
	}
	if err := qemuIO(t, forks[0], "read -P 0xab 0 1M", "write -P 0x11 1M 1M"); err != nil {
		t.Errorf("fork 0 does not see the disk as frozen: %v", err)
	}
	if err := qemuIO(t, forks[1], "read -P 0xab 0 1M", "read -P 0 1M 1M"); err != nil {
		t.Errorf("fork 1 sees fork 0's write or lost the frozen state: %v", err)
	}
	if err := qemuIO(t, src, "read -P 0xcd 0 1M"); err != nil {
		t.Errorf("source lost its own write: %v", err)
	}
	if checksum(t, frozen) != frozenSum {
		t.Error("frozen file changed after writes through its clones")
	}
	if checksum(t, base) != baseSum {
		t.Error("base changed")
	}

	if _, _, err := Freeze(ctx, src, frozen); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("Freeze onto an existing file = %v, want AlreadyExists", err)
	}
	if _, err := Clone(ctx, filepath.Join(dir, "nope.qcow2"), filepath.Join(dir, "x.qcow2")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Clone of a missing frozen file = %v, want NotFound", err)
	}
	if _, err := CloneFrozen(ctx, Disk{Path: base, Format: Raw, SizeBytes: 10 * mib}, filepath.Join(dir, "z.qcow2")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CloneFrozen of a raw disk = %v, want InvalidArgument", err)
	}
	if _, _, err := Freeze(ctx, base, filepath.Join(dir, "y.qcow2")); err == nil {
		t.Error("Freeze of a raw file succeeded, want an error")
	}
	assertNoTemp(t, dir)
}

func TestNewRaw(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const baseLen = 256 * mib
	base := makeBase(t, dir, baseLen)
	path := filepath.Join(dir, "root.raw")
	start := time.Now()
	d, method, err := NewRaw(ctx, base, path, 300)
	if err != nil {
		t.Fatalf("NewRaw: %v", err)
	}
	t.Logf("raw disk from a 256 MiB base (2 MiB allocated) by %s in %v", method, time.Since(start))
	if d != (Disk{Path: path, Format: Raw, SizeBytes: 300 * mib}) {
		t.Errorf("Disk = %+v", d)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 300*mib {
		t.Errorf("size %d, want %d", fi.Size(), 300*mib)
	}
	// Holes stay holes: the copy takes what the base's data takes, not 256 MiB.
	used, err := Usage(path)
	if err != nil {
		t.Fatal(err)
	}
	if method == SparseCopy && used > 8*mib {
		t.Errorf("sparse copy allocated %d bytes for a base with 2 MiB of data", used)
	}
	// Same bytes as the base, then zeros to the new end.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, baseLen)); err != nil {
		t.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != checksum(t, base) {
		t.Error("raw disk differs from the base")
	}
	tail, err := io.ReadAll(io.NewSectionReader(f, baseLen, fi.Size()-baseLen))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Error("extension of the raw disk is not zero")
	}

	if _, _, err := NewRaw(ctx, base, filepath.Join(dir, "small.raw"), 255); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("NewRaw smaller than base = %v, want InvalidArgument", err)
	}
	if _, _, err := NewRaw(ctx, base, path, 400); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("NewRaw onto an existing file = %v, want AlreadyExists", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, m, err := NewRaw(canceled, base, filepath.Join(dir, "c.raw"), 300)
	if m != Reflink && !errors.Is(err, context.Canceled) {
		// A reflink needs no data copy and so never looks at ctx.
		t.Errorf("NewRaw with canceled ctx = %v, want Canceled", err)
	}
	assertNoTemp(t, dir)
}

// TestFreezeForkOfFork: freezing a fork (whose backing is a frozen layer)
// merges that layer, so the result hangs directly off the raw base and
// survives the removal of every ancestor's files.
func TestFreezeForkOfFork(t *testing.T) {
	requireQemuIO(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := makeBase(t, dir, 10*mib)

	gen0 := filepath.Join(dir, "gen0.qcow2")
	if _, err := NewOverlay(ctx, base, gen0, 64); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, gen0, "write -P 0xa0 0 1M"); err != nil {
		t.Fatal(err)
	}
	frozen0 := filepath.Join(dir, "frozen0.qcow2")
	if _, _, err := Freeze(ctx, gen0, frozen0); err != nil {
		t.Fatal(err)
	}
	gen1 := filepath.Join(dir, "gen1.qcow2")
	if _, err := Clone(ctx, frozen0, gen1); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, gen1, "write -P 0xa1 2M 1M"); err != nil {
		t.Fatal(err)
	}

	frozen1 := filepath.Join(dir, "frozen1.qcow2")
	fd, _, err := Freeze(ctx, gen1, frozen1)
	if err != nil {
		t.Fatalf("Freeze of a fork: %v", err)
	}
	if fd.Backing != base || fd.BackingFormat != Raw || fd.SizeBytes != 64*mib {
		t.Fatalf("frozen fork = %+v, want 64 MiB directly over the raw base %s", fd, base)
	}
	if fi, err := os.Stat(frozen1); err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("frozen fork mode = %v, %v; want 0444", fi.Mode().Perm(), err)
	}
	// Every ancestor goes away; the grandchild still sees both writes.
	for _, p := range []string{gen0, frozen0, gen1} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	gen2 := filepath.Join(dir, "gen2.qcow2")
	if _, err := Clone(ctx, frozen1, gen2); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, gen2, "read -P 0xa0 0 1M", "read -P 0xa1 2M 1M"); err != nil {
		t.Fatalf("fork of a fork lost data: %v", err)
	}
	assertNoTemp(t, dir)
}
