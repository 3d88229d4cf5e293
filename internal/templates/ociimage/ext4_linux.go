package ociimage

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// MakeExt4 writes the tree at dir to an ext4 image at out and returns the
// image's size in bytes. The filesystem is the tree's used size plus
// max(extraMB, 20 % of it) plus 64 MiB for metadata and the journal, rounded
// up to 4 MiB, made with the mkfs.ext4 options of images/rootfs/build.sh
// (4 KiB blocks whatever the size, 256-byte inodes, no root-reserved blocks,
// no lazy inode tables, label wrenn-root, root owned by 0:0). The image is
// written beside out and renamed over it, so out is never half an image.
//
// Unlike build.sh the UUID is random and timestamps are not pinned: an
// image built from a registry is identified by the manifest digest, not by
// its bytes.
func MakeExt4(ctx context.Context, dir, out string, extraMB int) (int64, error) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return 0, errdefs.New(errdefs.ErrFailedPrecondition, "mkfs.ext4 not found (apt-get install e2fsprogs)")
	}
	used, files, err := treeUsage(ctx, dir)
	if err != nil {
		return 0, err
	}
	extra := used / 5
	if e := int64(extraMB) << 20; e > extra {
		extra = e
	}
	const mib = 1 << 20
	sizeMiB := ((used+extra)/mib + 64 + 3) / 4 * 4
	args := []string{"-q", "-F", "-d", dir, "-L", "wrenn-root", "-U", "", "-T", "default", "-b", "4096", "-I", "256", "-m", "0"}
	id := uuid.NewString()
	args[7] = id
	// -T default gives one inode per 16 KiB; a tree of many small files
	// (node_modules, site-packages) can need more than that.
	if need := files + files/4 + 1024; sizeMiB*mib/16384 < need {
		args = append(args, "-N", fmt.Sprint(need))
	}
	args = append(args, "-E", "hash_seed="+id+",root_owner=0:0,lazy_itable_init=0")

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", filepath.Dir(out), errdefs.FromOS(err))
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create image file: %w", errdefs.FromOS(err))
	}
	tmpName := tmp.Name()
	_ = tmp.Close()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmpName)
		}
	}()
	args = append(args, tmpName, fmt.Sprintf("%dM", sizeMiB))
	cmd := exec.CommandContext(ctx, "mkfs.ext4", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("mkfs.ext4: %w", ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = msg[:500]
		}
		return 0, fmt.Errorf("mkfs.ext4 -d %s (%d MiB): %w: %s", dir, sizeMiB, err, msg)
	}
	st, err := os.Stat(tmpName)
	if err != nil {
		return 0, fmt.Errorf("stat image: %w", errdefs.FromOS(err))
	}
	if err := os.Rename(tmpName, out); err != nil {
		return 0, fmt.Errorf("rename image into place: %w", errdefs.FromOS(err))
	}
	done = true
	return st.Size(), nil
}

// treeUsage is `du -sk` in bytes (allocated blocks, each inode once) and the
// number of entries.
func treeUsage(ctx context.Context, dir string) (used, files int64, err error) {
	seen := map[[2]uint64]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		files++
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			used += info.Size()
			return nil
		}
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if st.Nlink > 1 {
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		used += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measure %s: %w", dir, errdefs.FromOS(err))
	}
	return used, files, nil
}
