//go:build linux

package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// onThrowawayThread runs fn on a fresh OS thread that dies afterwards.
// fn may switch the thread's network namespace (setns, unshare) and need not
// switch back: the goroutine exits while locked, so Go destroys the thread
// instead of handing a thread in the wrong namespace to other goroutines.
func onThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose; see above.
		errc <- fn()
	}()
	return <-errc
}

// inNetNS runs fn on a throwaway thread inside the namespace at path.
func inNetNS(path string, fn func() error) error {
	return onThrowawayThread(func() error {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", path, errdefs.FromOS(err))
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// openNetNS opens the namespace at path; the caller closes it.
func openNetNS(path string) (netns.NsHandle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %s: %w", path, errdefs.FromOS(err))
	}
	return ns, nil
}

// createNamedNetNS makes a new network namespace and pins it with a bind
// mount at dir/name, as `ip netns add` does, so it outlives this process.
func createNamedNetNS(dir, name string) error {
	if err := ensureSharedMountDir(dir); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, errdefs.FromOS(err))
	}
	f.Close()
	err = onThrowawayThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		self := "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount netns at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// deleteNamedNetNS unpins the namespace at dir/name. The namespace itself
// goes away once nothing else (a VMM process) holds it. Absent is fine.
func deleteNamedNetNS(dir, name string) error {
	path := filepath.Join(dir, name)
	// EINVAL: not a mount point (half-created); ENOENT: already gone.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns mount point %s: %w", path, err)
	}
	return nil
}

// ensureSharedMountDir creates dir and makes it a shared mount, as iproute2
// does for /run/netns, so namespaces pinned there are visible to processes in
// other mount namespaces created later.
func ensureSharedMountDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, errdefs.FromOS(err))
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself, then share it.
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// setSysctls writes the given /proc/sys/net settings (path relative to
// /proc/sys, value) in the namespace at nsPath, skipping those already set.
// These sysctls are per namespace: /proc/sys/net shows the opening thread's.
func setSysctls(nsPath string, kv [][2]string) error {
	return inNetNS(nsPath, func() error {
		for _, e := range kv {
			f := filepath.Join("/proc/sys", e[0])
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == e[1] {
				continue
			}
			if err := os.WriteFile(f, []byte(e[1]+"\n"), 0o644); err != nil {
				return fmt.Errorf("set %s=%s in %s: %w", e[0], e[1], nsPath, err)
			}
		}
		return nil
	})
}

// pinCurrentNetNS opens the network namespace of the calling thread and
// returns a path to the open handle, valid for the life of the process.
//
// Not /proc/self/ns/net: that names the namespace of the process's main
// thread, and a goroutine that switched namespaces on a throwaway thread
// (onThrowawayThread) may have run on the main thread, which Go parks for
// good instead of destroying, leaving it in a slot's namespace. Unlocked
// threads are always in the host namespace: every switch either restores
// or kills its thread.
func pinCurrentNetNS() (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open own netns: %w", err)
	}
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(fd), nil
}
