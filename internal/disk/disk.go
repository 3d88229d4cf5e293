// Package disk owns the per-sandbox copy-on-write root disks: a sandbox
// writes to a disk of its own while the template's base image
// (images/<template>/rootfs.ext4) stays read-only and is never copied.
//
// For QEMU a disk is a qcow2 overlay whose backing file is the raw base
// (NewOverlay): creating one costs the same whatever the base's size. For
// forks, Freeze copies a paused sandbox's overlay to a read-only file and
// Clone stacks new overlays on that copy. Firecracker reads raw files only,
// so NewRaw clones the base with a reflink where the filesystem can, and
// with a sparse copy otherwise. See docs/adr/0001-copy-on-write-disks.md.
//
// Overlay operations run qemu-img (from Debian's qemu-utils), one exec each.
package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Format is a disk image format as QEMU names it.
type Format string

const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
)

// CopyMethod says how NewRaw or Freeze produced their copy.
type CopyMethod string

const (
	// Reflink shares the source's blocks (FICLONE): O(1) in data, and the
	// blocks are copied only when either side writes them.
	Reflink CopyMethod = "reflink"
	// SparseCopy copies the source's allocated ranges and leaves its holes
	// as holes: O(allocated bytes of the source).
	SparseCopy CopyMethod = "sparse-copy"
)

const (
	mib = 1 << 20
	// maxSizeMB bounds requested sizes well below qcow2's and ext4's
	// limits, so a typo fails fast instead of creating a 2^60-byte device.
	maxSizeMB = 16 << 20 // 16 TiB
)

// Disk describes one disk file.
type Disk struct {
	Path   string
	Format Format
	// SizeBytes is the size of the block device the guest sees.
	SizeBytes int64
	// Backing is the absolute path of the read-only file below an overlay,
	// and BackingFormat its format; both empty for a raw disk.
	Backing       string
	BackingFormat Format
}

// NewOverlay creates a qcow2 overlay at path over the raw base image, with
// a virtual size of sizeMB MiB. No data is copied: the overlay starts at a
// few hundred KiB whatever the base's size. The guest grows its filesystem
// to the device size, and writes beyond it fail inside the guest, so the
// file never grows past sizeMB plus qcow2 metadata.
//
// sizeMB smaller than the base is refused (InvalidArgument): the guest
// would lose the end of its filesystem. An existing path is never
// overwritten (AlreadyExists).
func NewOverlay(ctx context.Context, base, path string, sizeMB int) (Disk, error) {
	absBase, baseSize, err := statImage(base)
	if err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", path, err)
	}
	if err := checkSize(sizeMB, baseSize, absBase); err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", path, err)
	}
	return createOverlay(ctx, absBase, Raw, path, int64(sizeMB)*mib)
}

// Freeze copies src, the qcow2 overlay of a sandbox that is about to be
// forked or turned into a template, to frozen and makes the copy read-only.
// The copy is always one layer over a raw base: when src's backing file is
// itself a qcow2 layer (src is a fork, or was created from a template), that
// layer is copied and src's data committed into the copy, so the frozen
// file never depends on another sandbox's files and chains never grow past
// overlay -> frozen -> raw base, however deep forks of forks go. It costs
// what the sandbox and its ancestors wrote, never the base's size; copies
// are reflinks where the filesystem allows.
//
// src must be quiescent for the duration: the VM paused (QEMU's stop
// flushes its caches to the file) or its VMM gone. Afterwards the source
// sandbox carries on writing to src, and forks made with Clone see the disk
// as it was at Freeze. The caller keeps frozen until the last fork over it
// is removed.
func Freeze(ctx context.Context, src, frozen string) (Disk, CopyMethod, error) {
	info, err := Inspect(ctx, src, QCOW2)
	if err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	abs, err := filepath.Abs(frozen)
	if err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	if info.BackingFormat != QCOW2 {
		method, err := copyTo(ctx, src, abs, -1, 0o444)
		if err != nil {
			return Disk{}, "", fmt.Errorf("freeze %s to %s: %w", src, frozen, err)
		}
		return Disk{
			Path: abs, Format: QCOW2, SizeBytes: info.VirtualSize,
			Backing: info.FullBackingFile, BackingFormat: info.BackingFormat,
		}, method, nil
	}
	return mergeFreeze(ctx, src, abs, info)
}

// mergeFreeze freezes src whose backing file is a qcow2 layer over a raw
// base: the layer is copied to frozen and src's own clusters committed into
// the copy.
func mergeFreeze(ctx context.Context, src, frozen string, info Info) (Disk, CopyMethod, error) {
	parent, err := Inspect(ctx, info.FullBackingFile, QCOW2)
	if err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	if parent.BackingFormat == QCOW2 {
		return Disk{}, "", errdefs.New(errdefs.ErrFailedPrecondition,
			"freeze %s: backing chain is deeper than overlay -> layer -> raw base", src)
	}
	if err := atomicfile.CheckFree(frozen); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	work, err := atomicfile.TempName(frozen)
	if err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	top := work + ".top"
	defer os.Remove(work)
	defer os.Remove(top)
	method, err := copyTo(ctx, info.FullBackingFile, work, -1, 0o600)
	if err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: copy layer: %w", src, err)
	}
	if _, err := copyTo(ctx, src, top, -1, 0o600); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: copy overlay: %w", src, err)
	}
	// Point the overlay copy at the layer copy (-u: the content is the
	// same, only the name changes), then fold it in.
	if _, err := qemuImg(ctx, "rebase", "-u", "-f", string(QCOW2), "-F", string(QCOW2), "-b", work, top); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	if _, err := qemuImg(ctx, "commit", "-q", "-f", string(QCOW2), top); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
	}
	// The overlay may be larger than the layer (a bigger disk_mb).
	if info.VirtualSize > parent.VirtualSize {
		if _, err := qemuImg(ctx, "resize", "-q", "-f", string(QCOW2), work, strconv.FormatInt(info.VirtualSize, 10)); err != nil {
			return Disk{}, "", fmt.Errorf("freeze %s: %w", src, err)
		}
	}
	if err := os.Chmod(work, 0o444); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, errdefs.FromOS(err))
	}
	if err := os.Link(work, frozen); err != nil {
		return Disk{}, "", fmt.Errorf("freeze %s: %w", src, errdefs.FromOS(err))
	}
	return Disk{
		Path: frozen, Format: QCOW2, SizeBytes: info.VirtualSize,
		Backing: parent.FullBackingFile, BackingFormat: parent.BackingFormat,
	}, method, nil
}

