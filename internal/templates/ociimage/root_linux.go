package ociimage

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// root is a directory that file operations cannot leave. Paths are resolved
// with openat2(RESOLVE_IN_ROOT): ".." stops at the root and a symlink
// (absolute or relative) in a parent component resolves as if the directory
// were "/", which is how the guest will see it. That is containerd's rule
// (sanitize, do not follow out), enforced by the kernel rather than by path
// arithmetic, so a symlink planted by an earlier entry cannot redirect a
// later write outside.
type root struct {
	dir string
	fd  int
}

func openRoot(dir string) (*root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, errdefs.FromOS(&os.PathError{Op: "open", Path: dir, Err: err}))
	}
	return &root{dir: dir, fd: fd}, nil
}

func (r *root) Close() error { return unix.Close(r.fd) }

// clean turns an archive or image path into a relative path inside the root
// ("" for the root itself). A leading "/" is dropped (tar entries and
// image paths are rooted at the image's /); a ".." that would climb above
// the root is refused, since no honest layer has one.
func clean(p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "path %q contains a NUL byte", p)
	}
	depth := 0
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", errdefs.New(errdefs.ErrInvalidArgument, "path %q climbs out of the image root", p)
			}
		default:
			depth++
		}
	}
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/"), nil
}

// openDir returns an O_PATH fd of directory rel (relative, cleaned),
// resolved inside the root. With create, missing components are made
// (0755, root-owned), like a tar extractor does for entries whose parents
// were not in the archive.
func (r *root) openDir(rel string, create bool) (int, error) {
	return r.openDirDepth(rel, create, 0)
}

// maxLinks bounds the symlinks followed while creating parents, as the
// kernel's 40 for path resolution.
const maxLinks = 40

func (r *root) openDirDepth(rel string, create bool, links int) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	if rel == "" {
		return unix.Openat2(r.fd, ".", how)
	}
	fd, err := unix.Openat2(r.fd, rel, how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: "/" + rel, Err: err}
		}
		return fd, nil
	}
	parent, base := path.Split(rel)
	pfd, err := r.openDirDepth(strings.TrimSuffix(parent, "/"), true, links)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "mkdir", Path: "/" + rel, Err: err}
	}
	// A dangling symlink in the way: make its target, resolved inside the
	// root (a layer may ship /var/run -> /run before anything in /run).
	if target, err := readlinkat(pfd, base); err == nil {
		if links >= maxLinks {
			return -1, &os.PathError{Op: "open", Path: "/" + rel, Err: unix.ELOOP}
		}
		if !path.IsAbs(target) {
			dirReal, err := r.realPath(pfd)
			if err != nil {
				return -1, err
			}
			rootReal, err := r.realPath(r.fd)
			if err != nil {
				return -1, err
			}
			target = path.Join("/", strings.TrimPrefix(dirReal, rootReal), target)
		}
		// path.Clean of a rooted path drops ".." above the root, which is
		// where the kernel would stop too.
		return r.openDirDepth(strings.TrimPrefix(path.Clean(target), "/"), true, links+1)
	}
	fd, err = unix.Openat2(pfd, base, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/" + rel, Err: err}
	}
	return fd, nil
}

// parent opens the directory holding rel and returns it with rel's last
// component. rel must not be the root.
func (r *root) parent(rel string, create bool) (int, string, error) {
	dir, base := path.Split(rel)
	if base == "" {
		return -1, "", errdefs.New(errdefs.ErrInvalidArgument, "path %q names the root", rel)
	}
	fd, err := r.openDir(strings.TrimSuffix(dir, "/"), create)
	return fd, base, err
}

// realPath is the host path of an fd opened inside the root, as the kernel
// resolved it; it is checked to lie under the root.
func (r *root) realPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	rootReal, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(r.fd))
	if err != nil {
		return "", err
	}
	if p != rootReal && !strings.HasPrefix(p, strings.TrimSuffix(rootReal, "/")+"/") {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "resolved path %s is outside %s", p, rootReal)
	}
	return p, nil
}

// removeAll removes rel (file, symlink or whole directory) if it exists. The
// last component is not followed: a symlink is removed, not its target.
func (r *root) removeAll(rel string) error {
	pfd, base, err := r.parent(rel, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &os.PathError{Op: "stat", Path: "/" + rel, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return &os.PathError{Op: "remove", Path: "/" + rel, Err: err}
		}
		return nil
	}
	p, err := r.realPath(pfd)
	if err != nil {
		return err
	}
	// os.RemoveAll never follows symlinks inside the tree it removes.
	return os.RemoveAll(path.Join(p, base))
}

// lstat stats rel without following its last component.
func (r *root) lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return st, err
	}
	defer unix.Close(pfd)
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat", Path: "/" + rel, Err: err}
	}
	return st, nil
}

// stat stats rel following symlinks, all resolved inside the root (as the
// guest would resolve them).
func (r *root) stat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat2(r.fd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return st, &os.PathError{Op: "stat", Path: "/" + rel, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: "/" + rel, Err: err}
	}
	return st, nil
}

// readFile reads rel (symlinks resolved inside the root); a missing file
// gives nil, nil.
func (r *root) readFile(rel string) ([]byte, error) {
	fd, err := unix.Openat2(r.fd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/" + rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), "/"+rel)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "/%s is not a regular file", rel)
	}
	buf := make([]byte, 0, st.Size())
	b := make([]byte, 32<<10)
	for {
		n, err := f.Read(b)
		buf = append(buf, b[:n]...)
		if err != nil {
			break
		}
	}
	return buf, nil
}

// createFile replaces rel by a new regular file (the old entry, whatever it
// was, is removed first so that a symlink at rel is never written through)
// and returns it open for writing.
func (r *root) createFile(rel string, mode uint32) (*os.File, error) {
	if err := r.removeAll(rel); err != nil {
		return nil, err
	}
	pfd, base, err := r.parent(rel, true)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&0o777)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: "/" + rel, Err: err}
	}
	return os.NewFile(uintptr(fd), "/"+rel), nil
}

// writeFile writes data to rel atomically enough for a tree nobody else
// uses (remove, create, write), then sets owner and mode; fchmod after
// fchown keeps setuid bits that chown would clear.
func (r *root) writeFile(rel string, data []byte, mode uint32, uid, gid int) error {
	f, err := r.createFile(rel, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write /%s: %w", rel, err)
	}
	if err := f.Chown(uid, gid); err != nil {
		_ = f.Close()
		return fmt.Errorf("chown /%s: %w", rel, err)
	}
	if err := f.Chmod(os.FileMode(mode&0o777) | modeBits(mode)); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod /%s: %w", rel, err)
	}
	return f.Close()
}

// modeBits converts the setuid/setgid/sticky bits of a Unix mode to Go's.
func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// readlinkat returns the target of name in dir if it is a symlink.
func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
