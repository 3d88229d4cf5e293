package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// copyMethod says how copySparse made its copy (tests assert on it).
type copyMethod string

const (
	// methodReflink shares the source's blocks (FICLONE): no data is
	// read or written, and blocks are copied only when either side writes.
	methodReflink copyMethod = "reflink"
	// methodSparse reads the source's data extents and writes only the
	// pages that are not all zero.
	methodSparse copyMethod = "sparse"
)

// copyBuf is how much copySparse reads at once: large enough that
// syscalls are not the cost, small enough to check ctx often.
const copyBuf = 1 * mib

// CopySparse copies the file src to dst, a new file (an existing dst is
// refused with ErrAlreadyExists), so that the copy costs disk only for
// src's non-zero pages.
//
// Where src and dst share a filesystem that can reflink (btrfs, xfs),
// dst shares src's blocks (FICLONE) and nothing is copied. Otherwise
// CopySparse reads only the extents SEEK_DATA reports as allocated and,
// within them, writes only the 4 KiB pages that are not all zero, so
// pages that are allocated but zero (guest memory the guest touched and
// cleared) become holes too. The copy keeps src's size and permissions,
// is built under a temporary name, fsynced, and linked into place, so dst
// either does not exist or is complete; dst's directory is fsynced.
//
// src must not change during the copy (its VMM paused or gone).
func CopySparse(ctx context.Context, src, dst string) error {
	_, err := copySparse(ctx, src, dst)
	return err
}

func copySparse(ctx context.Context, src, dst string) (copyMethod, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", src, errdefs.FromOS(err))
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", src, errdefs.FromOS(err))
	}
	if !fi.Mode().IsRegular() {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "copy %s: not a regular file", src)
	}
	if err := atomicfile.CheckFree(dst); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	tmp, err := atomicfile.TempName(dst)
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return "", fmt.Errorf("copy %s: create %s: %w", src, tmp, errdefs.FromOS(err))
	}
	defer os.Remove(tmp) // after the link this only drops the temporary name
	defer out.Close()

	method := methodReflink
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if !reflinkUnsupported(err) {
			return "", fmt.Errorf("copy %s: reflink to %s: %w", src, tmp, err)
		}
		method = methodSparse
		// Sizing dst first makes every page copySparse skips a hole.
		if err := out.Truncate(fi.Size()); err != nil {
			return "", fmt.Errorf("copy %s: size %s: %w", src, tmp, errdefs.FromOS(err))
		}
		if err := copyNonZero(ctx, in, out, fi.Size()); err != nil {
			return "", fmt.Errorf("copy %s to %s: %w", src, dst, err)
		}
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("copy %s: sync %s: %w", src, tmp, errdefs.FromOS(err))
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("copy %s: close %s: %w", src, tmp, errdefs.FromOS(err))
	}
	// link, not rename, so a dst created meanwhile is never replaced.
	if err := os.Link(tmp, dst); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, errdefs.FromOS(err))
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return method, nil
}

// copyNonZero copies the data extents of in's first size bytes to the same
// offsets of out, skipping all-zero pages.
func copyNonZero(ctx context.Context, in, out *os.File, size int64) error {
	buf := make([]byte, copyBuf)
	err := forEachData(ctx, in, size, func(start, end int64) error {
		for off := start; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(end-off, copyBuf)]
			if _, err := in.ReadAt(b, off); err != nil {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			if err := writeNonZero(out, b, off); err != nil {
				return err
			}
			off += int64(len(b))
		}
		return nil
	})
	if errors.Is(err, errNoExtentMap) {
		return nil // copied as one range; the zero check kept it sparse
	}
	return err
}

var zeroPage [pageSize]byte

// writeNonZero writes b at off in out, leaving out every page-aligned
// page of b that is all zero (it stays a hole in a freshly sized file).
// Runs of non-zero pages go out in one write.
func writeNonZero(out *os.File, b []byte, off int64) error {
	runStart := -1
	flush := func(end int) error {
		if runStart < 0 {
			return nil
		}
		if _, err := out.WriteAt(b[runStart:end], off+int64(runStart)); err != nil {
			return fmt.Errorf("write at %d: %w", off+int64(runStart), errdefs.FromOS(err))
		}
		runStart = -1
		return nil
	}
	// Page boundaries are absolute file offsets, so a data extent that
	// does not start on one (filesystems with small blocks) still lines
	// its zero checks up with the blocks it could leave unallocated.
	i := 0
	if head := int(off % pageSize); head != 0 {
		i = min(pageSize-head, len(b))
	}
	if i > 0 && !bytes.Equal(b[:i], zeroPage[:i]) {
		runStart = 0
	}
	for ; i < len(b); i += pageSize {
		end := min(i+pageSize, len(b))
		if bytes.Equal(b[i:end], zeroPage[:end-i]) {
			if err := flush(i); err != nil {
				return err
			}
		} else if runStart < 0 {
			runStart = i
		}
	}
	return flush(len(b))
}