// Clone creates a qcow2 overlay at path over frozen, a file made by Freeze,
// with the same virtual size. Each fork gets its own Clone of one frozen
// file; creating it copies nothing.
func Clone(ctx context.Context, frozen, path string) (Disk, error) {
	info, err := Inspect(ctx, frozen, QCOW2)
	if err != nil {
		return Disk{}, fmt.Errorf("clone %s: %w", frozen, err)
	}
	abs, err := filepath.Abs(frozen)
	if err != nil {
		return Disk{}, fmt.Errorf("clone %s: %w", frozen, err)
	}
	return createOverlay(ctx, abs, QCOW2, path, info.VirtualSize)
}

// CloneFrozen is Clone for a frozen disk the caller just got from Freeze:
// its virtual size is known, so no qemu-img info runs (one exec fewer on
// every create from a snapshot).
func CloneFrozen(ctx context.Context, frozen Disk, path string) (Disk, error) {
	if frozen.Format != QCOW2 || frozen.SizeBytes <= 0 || !filepath.IsAbs(frozen.Path) {
		return Disk{}, errdefs.New(errdefs.ErrInvalidArgument, "clone %s: not a frozen qcow2 disk from Freeze", frozen.Path)
	}
	return createOverlay(ctx, frozen.Path, QCOW2, path, frozen.SizeBytes)
}

// NewRaw creates a raw disk at path holding a copy of the raw base,
// extended (sparsely) to sizeMB MiB, for VMMs that read raw files only
// (Firecracker). With a reflink it is O(1) in data; without (ext4, as on
// the reference host) it is a sparse copy, which reads and writes every
// allocated byte of the base: seconds per GiB, not O(1).
func NewRaw(ctx context.Context, base, path string, sizeMB int) (Disk, CopyMethod, error) {
	absBase, baseSize, err := statImage(base)
	if err != nil {
		return Disk{}, "", fmt.Errorf("create raw disk %s: %w", path, err)
	}
	if err := checkSize(sizeMB, baseSize, absBase); err != nil {
		return Disk{}, "", fmt.Errorf("create raw disk %s: %w", path, err)
	}
	size := int64(sizeMB) * mib
	method, err := copyTo(ctx, absBase, path, size, 0o600)
	if err != nil {
		return Disk{}, "", fmt.Errorf("create raw disk %s from %s: %w", path, absBase, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Disk{}, "", fmt.Errorf("create raw disk %s: %w", path, err)
	}
	return Disk{Path: abs, Format: Raw, SizeBytes: size}, method, nil
}

// Remove deletes a disk file. An absent file is removed successfully; a
// directory is refused, so a wrong path cannot take a sandbox directory
// with it.
func Remove(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove disk %s: %w", path, errdefs.FromOS(err))
	}
	if fi.IsDir() {
		return errdefs.New(errdefs.ErrInvalidArgument, "remove disk %s: is a directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove disk %s: %w", path, errdefs.FromOS(err))
	}
	return nil
}

// Usage is the host space a disk file takes: its allocated blocks, not its
// apparent size. It is one stat call, cheap enough for every metrics scrape.
func Usage(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", path, errdefs.FromOS(err))
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("disk usage of %s: no block count on this platform", path)
	}
	// st_blocks counts 512-byte units whatever the filesystem block size.
	return int64(st.Blocks) * 512, nil
}

// statImage resolves a base image's absolute path and size. qcow2 records
// the backing path as given, so it must be absolute to survive the overlay
// being opened from another working directory.
func statImage(base string) (string, int64, error) {
	abs, err := filepath.Abs(base)
	if err != nil {
		return "", 0, fmt.Errorf("base image %s: %w", base, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", 0, fmt.Errorf("base image: %w", errdefs.FromOS(err))
	}
	if !fi.Mode().IsRegular() {
		return "", 0, errdefs.New(errdefs.ErrInvalidArgument, "base image %s is not a regular file", abs)
	}
	if fi.Size() == 0 {
		return "", 0, errdefs.New(errdefs.ErrInvalidArgument, "base image %s is empty", abs)
	}
	return abs, fi.Size(), nil
}

func checkSize(sizeMB int, baseSize int64, base string) error {
	if sizeMB <= 0 || sizeMB > maxSizeMB {
		return errdefs.New(errdefs.ErrInvalidArgument, "disk size %d MiB: must be between 1 and %d", sizeMB, maxSizeMB)
	}
	if int64(sizeMB)*mib < baseSize {
		return errdefs.New(errdefs.ErrInvalidArgument, "disk size %d MiB is smaller than base image %s (%d MiB)", sizeMB, base, (baseSize+mib-1)/mib)
	}
	return nil
}
