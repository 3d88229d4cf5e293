//go:build linux

package snapshot

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestCopySparse512MiB(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	// 6 MiB of data in pieces, aligned and not, over a 512 MiB file.
	sparseFile(t, src, 512*mib,
		[2]int64{0, 1 * mib}, [2]int64{100*mib + 512, 2 * mib}, [2]int64{300 * mib, 1*mib + 17},
		[2]int64{511 * mib, 1 * mib}, [2]int64{400 * mib, 4 * kib}, [2]int64{450*mib + 100, 1 * mib})
	const data = 6*mib + 17 + 4*kib
	method, err := copySparse(context.Background(), src, dst)
	if err != nil {
		t.Fatalf("CopySparse: %v", err)
	}
	t.Logf("copied by %s", method)
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 512*mib {
		t.Errorf("copy is %d bytes, want %d", fi.Size(), 512*mib)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("copy has mode %v, want the source's 0600", fi.Mode().Perm())
	}
	// Unaligned pieces straddle one extra page at each end.
	if got := usage(t, dst); got < data || got > data+256*kib {
		t.Errorf("copy allocates %d bytes, want about the %d bytes of data", got, data)
	}
	if fileHash(t, src) != fileHash(t, dst) {
		t.Error("copy differs from the source")
	}
	assertNoTemp(t, dir)
}

func TestCopySparseZeroPagesBecomeHoles(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	// 16 MiB written as zeros (allocated, like guest pages touched and
	// cleared), with three non-zero pages among them, and a tail that is
	// not a whole page.
	if err := os.WriteFile(src, make([]byte, 16*mib+100), 0o640); err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 5*mib + 4*kib, 16 * mib} {
		fillRandom(t, src, off, min(4*kib, 16*mib+100-off), uint64(i))
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Sync() // so st_blocks counts the delayed allocation
	f.Close()
	if got := usage(t, src); got < 16*mib {
		t.Fatalf("source allocates %d bytes; the test needs its zeros allocated", got)
	}
	method, err := copySparse(context.Background(), src, dst)
	if err != nil {
		t.Fatalf("CopySparse: %v", err)
	}
	if method == methodReflink {
		t.Skip("the temporary directory's filesystem reflinks: the copy shares blocks instead of punching zeros")
	}
	if got := usage(t, dst); got > 64*kib {
		t.Errorf("copy allocates %d bytes; want about the 3 non-zero pages (12 KiB)", got)
	}
	if fileHash(t, src) != fileHash(t, dst) {
		t.Error("copy differs from the source")
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Errorf("copy has mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestSparsify(t *testing.T) {
	p := filepath.Join(t.TempDir(), "memory")
	// Written zeros with data pages among them, a tail that is not a
	// whole page, and a real hole in the middle.
	if err := os.WriteFile(p, make([]byte, 8*mib), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 64*mib+100); err != nil {
		t.Fatal(err)
	}
	fillRandom(t, p, 32*mib, 8*mib, 1)
	fillRandom(t, p, 64*mib, 100, 2)
	fillRandom(t, p, 3*mib+4*kib, 4*kib, 3)
	f, _ := os.Open(p)
	f.Sync()
	f.Close()
	sum, before := fileHash(t, p), usage(t, p)
	if before < 16*mib {
		t.Fatalf("file allocates %d bytes; the test needs its zeros allocated", before)
	}
	if err := Sparsify(context.Background(), p); err != nil {
		t.Fatalf("Sparsify: %v", err)
	}
	if fileHash(t, p) != sum {
		t.Fatal("Sparsify changed the content")
	}
	if fi, _ := os.Stat(p); fi.Size() != 64*mib+100 {
		t.Errorf("size %d after Sparsify, want %d", fi.Size(), 64*mib+100)
	}
	want := int64(8*mib + 4*kib + 4*kib) // data, one page, the tail's page
	if got := usage(t, p); got < want || got > want+128*kib {
		t.Errorf("allocates %d bytes after Sparsify, want about %d", got, want)
	}
	if err := Sparsify(context.Background(), filepath.Join(t.TempDir(), "absent")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Sparsify(missing) = %v, want NotFound", err)
	}
}

func TestCopySparseEmptyFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopySparse(context.Background(), src, dst); err != nil {
		t.Fatalf("CopySparse: %v", err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != 0 {
		t.Errorf("copy of an empty file: %v, %v", fi, err)
	}
}

func TestCopySparseRefuses(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	sparseFile(t, src, 8*mib, [2]int64{0, mib})
	exists := filepath.Join(dir, "exists")
	if err := os.WriteFile(exists, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		src, dst string
		kind     error
	}{
		{"destination exists", context.Background(), src, exists, errdefs.ErrAlreadyExists},
		{"source missing", context.Background(), filepath.Join(dir, "absent"), filepath.Join(dir, "d1"), errdefs.ErrNotFound},
		{"source is a directory", context.Background(), dir, filepath.Join(dir, "d2"), errdefs.ErrInvalidArgument},
		{"destination directory missing", context.Background(), src, filepath.Join(dir, "no", "d3"), errdefs.ErrNotFound},
		{"cancelled", cancelled, src, filepath.Join(dir, "d4"), context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CopySparse(tt.ctx, tt.src, tt.dst)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("CopySparse = %v, want %v", err, tt.kind)
			}
			if tt.dst != exists {
				if _, err := os.Lstat(tt.dst); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a failed copy left %s (stat: %v)", tt.dst, err)
				}
			}
		})
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep" {
		t.Errorf("existing destination was changed to %q", b)
	}
	assertNoTemp(t, dir)
}