// forEachData calls fn for each allocated range [start, end) of f's first
// size bytes, in order, as SEEK_DATA/SEEK_HOLE report them, until fn
// returns an error. Where the filesystem cannot report holes, fn gets the
// whole file as one range and forEachData then returns errNoExtentMap, so
// a caller that needs the map itself (Sample) can tell.
func forEachData(ctx context.Context, f *os.File, size int64, fn func(start, end int64) error) error {
	fd := int(f.Fd())
	for off, n := int64(0), 0; off < size; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // only a hole is left
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
			if off != 0 {
				return fmt.Errorf("seek data at %d: %w", off, err)
			}
			if err := fn(0, size); err != nil {
				return err
			}
			return errNoExtentMap
		case err != nil:
			return fmt.Errorf("seek data at %d: %w", off, err)
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole at %d: %w", data, err)
		}
		hole = min(hole, size)
		if err := fn(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// reflinkUnsupported reports whether FICLONE failed because these files
// (or their filesystem) cannot share blocks, rather than an I/O error.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTSUP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EBADF, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Sparsify punches a hole in place for every all-zero 4 KiB page of the
// file at path that is allocated, keeping its size and content. It is for
// memory files a VMM wrote whole (Firecracker writes every page of guest
// RAM), so zero pages stop costing disk; it reads the file's data extents
// once. The file must not be in use. Filesystems without hole punching
// fail with the error from fallocate.
func Sparsify(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sparsify %s: %w", path, errdefs.FromOS(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sparsify %s: %w", path, errdefs.FromOS(err))
	}
	if !fi.Mode().IsRegular() {
		return errdefs.New(errdefs.ErrInvalidArgument, "sparsify %s: not a regular file", path)
	}
	buf := make([]byte, copyBuf)
	punch := func(off, n int64) error {
		if n == 0 {
			return nil
		}
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err != nil {
			return fmt.Errorf("punch hole at %d: %w", off, err)
		}
		return nil
	}
	err = forEachData(ctx, f, fi.Size(), func(start, end int64) error {
		for off := start &^ (pageSize - 1); off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(end-off, copyBuf)]
			if _, err := f.ReadAt(b, off); err != nil {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			// Only whole zero pages are punched; a partial page at the end
			// of an extent stays as it is.
			zeroFrom := int64(-1)
			for i := 0; i+pageSize <= len(b); i += pageSize {
				if bytes.Equal(b[i:i+pageSize], zeroPage[:]) {
					if zeroFrom < 0 {
						zeroFrom = int64(i)
					}
					continue
				}
				if zeroFrom >= 0 {
					if err := punch(off+zeroFrom, int64(i)-zeroFrom); err != nil {
						return err
					}
					zeroFrom = -1
				}
			}
			if zeroFrom >= 0 {
				if err := punch(off+zeroFrom, int64(len(b)/pageSize*pageSize)-zeroFrom); err != nil {
					return err
				}
			}
			off += int64(len(b))
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNoExtentMap) {
		return fmt.Errorf("sparsify %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sparsify %s: %w", path, errdefs.FromOS(err))
	}
	return nil
}

// MoveMemory moves the file src to dst, a new path (an existing dst is
// refused with ErrAlreadyExists). On one filesystem it is a rename, O(1)
// and atomic. Across filesystems (a guest's memory file in /dev/shm
// moving to disk for hibernation) it is CopySparse followed by removing
// src, so host RAM is freed only once the copy is durable. Both
// directories are fsynced.
//
// src must not change during the move (its VMM gone).
func MoveMemory(ctx context.Context, src, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("move %s: %w", src, errdefs.FromOS(err))
	}
	if !fi.Mode().IsRegular() {
		return errdefs.New(errdefs.ErrInvalidArgument, "move %s: not a regular file", src)
	}
	err = unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// This filesystem has no RENAME_NOREPLACE: check, then rename.
		// Only a racing creator of dst could be overwritten, and dst is a
		// path the caller owns.
		if err := atomicfile.CheckFree(dst); err != nil {
			return fmt.Errorf("move %s: %w", src, err)
		}
		err = os.Rename(src, dst)
	}
	switch {
	case err == nil:
	case errors.Is(err, unix.EXDEV):
		if err := CopySparse(ctx, src, dst); err != nil {
			return fmt.Errorf("move %s: %w", src, err)
		}
		if err := os.Remove(src); err != nil {
			return fmt.Errorf("move %s: remove source after copy: %w", src, errdefs.FromOS(err))
		}
	case errors.Is(err, unix.EEXIST):
		return errdefs.New(errdefs.ErrAlreadyExists, "move %s: %s already exists", src, dst)
	default:
		return fmt.Errorf("move %s to %s: %w", src, dst, errdefs.FromOS(err))
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("move %s: %w", src, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(src)); err != nil {
		return fmt.Errorf("move %s: %w", src, err)
	}
	return nil
}
