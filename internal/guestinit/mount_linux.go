package guestinit

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// bootMounts are the kernel filesystems a Debian userland expects, in mount
// order (each target must exist on what is mounted before it). /tmp is not
// here: it stays on the root disk, so files written there survive a pause.
func bootMounts() []mountSpec {
	const nsd = unix.MS_NOSUID | unix.MS_NODEV
	return []mountSpec{
		{source: "proc", target: "/proc", fstype: "proc", flags: nsd | unix.MS_NOEXEC},
		{source: "sysfs", target: "/sys", fstype: "sysfs", flags: nsd | unix.MS_NOEXEC},
		{source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755"},
		// gid 5 is Debian's tty group; ptmxmode lets every user open ptys.
		{source: "devpts", target: "/dev/pts", fstype: "devpts", flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "ptmxmode=0666,mode=0620,gid=5"},
		{source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: nsd, data: "mode=1777"},
		{source: "tmpfs", target: "/run", fstype: "tmpfs", flags: nsd, data: "mode=0755"},
		{source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: nsd | unix.MS_NOEXEC, data: "nsdelegate"},
	}
}

// mountAll mounts bootMounts, skipping those already in place, and carries
// on past failures (a guest without /dev/shm is better than no guest).
func mountAll() error {
	var errs []error
	mounted := map[string]string{}
	for _, m := range bootMounts() {
		if m.target != "/proc" {
			// /proc is mounted first, so from here on mountinfo is readable.
			if cur, err := currentMounts(); err == nil {
				mounted = cur
			}
		} else if _, err := os.Stat("/proc/self/mountinfo"); err == nil {
			continue
		}
		if !needsMount(m, mounted) {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("create mount point %s: %w", m.target, err))
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

func currentMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

// devLinks are the /dev symlinks udev would make and bash needs (process
// substitution uses /dev/fd).
var devLinks = [][2]string{
	{"/proc/self/fd", "/dev/fd"},
	{"/proc/self/fd/0", "/dev/stdin"},
	{"/proc/self/fd/1", "/dev/stdout"},
	{"/proc/self/fd/2", "/dev/stderr"},
	{"/proc/kcore", "/dev/core"},
}

// prepareFilesystem makes the links above and gives /tmp its sticky mode.
func prepareFilesystem() error {
	var errs []error
	for _, l := range devLinks {
		if _, err := os.Lstat(l[1]); err == nil {
			continue
		}
		if err := os.Symlink(l[0], l[1]); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", l[1], err))
		}
	}
	if err := os.MkdirAll("/tmp", 0o777); err != nil {
		errs = append(errs, fmt.Errorf("create /tmp: %w", err))
	} else if err := os.Chmod("/tmp", 0o777|os.ModeSticky); err != nil {
		errs = append(errs, fmt.Errorf("chmod /tmp: %w", err))
	}
	return errors.Join(errs...)
}

// ensureStdio gives PID 1 the console as stdin/stdout/stderr if the kernel
// did not (no /dev/console on the root filesystem at exec time).
func ensureStdio() error {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return nil
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	for _, target := range []int{0, 1, 2} {
		if fd != target {
			if err := unix.Dup3(fd, target, 0); err != nil {
				return fmt.Errorf("dup console to fd %d: %w", target, err)
			}
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}