// shmDir returns a directory on /dev/shm (tmpfs), where guest memory
// files live while their sandbox runs.
func shmDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skipf("needs /dev/shm as tmpfs (statfs: %v)", err)
	}
	dir, err := os.MkdirTemp("/dev/shm", "wrenn-snapshot-test-")
	if err != nil {
		t.Skipf("needs a writable /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestMoveMemory(t *testing.T) {
	ctx := context.Background()
	t.Run("same filesystem renames", func(t *testing.T) {
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "memory"), filepath.Join(dir, "moved")
		sparseFile(t, src, 64*mib, [2]int64{mib, mib})
		ino, sum := inode(t, src), fileHash(t, src)
		if err := MoveMemory(ctx, src, dst); err != nil {
			t.Fatalf("MoveMemory: %v", err)
		}
		if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("source still there: %v", err)
		}
		if inode(t, dst) != ino || fileHash(t, dst) != sum {
			t.Error("a same-filesystem move did not keep the file (copied, or changed it)")
		}
	})
	t.Run("tmpfs to disk copies sparsely", func(t *testing.T) {
		shm := shmDir(t)
		src, dst := filepath.Join(shm, "memory"), filepath.Join(t.TempDir(), "memory")
		// Touched-and-zeroed pages on tmpfs are allocated too.
		if err := os.WriteFile(src, make([]byte, 4*mib), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(src, 256*mib); err != nil {
			t.Fatal(err)
		}
		fillRandom(t, src, 8*mib, 2*mib, 1)
		fillRandom(t, src, 200*mib+4*kib, 4*kib, 2)
		sum := fileHash(t, src)
		if err := MoveMemory(ctx, src, dst); err != nil {
			t.Fatalf("MoveMemory: %v", err)
		}
		if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("source still in /dev/shm after the move: %v", err)
		}
		if fileHash(t, dst) != sum {
			t.Error("moved memory differs from the source")
		}
		if got := usage(t, dst); got < 2*mib+4*kib || got > 2*mib+128*kib {
			t.Errorf("moved memory allocates %d bytes, want about 2 MiB + 4 KiB", got)
		}
	})
	t.Run("destination exists", func(t *testing.T) {
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "memory"), filepath.Join(dir, "taken")
		sparseFile(t, src, mib, [2]int64{0, 4 * kib})
		if err := os.WriteFile(dst, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := MoveMemory(ctx, src, dst); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Errorf("MoveMemory onto an existing file = %v, want AlreadyExists", err)
		}
		if _, err := os.Stat(src); err != nil {
			t.Errorf("a refused move lost the source: %v", err)
		}
	})
	t.Run("source missing", func(t *testing.T) {
		dir := t.TempDir()
		err := MoveMemory(ctx, filepath.Join(dir, "absent"), filepath.Join(dir, "dst"))
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("MoveMemory(missing) = %v, want NotFound", err)
		}
	})
}

