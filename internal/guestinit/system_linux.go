package guestinit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// writeFileAtomic replaces path with data through a rename, so a reader
// never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// configureNames sets the hostname and writes /etc/hostname, /etc/hosts and
// /etc/resolv.conf.
func configureNames(cfg Config) error {
	var errs []error
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		errs = append(errs, fmt.Errorf("set hostname %s: %w", cfg.Hostname, err))
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{"/etc/hostname", []byte(cfg.Hostname + "\n")},
		{"/etc/hosts", Hosts(cfg.Hostname)},
		{"/etc/resolv.conf", ResolvConf(cfg.DNS)},
	} {
		if err := writeFileAtomic(f.path, f.data, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// errNoEth0 means the VM has no network device; not an error for a guest
// booted without one (tests, templates built offline).
var errNoEth0 = errors.New("no eth0")

// configureNetwork brings lo up and gives eth0 its address and default route.
func configureNetwork(cfg Config) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return errNoEth0
		}
		return fmt.Errorf("find eth0: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   cfg.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(cfg.Address.Bits(), cfg.Address.Addr().BitLen()),
	}}
	if err := netlink.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("add %s to eth0: %w", cfg.Address, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", cfg.Gateway, err)
	}
	return nil
}

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// growRoot grows the root filesystem online to fill its block device: the
// host gives every sandbox a copy-on-write disk of its disk_mb size, larger
// than the image. It returns the old and new sizes in bytes (equal when
// there was nothing to do).
func growRoot() (oldBytes, newBytes uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return 0, 0, fmt.Errorf("stat /: %w", err)
	}
	// The device node named by sysfs, rather than root= from the command
	// line, which may be a UUID or a label.
	uevent, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return 0, 0, fmt.Errorf("find root device: %w", err)
	}
	name, err := ueventDevName(string(uevent))
	if err != nil {
		return 0, 0, fmt.Errorf("find root device: %w", err)
	}
	dev := "/dev/" + name
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("open root device: %w", err)
	}
	defer f.Close()
	var devBytes uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&devBytes))); errno != 0 {
		return 0, 0, fmt.Errorf("size of %s: %w", dev, errno)
	}
	buf := make([]byte, SuperblockSize)
	if _, err := f.ReadAt(buf, SuperblockOffset); err != nil {
		return 0, 0, fmt.Errorf("read superblock of %s: %w", dev, err)
	}
	sb, err := ParseSuperblock(buf)
	if err != nil {
		return 0, 0, fmt.Errorf("read superblock of %s: %w", dev, err)
	}
	target, grow := GrowTarget(sb, devBytes)
	oldBytes = sb.Blocks * sb.BlockSize
	if !grow {
		return oldBytes, oldBytes, nil
	}
	root, err := os.Open("/")
	if err != nil {
		return 0, 0, fmt.Errorf("open /: %w", err)
	}
	defer root.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, root.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&target))); errno != 0 {
		return 0, 0, fmt.Errorf("resize / from %d to %d blocks: %w", sb.Blocks, target, errno)
	}
	return oldBytes, target * sb.BlockSize, nil
}

// readUptimeMillis returns milliseconds since boot, or -1 if unknown.
func readUptimeMillis() int64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return -1
	}
	ms, err := uptimeMillis(string(b))
	if err != nil {
		return -1
	}
	return ms
}
