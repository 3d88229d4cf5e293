//go:build linux

package vmmproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// jailMountPoint is where the jail's tmpfs is mounted, inside the new
// mount namespace only, before it becomes the root. Every source is opened
// before the tmpfs hides anything, so a source below it is still found.
const jailMountPoint = "/tmp"

// jailTmpfsOpts keeps the jail's own tmpfs tiny: it holds only the empty
// directories and files that the bind mounts sit on.
const jailTmpfsOpts = "size=1m,nr_inodes=4096,mode=0755"

// enterJail must run on a locked OS thread that will never run Go code
// again once the VMM is forked (the caller lets the thread die). It moves
// the thread into a new mount namespace whose root is an empty tmpfs with
// only j's paths bind-mounted in, at the same absolute paths, and makes
// that the thread's root and working directory, so that a process forked
// from the thread sees nothing else of the host's file system. The
// host's mounts are detached from the namespace, not merely hidden.
func enterJail(j *Jail) error {
	// CLONE_NEWNS implies CLONE_FS: only this thread's root and cwd move.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	// Nothing mounted from here on may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	binds, err := openBinds(j)
	defer func() {
		for _, b := range binds {
			unix.Close(b.fd)
		}
	}()
	if err != nil {
		return err
	}
	root := jailMountPoint
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, jailTmpfsOpts); err != nil {
		return fmt.Errorf("mount jail tmpfs: %w", err)
	}
	for _, b := range binds {
		if err := b.mount(root); err != nil {
			return err
		}
	}
	// The tmpfs itself becomes read-only once its mount points exist.
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("make jail root read-only: %w", err)
	}
	return pivot(root)
}

// bind is one path to carry into the jail.
type bind struct {
	path  string // where it appears, the same absolute path as on the host
	fd    int    // O_PATH of the source, opened before the tmpfs hides anything
	dir   bool
	flags uintptr // MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC as wanted
}

// openBinds opens every path of j, outermost first, skipping any path
// below another: it is already inside the outer bind.
func openBinds(j *Jail) ([]bind, error) {
	type want struct {
		path  string
		flags uintptr
	}
	var ws []want
	add := func(paths []string, flags uintptr) {
		for _, p := range paths {
			ws = append(ws, want{filepath.Clean(p), flags})
		}
	}
	add(j.ReadOnly, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV)
	add(j.ReadWrite, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
	add(j.Devices, unix.MS_NOSUID|unix.MS_NOEXEC)
	slices.SortStableFunc(ws, func(a, b want) int { return len(a.path) - len(b.path) })

	var out []bind
	var done []string
	for _, w := range ws {
		if !filepath.IsAbs(w.path) || w.path == "/" {
			return out, fmt.Errorf("jail path %q: want an absolute path other than /", w.path)
		}
		if slices.ContainsFunc(done, func(d string) bool { return w.path == d || strings.HasPrefix(w.path, d+"/") }) {
			continue
		}
		// Symlinks are followed: the jail shows the target's content at
		// the path the VMM was given.
		fd, err := unix.Open(w.path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return out, fmt.Errorf("jail: open %s: %w", w.path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return out, fmt.Errorf("jail: stat %s: %w", w.path, err)
		}
		out = append(out, bind{path: w.path, fd: fd, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR, flags: w.flags})
		done = append(done, w.path)
	}
	return out, nil
}

// mount creates b's mount point under root and bind-mounts the source on
// it with b's flags.
func (b bind) mount(root string) error {
	target := filepath.Join(root, b.path)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("jail: mount point for %s: %w", b.path, err)
	}
	if b.dir {
		if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("jail: mount point for %s: %w", b.path, err)
		}
	} else {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("jail: mount point for %s: %w", b.path, err)
		}
		f.Close()
	}
	// /proc/thread-self/fd follows the O_PATH descriptor to the very
	// inode opened above, whatever the host path names now.
	src := "/proc/thread-self/fd/" + strconv.Itoa(b.fd)
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("jail: bind %s: %w", b.path, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|b.flags, ""); err != nil {
		return fmt.Errorf("jail: restrict %s: %w", b.path, err)
	}
	return nil
}

// pivot makes root the thread's root and detaches the old root from the
// namespace, as runc does (pivot_root(".", ".") needs no put_old
// directory). The descriptors are close-on-exec and closed before the VMM
// is forked: an inherited handle on the old root would be a way out.
func pivot(root string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("jail: open old root: %w", err)
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("jail: open new root: %w", err)
	}
	defer unix.Close(newRoot)
	if err := unix.Fchdir(newRoot); err != nil {
		return fmt.Errorf("jail: enter new root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("jail: pivot_root: %w", err)
		}
		// The agent's root is not a mount point (it runs from an
		// initramfs): pivot_root cannot work there. A chroot in this
		// private namespace still shows the VMM nothing else; leaving it
		// needs CAP_SYS_CHROOT, which an unprivileged VMM lacks.
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("jail: chroot: %w", err)
		}
		return unix.Chdir("/")
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return fmt.Errorf("jail: enter old root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("jail: detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("jail: chdir /: %w", err)
	}
	return nil
}
