package snapshot

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Usage is the disk space the file at path takes: its allocated blocks
// (st_blocks × 512), not its apparent size, so a sparse 4 GiB memory file
// holding 100 MiB of data reports about 100 MiB. One stat call.
func Usage(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", path, errdefs.FromOS(err))
	}
	return allocated(path, fi)
}

// DirUsage is the disk space the files under dir take, as Usage counts it,
// each file once however many hard links it has under dir. Symlinks are
// not followed. Blocks shared with other files by reflink are counted in
// full: the space a reflinked copy really adds is not visible to stat.
func DirUsage(dir string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		n, err := allocated(path, fi)
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, errdefs.FromOS(err))
	}
	return total, nil
}

func allocated(path string, fi os.FileInfo) (int64, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("disk usage of %s: no block count on this platform", path)
	}
	// st_blocks counts 512-byte units whatever the filesystem block size.
	return int64(st.Blocks) * 512, nil
}
