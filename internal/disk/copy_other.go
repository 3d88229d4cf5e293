//go:build !linux

package disk

import (
	"context"
	"os"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// copyTo needs Linux (FICLONE, SEEK_DATA, copy_file_range).
func copyTo(ctx context.Context, src, dst string, size int64, mode os.FileMode) (CopyMethod, error) {
	return "", errdefs.New(errdefs.ErrUnavailable, "copy %s: disk copies are implemented on Linux only", src)
}
