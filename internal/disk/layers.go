package disk

// Layers for template builds. A build runs each recipe step in a VM whose
// disk is an overlay on a private raw image of everything before the step
// (the "work" image). After the step, the overlay is exactly what the step
// changed: SaveLayer keeps a copy of it as the step's cached layer (a qcow2
// whose backing file is the previous step's layer), and CommitInto folds it
// into the work image for the next step. A later build that shares a prefix
// of steps rebuilds its work image from the cached chain with Flatten.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Flatten writes the whole content of src (raw, or a qcow2 with its chain
// of backing files) as a sparse raw image at dst, sized sizeMB MiB (at
// least src's virtual size). dst is written under a temporary name and
// renamed into place.
func Flatten(ctx context.Context, src string, format Format, dst string, sizeMB int) error {
	info, err := Inspect(ctx, src, format)
	if err != nil {
		return fmt.Errorf("flatten %s: %w", src, err)
	}
	if err := checkSize(sizeMB, info.VirtualSize, src); err != nil {
		return fmt.Errorf("flatten %s: %w", src, err)
	}
	tmp, err := atomicfile.TempName(dst)
	if err != nil {
		return fmt.Errorf("flatten %s: %w", src, err)
	}
	defer os.Remove(tmp)
	if format == Raw {
		if _, err := copyTo(ctx, src, tmp, int64(sizeMB)*mib, 0o600); err != nil {
			return fmt.Errorf("flatten %s: %w", src, err)
		}
	} else {
		// -S 4k keeps runs of zeroes as holes; -W lets qemu-img write out
		// of order (faster, and the order does not matter for a file).
		if _, err := qemuImg(ctx, "convert", "-q", "-W", "-S", "4k", "-f", string(format), "-O", string(Raw), src, tmp); err != nil {
			return fmt.Errorf("flatten %s: %w", src, err)
		}
		if err := os.Truncate(tmp, int64(sizeMB)*mib); err != nil {
			return fmt.Errorf("flatten %s: %w", src, errdefs.FromOS(err))
		}
		if err := os.Chmod(tmp, 0o600); err != nil {
			return fmt.Errorf("flatten %s: %w", src, errdefs.FromOS(err))
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("flatten %s: %w", src, errdefs.FromOS(err))
	}
	return nil
}

// SaveLayer copies overlay (a qcow2 over a work image) to dst and points
// the copy at parent instead: a file whose content equals the work image,
// as the step's cached layer. Only the backing name changes (rebase -u),
// so nothing of the parent is read. dst is root's alone (0600) and written
// under a temporary name.
func SaveLayer(ctx context.Context, overlay, dst, parent string, parentFormat Format) error {
	absParent, err := filepath.Abs(parent)
	if err != nil {
		return fmt.Errorf("save layer %s: %w", dst, err)
	}
	tmp, err := atomicfile.TempName(dst)
	if err != nil {
		return fmt.Errorf("save layer %s: %w", dst, err)
	}
	defer os.Remove(tmp)
	if _, err := copyTo(ctx, overlay, tmp, -1, 0o600); err != nil {
		return fmt.Errorf("save layer %s: %w", dst, err)
	}
	if _, err := qemuImg(ctx, "rebase", "-u", "-f", string(QCOW2), "-F", string(parentFormat), "-b", absParent, tmp); err != nil {
		return fmt.Errorf("save layer %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("save layer %s: %w", dst, errdefs.FromOS(err))
	}
	return nil
}

// CommitInto writes overlay's clusters into its backing file (the work
// image) and removes overlay. The VMM that wrote overlay must be gone.
func CommitInto(ctx context.Context, overlay string) error {
	if _, err := qemuImg(ctx, "commit", "-q", "-f", string(QCOW2), overlay); err != nil {
		return fmt.Errorf("commit %s: %w", overlay, err)
	}
	if err := os.Remove(overlay); err != nil {
		return fmt.Errorf("commit %s: %w", overlay, errdefs.FromOS(err))
	}
	return nil
}

// CheckChain reports whether every file of qcow2 layer's backing chain
// still exists and reads as an image: a cached layer whose ancestors were
// collected is unusable.
func CheckChain(ctx context.Context, layer string) error {
	if _, err := qemuImg(ctx, "info", "-U", "-f", string(QCOW2), "--backing-chain", layer); err != nil {
		return fmt.Errorf("check layer chain %s: %w", layer, err)
	}
	return nil
}

// VirtualSizeMB is the virtual size of image in MiB, rounded up.
func VirtualSizeMB(ctx context.Context, image string, format Format) (int, error) {
	info, err := Inspect(ctx, image, format)
	if err != nil {
		return 0, err
	}
	return int((info.VirtualSize + mib - 1) / mib), nil
}

// Chain lists the files of image's backing chain, image first, as
// absolute paths. It works on images a running VMM holds open.
func Chain(ctx context.Context, image string) ([]string, error) {
	out, err := qemuImg(ctx, "info", "--output=json", "--backing-chain", "-U", "-f", string(QCOW2), image)
	if err != nil {
		return nil, fmt.Errorf("backing chain of %s: %w", image, err)
	}
	var infos []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("backing chain of %s: parse qemu-img output: %w", image, err)
	}
	files := make([]string, 0, len(infos))
	for _, in := range infos {
		p, err := filepath.Abs(in.Filename)
		if err != nil {
			return nil, fmt.Errorf("backing chain of %s: %w", image, err)
		}
		files = append(files, filepath.Clean(p))
	}
	return files, nil
}

// Repoint records backing (of backingFormat) as image's backing file
// without reading either: for a qcow2 moved to another host, whose
// backing file has the same content at another path.
func Repoint(ctx context.Context, image, backing string, backingFormat Format) error {
	abs, err := filepath.Abs(backing)
	if err != nil {
		return fmt.Errorf("repoint %s: %w", image, err)
	}
	if _, err := qemuImg(ctx, "rebase", "-u", "-f", string(QCOW2), "-F", string(backingFormat), "-b", abs, image); err != nil {
		return fmt.Errorf("repoint %s: %w", image, err)
	}
	return nil
}
