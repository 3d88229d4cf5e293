//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// tapAttachEnv tells a re-executed test binary to act as the unprivileged
// attacher in TestSetTAPOwner: "uid:gid".
const tapAttachEnv = "WRENN_NETWORK_TAP_ATTACH_AS"

// TestTAPAttachHelper runs in a child process started by TestSetTAPOwner. It
// drops to the identity in tapAttachEnv and attaches fd 3 (/dev/net/tun,
// opened by the parent inside the slot netns) to the TAP, as an
// unprivileged VMM would. It prints "attached" or the errno name.
func TestTAPAttachHelper(t *testing.T) {
	as := os.Getenv(tapAttachEnv)
	if as == "" {
		t.Skip("helper process: runs only when started by TestSetTAPOwner")
	}
	uidS, gidS, _ := strings.Cut(as, ":")
	uid, err1 := strconv.Atoi(uidS)
	gid, err2 := strconv.Atoi(gidS)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("bad %s=%q: %v", tapAttachEnv, as, err)
	}
	// Go applies these to every thread of the process.
	if err := errors.Join(unix.Setgroups(nil), unix.Setresgid(gid, gid, gid), unix.Setresuid(uid, uid, uid)); err != nil {
		t.Fatalf("drop privileges: %v", err)
	}
	ifr, err := unix.NewIfreq(TapName)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(3, unix.TUNSETIFF, ifr); err != nil {
		fmt.Println("result:", unix.ErrnoName(err.(unix.Errno)))
		return
	}
	fmt.Println("result: attached")
}

// attachAs opens /dev/net/tun inside the slot netns (as root: only the
// attach below is what the kernel checks against the TAP's owner), hands
// it to a child process running as uid:gid and returns what its TUNSETIFF
// on the slot's TAP gave.
func attachAs(t *testing.T, s *Slot, uid, gid int) string {
	t.Helper()
	var tun *os.File
	err := inNetNS(s.NetNSPath(), func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		tun = os.NewFile(uintptr(fd), "tun")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTAPAttachHelper$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d", tapAttachEnv, uid, gid))
	cmd.ExtraFiles = []*os.File{tun}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as %d:%d: %v\n%s", uid, gid, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "result: "); ok {
			return r
		}
	}
	t.Fatalf("helper as %d:%d printed no result:\n%s", uid, gid, out)
	return ""
}

// TestSetTAPOwner: after SetTAPOwner the TAP reports the owner and group,
// a process with exactly that identity can attach to it and another
// unprivileged one cannot; ownership cannot change while the TAP is held,
// and pools without a TAP or released slots refuse.
func TestSetTAPOwner(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	cfg := w.cfg
	cfg.EmulateGuest = false
	pool, err := NewPool(cfg, nil)
	w.must(err)
	w.must(pool.Reclaim(ctx))
	s, err := pool.Acquire(ctx)
	w.must(err)
	w.must(pool.Setup(ctx, s, Policy{Internet: true}))
	t.Cleanup(func() { _ = pool.Release(ctx, s) })

	const uid, gid = 200777, 200778
	if got := attachAs(t, s, uid, gid); got != "EPERM" {
		t.Fatalf("attach as %d:%d before SetTAPOwner: %s, want EPERM (a root-owned TAP)", uid, gid, got)
	}
	w.must(pool.SetTAPOwner(ctx, s, uid, gid))

	w.must(withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
		l, err := h.LinkByName(TapName)
		if err != nil {
			return err
		}
		tap, ok := l.(*netlink.Tuntap)
		if !ok {
			return fmt.Errorf("%s is %T, want *netlink.Tuntap", TapName, l)
		}
		if tap.Owner != uid || tap.Group != gid {
			t.Errorf("%s owner:group = %d:%d, want %d:%d", TapName, tap.Owner, tap.Group, uid, gid)
		}
		if tap.Flags&netlink.TUNTAP_VNET_HDR == 0 || tap.Flags&netlink.TUNTAP_NO_PI == 0 {
			t.Errorf("%s flags %v: SetTAPOwner dropped vnet_hdr or no_pi", TapName, tap.Flags)
		}
		return nil
	}))

	tests := []struct {
		name     string
		uid, gid int
		want     string
	}{
		{name: "owner", uid: uid, gid: gid, want: "attached"},
		{name: "another uid", uid: uid + 1, gid: gid, want: "EPERM"},
		{name: "another gid", uid: uid, gid: gid + 1, want: "EPERM"},
		{name: "nobody", uid: 65534, gid: 65534, want: "EPERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := attachAs(t, s, tt.uid, tt.gid); got != tt.want {
				t.Errorf("attach as %d:%d = %s, want %s", tt.uid, tt.gid, got, tt.want)
			}
		})
	}

	// A VMM holds the single-queue TAP: ownership is fixed until it lets go.
	var held *os.File
	w.must(inNetNS(s.NetNSPath(), func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		held = os.NewFile(uintptr(fd), "tun")
		ifr, err := unix.NewIfreq(TapName)
		if err != nil {
			return err
		}
		ifr.SetUint16(tapFlags)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}))
	if err := pool.SetTAPOwner(ctx, s, 1, 1); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("SetTAPOwner while the TAP is held = %v, want FailedPrecondition", err)
	}
	held.Close()

	w.must(pool.Release(ctx, s))
	if err := pool.SetTAPOwner(ctx, s, uid, gid); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("SetTAPOwner of a released slot = %v, want FailedPrecondition", err)
	}

	emu, err := NewPool(w.cfg, nil)
	w.must(err)
	es, err := emu.Acquire(ctx)
	w.must(err)
	if err := emu.SetTAPOwner(ctx, es, uid, gid); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("SetTAPOwner in an emulated-guest pool = %v, want FailedPrecondition", err)
	}
	if err := pool.SetTAPOwner(ctx, es, uid, gid); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("SetTAPOwner of another pool's slot = %v, want InvalidArgument", err)
	}
}
