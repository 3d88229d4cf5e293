package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// copyChunk bounds each copy_file_range call so a copy notices ctx ending
// within a fraction of a second.
const copyChunk = 16 * mib

// copyTo copies src to a new file dst (never replacing one) with the given
// mode and apparent size (-1: src's size; larger: extended with a hole).
// It tries a reflink first and falls back to a sparse copy. The copy is
// made under a temporary name, synced, and linked into place, so dst either
// does not exist or is complete.
func copyTo(ctx context.Context, src, dst string, size int64, mode os.FileMode) (CopyMethod, error) {
	if err := atomicfile.CheckFree(dst); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", src, errdefs.FromOS(err))
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", src, errdefs.FromOS(err))
	}
	if size < 0 {
		size = fi.Size()
	}
	if size < fi.Size() {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "copy %s: target size %d is smaller than the source (%d)", src, size, fi.Size())
	}
	tmp, err := atomicfile.TempName(dst)
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, errdefs.FromOS(err))
	}
	defer os.Remove(tmp) // after the link, this only drops the temporary name
	defer out.Close()

	method := Reflink
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if !reflinkUnsupported(err) {
			return "", fmt.Errorf("reflink %s: %w", src, err)
		}
		method = SparseCopy
		if err := sparseCopy(ctx, in, out, fi.Size()); err != nil {
			return "", fmt.Errorf("copy %s: %w", src, err)
		}
	}
	if err := out.Truncate(size); err != nil {
		return "", fmt.Errorf("resize %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := out.Chmod(mode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := os.Link(tmp, dst); err != nil {
		return "", fmt.Errorf("link %s: %w", dst, errdefs.FromOS(err))
	}
	return method, nil
}

// reflinkUnsupported reports whether FICLONE failed because the files (or
// their filesystem) cannot share blocks, as opposed to a real I/O error.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTSUP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EBADF, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sparseCopy copies the first n bytes of in to the same offsets in out,
// reading only the ranges SEEK_DATA reports as allocated; holes stay holes.
func sparseCopy(ctx context.Context, in, out *os.File, n int64) error {
	inFD := int(in.Fd())
	for off := int64(0); off < n; {
		data, err := unix.Seek(inFD, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // only a hole is left
		case err != nil:
			// No SEEK_DATA on this filesystem: copy the rest as data.
			return copyRange(ctx, in, out, off, n-off)
		}
		hole, err := unix.Seek(inFD, data, unix.SEEK_HOLE)
		if err != nil || hole > n {
			hole = n
		}
		if err := copyRange(ctx, in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies length bytes at off from in to out in the kernel
// (copy_file_range), falling back to reads and writes where the kernel
// cannot, e.g. across filesystems.
func copyRange(ctx context.Context, in, out *os.File, off, length int64) error {
	rOff, wOff := off, off
	end := off + length
	for rOff < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := min(end-rOff, copyChunk)
		n, err := unix.CopyFileRange(int(in.Fd()), &rOff, int(out.Fd()), &wOff, int(chunk), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				return copyRangeRW(ctx, in, out, rOff, end-rOff)
			}
			return fmt.Errorf("copy_file_range at %d: %w", rOff, err)
		}
		if n == 0 {
			return fmt.Errorf("copy at %d: %w", rOff, io.ErrUnexpectedEOF)
		}
	}
	return nil
}

func copyRangeRW(ctx context.Context, in, out *os.File, off, length int64) error {
	buf := make([]byte, mib)
	for end := off + length; off < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(end-off, int64(len(buf)))]
		if _, err := in.ReadAt(b, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if _, err := out.WriteAt(b, off); err != nil {
			return fmt.Errorf("write at %d: %w", off, errdefs.FromOS(err))
		}
		off += int64(len(b))
	}
	return nil
}