// btrfsDir mounts a small btrfs filesystem from a loop-mounted file and
// returns a directory on it, so the reflink path runs even where the test's
// own filesystem (ext4 here) cannot share blocks.
func btrfsDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop-mounts a btrfs image")
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Skip("needs mkfs.btrfs (Debian package btrfs-progs): not in PATH")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256*mib); err != nil {
		t.Fatal(err)
	}
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

func TestCopySparseReflinkOnBtrfs(t *testing.T) {
	dir := btrfsDir(t)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	sparseFile(t, src, 128*mib, [2]int64{0, 8 * mib}, [2]int64{100 * mib, 8 * mib})
	sum := fileHash(t, src)
	// btrfs allocates on writeback; flush now so the space the source
	// takes is not counted against the copy.
	if f, err := os.Open(src); err == nil {
		f.Sync()
		f.Close()
	}
	var before unix.Statfs_t
	if err := unix.Statfs(dir, &before); err != nil {
		t.Fatal(err)
	}
	method, err := copySparse(context.Background(), src, dst)
	if err != nil {
		t.Fatalf("CopySparse: %v", err)
	}
	if method != methodReflink {
		t.Errorf("CopySparse on btrfs used %s, want %s", method, methodReflink)
	}
	if fileHash(t, dst) != sum {
		t.Error("reflinked copy differs from the source")
	}
	var after unix.Statfs_t
	if err := unix.Statfs(dir, &after); err != nil {
		t.Fatal(err)
	}
	// A real copy would take 16 MiB of the filesystem; a reflink takes
	// metadata only.
	if used := int64(before.Bfree-after.Bfree) * int64(before.Bsize); used > 4*mib {
		t.Errorf("reflinked copy took %d bytes of free space; want metadata only", used)
	}
	// Writing the copy must not reach the source's shared blocks.
	fillRandom(t, dst, 0, mib, 42)
	if fileHash(t, src) != sum {
		t.Fatal("source changed after a write to its reflinked copy")
	}
	// A snapshot on btrfs verifies like anywhere else.
	snap := filepath.Join(dir, "snap")
	if err := os.Mkdir(snap, 0o700); err != nil {
		t.Fatal(err)
	}
	makeSnapshotFiles(t, snap)
	if _, err := Write(context.Background(), snap, testManifest()); err != nil {
		t.Fatalf("Write on btrfs: %v", err)
	}
	if _, err := Open(context.Background(), snap); err != nil {
		t.Fatalf("Open on btrfs: %v", err)
	}
}

func TestDirUsage(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	fillRandom(t, a, 0, mib, 1)
	sparseFile(t, b, 100*mib, [2]int64{50 * mib, 64 * kib})
	// Counted once however many names it has; a symlink is not followed.
	if err := os.Link(a, filepath.Join(dir, "a-link")); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "big")
	fillRandom(t, outside, 0, 2*mib, 2)
	if err := os.Symlink(outside, filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	got, err := DirUsage(dir)
	if err != nil {
		t.Fatalf("DirUsage: %v", err)
	}
	if want := usage(t, a) + usage(t, b); got != want {
		t.Errorf("DirUsage = %d, want %d (a + b)", got, want)
	}
	if got < mib+64*kib || got > mib+64*kib+64*kib {
		t.Errorf("DirUsage = %d, want about 1 MiB + 64 KiB", got)
	}
	if _, err := DirUsage(filepath.Join(dir, "absent")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("DirUsage(missing) = %v, want NotFound", err)
	}
	if _, err := Usage(filepath.Join(dir, "absent")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Usage(missing) = %v, want NotFound", err)
	}
}

