// Package transfer moves a built template version between hosts: Pack
// writes its directory (image, template.json, memory snapshot) as one
// zstd-compressed tar stream, Unpack writes it into another host's images
// directory and verifies it (the image's sha256 against the digest the
// control plane recorded for the build, the snapshot against its manifest)
// before it is published.
//
// Until an object store exists, the control plane relays the stream from
// the version's home host to the host that needs it (hostagent's
// ExportTemplate and ImportTemplate); this package is the one place that
// knows the format, so a store can hold the same stream later.
package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Names in a version's directory.
const (
	// sumsName is the stream's last entry: the sha256 of every file, as
	// Pack read it, which Unpack checks what it wrote against.
	sumsName     = "SHA256SUMS"
	imageName    = "rootfs.ext4"
	configName   = "template.json"
	snapshotDir  = "snapshot"
	frozenDisk   = "disk.qcow2"
	sparseBlock  = 64 << 10
	maxNameDepth = 2
)

// Pack writes the version in dir as a stream to w.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return fmt.Errorf("pack template: %w", err)
	}
	tw := tar.NewWriter(zw)
	sums := map[string]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir // a snapshot being taken
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: filepath.ToSlash(rel) + "/", Mode: 0o755, ModTime: fi.ModTime()})
		case fi.Mode().IsRegular():
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(rel), Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(io.MultiWriter(tw, h), f); err != nil {
				return err
			}
			sums[filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		}
		return nil // nothing else belongs in a version's directory
	})
	if err == nil {
		var b []byte
		if b, err = json.Marshal(sums); err == nil {
			if err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: sumsName, Mode: 0o644, Size: int64(len(b))}); err == nil {
				_, err = tw.Write(b)
			}
		}
	}
	if err != nil {
		zw.Close()
		return fmt.Errorf("pack template %s: %w", filepath.Base(dir), err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack template: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("pack template: %w", err)
	}
	return nil
}

// Unpack reads a stream made by Pack into dir (which must not exist),
// writing runs of zeros as holes, and checks that the image's sha256 is
// digest and is what its template.json says. On error dir is removed.
func Unpack(ctx context.Context, r io.Reader, dir, digest string) (err error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("unpack template: %w", errdefs.FromOS(err))
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	zr, err := zstd.NewReader(r)
	if err != nil {
		return fmt.Errorf("unpack template: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var imageDigest string
	var config []byte
	got := map[string]string{}
	var want map[string]string
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: %v", err)
		}
		if h.Name == sumsName {
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil || json.Unmarshal(b, &want) != nil {
				return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: unreadable %s", sumsName)
			}
			continue
		}
		if want != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: %s after %s", h.Name, sumsName)
		}
		name, err := checkName(h.Name)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("unpack template: %w", err)
			}
		case tar.TypeReg:
			sum, err := writeSparse(dst, tr, h.Size, os.FileMode(h.Mode).Perm())
			if err != nil {
				return fmt.Errorf("unpack template: %s: %w", name, err)
			}
			got[filepath.ToSlash(name)] = sum
			switch name {
			case imageName:
				imageDigest = "sha256:" + sum
			case configName:
				if config, err = os.ReadFile(dst); err != nil {
					return fmt.Errorf("unpack template: %w", err)
				}
			}
		default:
			return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: %s: not a file or directory", name)
		}
	}
	if want == nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: the stream ended before its %s (cut short?)", sumsName)
	}
	if !maps.Equal(got, want) {
		return errdefs.New(errdefs.ErrFailedPrecondition, "unpack template: the files received differ from what was sent")
	}
	var cfg struct {
		Digest string `json:"digest"`
	}
	if config == nil || json.Unmarshal(config, &cfg) != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: no readable %s", configName)
	}
	switch {
	case imageDigest == "":
		return errdefs.New(errdefs.ErrInvalidArgument, "unpack template: no %s", imageName)
	case imageDigest != cfg.Digest || (digest != "" && imageDigest != digest):
		return errdefs.New(errdefs.ErrFailedPrecondition,
			"unpack template: the image's digest is %s, want %s (recorded) and %s (its template.json)", imageDigest, digest, cfg.Digest)
	}
	return nil
}

// checkName accepts the names a version's directory holds: a file at its
// root or in snapshot/.
func checkName(name string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(strings.TrimSuffix(name, "/")))
	parts := strings.Split(clean, string(filepath.Separator))
	bad := filepath.IsAbs(clean) || len(parts) > maxNameDepth || (len(parts) == 2 && parts[0] != snapshotDir)
	for _, p := range parts {
		if p == ".." || p == "." || p == "" || strings.HasPrefix(p, ".") {
			bad = true
		}
	}
	if bad {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "unpack template: %q has no place in a template", name)
	}
	return clean, nil
}

// writeSparse copies n bytes of r to a new file at path, seeking over
// all-zero blocks, and returns the hex sha256 of what it read.
func writeSparse(path string, r io.Reader, n int64, mode os.FileMode) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	buf := make([]byte, sparseBlock)
	zero := make([]byte, sparseBlock)
	var off int64
	for off < n {
		want := min(int64(len(buf)), n-off)
		k, err := io.ReadFull(r, buf[:want])
		if err != nil {
			f.Close()
			return "", err
		}
		h.Write(buf[:k])
		if !bytes.Equal(buf[:k], zero[:k]) {
			if _, err := f.WriteAt(buf[:k], off); err != nil {
				f.Close()
				return "", err
			}
		}
		off += int64(k)
	}
	if err := f.Truncate(n); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FrozenDisk is the snapshot disk of an unpacked version whose backing
// file must be pointed at the version's image on this host.
func FrozenDisk(dir string) string { return filepath.Join(dir, snapshotDir, frozenDisk) }
