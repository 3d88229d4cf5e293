package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Info is what qemu-img reports about an image.
type Info struct {
	Format      Format `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	// ActualFileSize is the host space the file takes (allocated bytes).
	ActualFileSize int64 `json:"actual-size"`
	ClusterSize    int64 `json:"cluster-size"`
	// BackingFile is the backing path as recorded in the image, and
	// FullBackingFile the same resolved to an absolute path.
	BackingFile     string `json:"backing-filename"`
	FullBackingFile string `json:"full-backing-filename"`
	BackingFormat   Format `json:"backing-filename-format"`
}

// Inspect runs qemu-img info on path. The format is given, never probed:
// probing a guest-writable raw file could read guest-forged qcow2 headers.
// It works on images a running VMM holds open (-U skips QEMU's lock).
func Inspect(ctx context.Context, path string, format Format) (Info, error) {
	if _, err := os.Stat(path); err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", path, errdefs.FromOS(err))
	}
	out, err := qemuImg(ctx, "info", "--output=json", "-U", "-f", string(format), path)
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	var info Info
	if err := json.Unmarshal(out, &info); err != nil {
		return Info{}, fmt.Errorf("inspect %s: parse qemu-img output: %w", path, err)
	}
	return info, nil
}

// createOverlay makes a qcow2 file at path over backing. qemu-img create
// would silently replace an existing file, so the image is made under a
// temporary name and linked into place, which fails if path exists.
func createOverlay(ctx context.Context, backing string, backingFormat Format, path string, size int64) (Disk, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", path, err)
	}
	if err := atomicfile.CheckFree(abs); err != nil {
		return Disk{}, fmt.Errorf("create overlay: %w", err)
	}
	tmp, err := atomicfile.TempName(abs)
	if err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", abs, err)
	}
	defer os.Remove(tmp) // after the link, this only drops the temporary name
	if _, err := qemuImg(ctx, "create", "-q", "-f", string(QCOW2),
		"-F", string(backingFormat), "-b", backing, tmp, strconv.FormatInt(size, 10)); err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", abs, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", abs, errdefs.FromOS(err))
	}
	if err := os.Link(tmp, abs); err != nil {
		return Disk{}, fmt.Errorf("create overlay %s: %w", abs, errdefs.FromOS(err))
	}
	return Disk{Path: abs, Format: QCOW2, SizeBytes: size, Backing: backing, BackingFormat: backingFormat}, nil
}

// qemuImg runs qemu-img with args and returns its stdout; a failure carries
// the start of its stderr, which is where qemu-img says what went wrong.
func qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "qemu-img not found (install qemu-utils): %v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("qemu-img %s: %w", args[0], ctxErr)
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 1024 {
			msg = msg[:1024] + "..."
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("qemu-img %s: %s: %w", args[0], msg, err)
		}
		return nil, fmt.Errorf("qemu-img %s: %w", args[0], err)
	}
	return stdout.Bytes(), nil
}
