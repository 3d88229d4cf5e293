package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Unpack applies the layers, lowest first, to dir (created if missing; it
// should be empty). Whiteouts are honoured: ".wh.<name>" removes <name> of
// lower layers and ".wh..wh..opq" hides everything lower layers put in its
// directory. Files keep owner, mode (setuid included), mtime, symlinks,
// hardlinks, devices, fifos and xattrs. No entry can write outside dir: a
// path with ".." above the root is refused, absolute paths and symlinks are
// resolved inside dir (see root).
func (p *Pulled) Unpack(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, errdefs.FromOS(err))
	}
	r, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	b := &budget{left: p.maxUnpacked}
	if b.left <= 0 {
		b.left = DefaultMaxUnpackedBytes
	}
	b.limit = b.left
	for i, l := range p.Layers {
		start := time.Now()
		if err := applyLayerFile(ctx, r, l.Path, b); err != nil {
			return fmt.Errorf("unpack %s layer %d/%d (%s): %w", p.Ref, i+1, len(p.Layers), short(l.Digest), err)
		}
		if p.log != nil {
			p.log(fmt.Sprintf("unpacked layer %d/%d %s in %s", i+1, len(p.Layers), short(l.Digest), time.Since(start).Round(time.Millisecond)))
		}
	}
	return nil
}

// ApplyLayer applies one layer (a tar stream, gzip- or zstd-compressed or
// not) to dir, as Unpack does for each layer.
func ApplyLayer(ctx context.Context, dir string, layer io.Reader) error {
	r, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	return applyLayer(ctx, r, layer, &budget{left: DefaultMaxUnpackedBytes, limit: DefaultMaxUnpackedBytes})
}

// budget is what is left of the unpacked-bytes cap.
type budget struct{ left, limit int64 }

func (b *budget) tooLarge() error {
	return errdefs.New(errdefs.ErrTooLarge, "image unpacks to more than %s of files", humanBytes(b.limit))
}

func applyLayerFile(ctx context.Context, r *root, blob string, b *budget) error {
	f, err := os.Open(blob)
	if err != nil {
		return fmt.Errorf("open layer blob: %w", errdefs.FromOS(err))
	}
	defer f.Close()
	return applyLayer(ctx, r, f, b)
}

