//go:build !linux

package snapshot

import (
	"context"
	"os"

	"github.com/wrenn/wrenn/internal/errdefs"
)

type copyMethod string

// CopySparse needs Linux (FICLONE, SEEK_DATA/SEEK_HOLE).
func CopySparse(ctx context.Context, src, dst string) error {
	_, err := copySparse(ctx, src, dst)
	return err
}

func copySparse(ctx context.Context, src, dst string) (copyMethod, error) {
	return "", errdefs.New(errdefs.ErrUnavailable, "copy %s: sparse copies are implemented on Linux only", src)
}

// MoveMemory needs Linux (renameat2, and CopySparse across filesystems).
func MoveMemory(ctx context.Context, src, dst string) error {
	return errdefs.New(errdefs.ErrUnavailable, "move %s: implemented on Linux only", src)
}

// Sparsify needs Linux (SEEK_DATA, FALLOC_FL_PUNCH_HOLE).
func Sparsify(ctx context.Context, path string) error {
	return errdefs.New(errdefs.ErrUnavailable, "sparsify %s: implemented on Linux only", path)
}

// forEachData has no allocation map off Linux: fn sees the whole file.
func forEachData(ctx context.Context, f *os.File, size int64, fn func(start, end int64) error) error {
	if err := fn(0, size); err != nil {
		return err
	}
	return errNoExtentMap
}