func TestSample(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int64{0, 1, 4*kib - 1, mib, mib + 1, 2*mib + 1, 3 * mib, 64*mib + 123} {
		p := filepath.Join(t.TempDir(), "f")
		sparseFile(t, p, size, [2]int64{0, min(size, 8*kib)})
		s1, err := Sample(ctx, p)
		if err != nil {
			t.Fatalf("Sample of %d bytes: %v", size, err)
		}
		if s2, _ := Sample(ctx, p); s1 != s2 || !isHexDigest(s1) {
			t.Fatalf("Sample of %d bytes is %q then %q", size, s1, s2)
		}
		if size == 0 {
			continue
		}
		flipByte(t, p, size-1)
		if s3, _ := Sample(ctx, p); s3 == s1 {
			t.Errorf("Sample of %d bytes missed a change to the last byte", size)
		}
	}
	t.Run("more extents than it hashes", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		sparseFile(t, p, (sampleMaxExtents+8)*2*pageSize)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		page := make([]byte, pageSize)
		page[0] = 1
		for i := int64(0); i < sampleMaxExtents+8; i++ {
			if _, err := f.WriteAt(page, i*2*pageSize); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		s1, err := Sample(ctx, p)
		if err != nil {
			t.Fatalf("Sample: %v", err)
		}
		// Filling a hole among the first extents is still seen: 2 MiB +
		// 12 KiB is an odd page (a hole), past the first MiB, and none of
		// the spaced sample pages, so only the map can see it.
		fillRandom(t, p, 2*mib+3*pageSize, pageSize, 5)
		if s2, _ := Sample(ctx, p); s2 == s1 {
			t.Error("Sample missed a hole filled within the hashed part of the map")
		}
	})
	if _, err := Sample(ctx, filepath.Join(t.TempDir(), "absent")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Sample(missing) = %v, want NotFound", err)
	}
}

// BenchmarkCopySparse copies a 512 MiB memory file holding 32 MiB of
// random data in 512 scattered 64 KiB pieces: roughly a small guest
// after boot. MB/s counts the data, not the apparent size.
func BenchmarkCopySparse(b *testing.B) {
	for _, bc := range []struct {
		name string
		src  func(b *testing.B) string
	}{
		{"disk-to-disk", func(b *testing.B) string { return b.TempDir() }},
		{"tmpfs-to-disk", func(b *testing.B) string {
			dir, err := os.MkdirTemp("/dev/shm", "wrenn-snapshot-bench-")
			if err != nil {
				b.Skipf("needs a writable /dev/shm: %v", err)
			}
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			src := filepath.Join(bc.src(b), "memory")
			r := rand.New(rand.NewPCG(1, 2))
			slots := r.Perm(512 * mib / (64 * kib))[:512]
			ranges := make([][2]int64, len(slots))
			for i, s := range slots {
				ranges[i] = [2]int64{int64(s) * 64 * kib, 64 * kib}
			}
			sparseFile(b, src, 512*mib, ranges...)
			out := b.TempDir()
			b.SetBytes(32 * mib)
			for i := 0; b.Loop(); i++ {
				dst := filepath.Join(out, "copy")
				if err := CopySparse(context.Background(), src, dst); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if i == 0 {
					b.ReportMetric(float64(usage(b, dst))/mib, "alloc-MiB")
				}
				os.Remove(dst)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSample measures what Open pays per memory file: a 512 MiB file
// with 512 scattered 64 KiB pieces, and a worst case whose allocation map
// has as many extents as Sample hashes (a 4 KiB page every 32 KiB).
func BenchmarkSample(b *testing.B) {
	for _, bc := range []struct {
		name   string
		pieces int64 // data pieces, evenly spaced
		piece  int64
	}{
		{"512-extents", 512, 64 * kib},
		{"max-extents", sampleMaxExtents, 4 * kib},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "memory")
			sparseFile(b, p, 512*mib)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			page := make([]byte, bc.piece)
			for i := range page {
				page[i] = 0xa5
			}
			stride := 512 * mib / bc.pieces
			for i := int64(0); i < bc.pieces; i++ {
				if _, err := f.WriteAt(page, i*stride); err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
			for b.Loop() {
				if _, err := Sample(context.Background(), p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