// decompress sniffs the compression from the magic bytes rather than
// trusting the media type (registries and tools get it wrong).
func decompress(in io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(in, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "layer is not valid gzip: %v", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "layer is not valid zstd: %v", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

type dirTime struct {
	rel   string
	mtime time.Time
}

func applyLayer(ctx context.Context, r *root, layer io.Reader, b *budget) error {
	rc, err := decompress(ctxReader{ctx, layer})
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	// Paths this layer wrote: an opaque marker hides lower layers only, so
	// what this layer put in the directory before the marker must survive.
	mine := map[string]bool{}
	// Directories above paths this layer wrote, perhaps without writing
	// the directory itself.
	anc := map[string]bool{}
	var dirs []dirTime
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errdefs.New(errdefs.ErrInvalidArgument, "layer is not a valid tar: %v", err)
		}
		rel, err := clean(h.Name)
		if err != nil {
			return err
		}
		base := path.Base(rel)
		dir := path.Dir(rel)
		if dir == "." {
			dir = ""
		}
		switch {
		case base == whiteoutOpaque:
			if err := opaque(r, dir, mine, anc); err != nil {
				return fmt.Errorf("opaque whiteout in /%s: %w", dir, err)
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			target := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
			if mine[target] {
				continue // whiteouts apply to lower layers only
			}
			if err := r.removeAll(target); err != nil {
				return fmt.Errorf("whiteout /%s: %w", target, err)
			}
			continue
		}
		if rel == "" {
			// The root itself: keep its metadata from the image.
			if h.Typeflag == tar.TypeDir {
				if err := unix.Fchownat(r.fd, ".", h.Uid, h.Gid, 0); err != nil {
					return fmt.Errorf("chown /: %w", err)
				}
				if err := unix.Fchmodat(r.fd, ".", uint32(h.Mode)&0o7777, 0); err != nil {
					return fmt.Errorf("chmod /: %w", err)
				}
			}
			continue
		}
		mine[rel] = true
		for a := path.Dir(rel); a != "." && !anc[a]; a = path.Dir(a) {
			anc[a] = true
		}
		if h.Typeflag == tar.TypeReg {
			if h.Size > b.left {
				return b.tooLarge()
			}
			b.left -= h.Size
		}
		if err := writeEntry(r, rel, h, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{rel, h.ModTime})
		}
	}
	// Directory mtimes last, deepest first: creating their entries moved them.
	for _, d := range slices.Backward(dirs) {
		pfd, base, err := r.parent(d.rel, false)
		if err != nil {
			continue // removed by a later entry of the layer
		}
		ts := []unix.Timespec{unix.NsecToTimespec(d.mtime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		_ = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
		_ = unix.Close(pfd)
	}
	return nil
}

// opaque removes every entry of dir that this layer did not write; in a
// directory this layer only wrote below, it recurses.
func opaque(r *root, dir string, mine, anc map[string]bool) error {
	fd, err := r.openDir(dir, true)
	if err != nil {
		return err
	}
	p, err := r.realPath(fd)
	_ = unix.Close(fd)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		child := path.Join(dir, e.Name())
		if mine[child] {
			continue
		}
		if anc[child] && e.IsDir() {
			if err := opaque(r, child, mine, anc); err != nil {
				return err
			}
			continue
		}
		if err := r.removeAll(child); err != nil {
			return err
		}
	}
	return nil
}

func writeEntry(r *root, rel string, h *tar.Header, body io.Reader) error {
	mode := uint32(h.Mode) & 0o7777
	// An existing directory stays when the entry is a directory (its
	// children are lower layers' and stay visible); anything else at rel is
	// replaced.
	if h.Typeflag == tar.TypeDir {
		if st, err := r.lstat(rel); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return setMeta(r, rel, h, mode, false)
		}
	}
	if h.Typeflag != tar.TypeXGlobalHeader {
		if err := r.removeAll(rel); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeReg: // archive/tar turns the old TypeRegA into TypeReg
		f, err := r.createFile(rel, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, body); err != nil {
			_ = f.Close()
			return fmt.Errorf("write: %w", err)
		}
		if err := f.Chown(h.Uid, h.Gid); err != nil {
			_ = f.Close()
			return fmt.Errorf("chown: %w", err)
		}
		if err := f.Chmod(os.FileMode(mode&0o777) | modeBits(mode)); err != nil {
			_ = f.Close()
			return fmt.Errorf("chmod: %w", err)
		}
		// After chown, which drops security.capability. Best effort: file
		// capabilities are what matters, and the host filesystem may
		// refuse other namespaces.
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				_ = unix.Fsetxattr(int(f.Fd()), name, []byte(v), 0)
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
		return setTimes(r, rel, h)
	case tar.TypeDir:
		pfd, base, err := r.parent(rel, true)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(pfd, base, 0o700)
		_ = unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		return setMeta(r, rel, h, mode, false)
	case tar.TypeSymlink:
		if strings.ContainsRune(h.Linkname, 0) {
			return errdefs.New(errdefs.ErrInvalidArgument, "symlink target contains a NUL byte")
		}
		pfd, base, err := r.parent(rel, true)
		if err != nil {
			return err
		}
		// The target is stored as is: it is only ever resolved inside the
		// root, here and in the guest.
		err = unix.Symlinkat(h.Linkname, pfd, base)
		_ = unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return setMeta(r, rel, h, mode, true)
	case tar.TypeLink:
		target, err := clean(h.Linkname)
		if err != nil {
			return err
		}
		ofd, obase, err := r.parent(target, false)
		if err != nil {
			return fmt.Errorf("hardlink target %s: %w", h.Linkname, err)
		}
		defer unix.Close(ofd)
		pfd, base, err := r.parent(rel, true)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
		if err := unix.Linkat(ofd, obase, pfd, base, 0); err != nil {
			return fmt.Errorf("hardlink to %s: %w", h.Linkname, err)
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := uint32(unix.S_IFIFO)
		switch h.Typeflag {
		case tar.TypeChar:
			kind = unix.S_IFCHR
		case tar.TypeBlock:
			kind = unix.S_IFBLK
		}
		pfd, base, err := r.parent(rel, true)
		if err != nil {
			return err
		}
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		err = unix.Mknodat(pfd, base, kind|0o600, int(dev))
		_ = unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return setMeta(r, rel, h, mode, false)
	case tar.TypeXGlobalHeader:
		return nil
	default:
		// Sparse files, GNU long-name records and the like are handled by
		// archive/tar; anything left is not part of a root filesystem.
		return errdefs.New(errdefs.ErrInvalidArgument, "unsupported tar entry type %q", string(h.Typeflag))
	}
}

// setMeta sets owner, mode (not for symlinks, which have none) and times.
func setMeta(r *root, rel string, h *tar.Header, mode uint32, symlink bool) error {
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if !symlink {
		// rel was just made by us (or checked to be a directory), so
		// following it is safe: fchmodat has no working NOFOLLOW.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime(h).UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func setTimes(r *root, rel string, h *tar.Header) error {
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	ts := []unix.Timespec{unix.NsecToTimespec(atime(h).UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func atime(h *tar.Header) time.Time {
	if h.AccessTime.IsZero() {
		return h.ModTime
	}
	return h.AccessTime
}
