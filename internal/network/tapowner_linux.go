//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// tapFlags are the flags Setup creates the TAP with. Attaching to the
// persistent device rewrites its feature flags with the attacher's, so
// SetTAPOwner passes the same ones and leaves the device as it was.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// SetTAPOwner lets the process identity uid/gid attach to slot s's TAP
// (TUNSETOWNER and TUNSETGROUP), so that a VMM running unprivileged can
// open it; any other non-root process gets EPERM. Call it after Setup and
// before the VMM starts: the TAP is single-queue, so while a VMM holds it
// the ownership cannot be changed (errdefs.ErrFailedPrecondition). The
// ownership lasts as long as the TAP. A slot of a pool with EmulateGuest
// has no TAP (errdefs.ErrFailedPrecondition).
func (p *Pool) SetTAPOwner(ctx context.Context, s *Slot, uid, gid uint32) error {
	if err := p.owns(s); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.l.emulateGuest {
		return errdefs.New(errdefs.ErrFailedPrecondition, "network: set tap owner of slot %d: the pool emulates guests and has no TAP", s.Index)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return errdefs.New(errdefs.ErrFailedPrecondition, "network: set tap owner of slot %d: already released", s.Index)
	}
	// Attaching as root to a name that does not exist would create a
	// throwaway TAP and report success, so check the real one is there.
	err := withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
		l, err := h.LinkByName(TapName)
		if err != nil {
			return errdefs.New(errdefs.ErrNotFound, "find %s: %v (Setup first)", TapName, err)
		}
		if l.Type() != "tuntap" {
			return errdefs.New(errdefs.ErrFailedPrecondition, "%s is a %s, not a TAP", TapName, l.Type())
		}
		return nil
	})
	if err == nil {
		// The tun fd binds to the namespace of the thread that opens it,
		// so the open has to happen inside the slot netns.
		err = inNetNS(s.NetNSPath(), func() error { return setTAPOwner(TapName, uid, gid) })
	}
	if err != nil {
		return fmt.Errorf("set tap owner of slot %d to %d:%d: %w", s.Index, uid, gid, err)
	}
	return nil
}

// setTAPOwner attaches to the persistent TAP name in the current thread's
// netns, sets its owner and group, and detaches again (close).
func setTAPOwner(name string, uid, gid uint32) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap name %q: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return errdefs.New(errdefs.ErrFailedPrecondition, "attach %s: in use by a VMM (%v)", name, err)
		}
		return fmt.Errorf("attach %s: %w", name, errdefs.FromOS(err))
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, int(uid)); err != nil {
		return fmt.Errorf("TUNSETOWNER %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, int(gid)); err != nil {
		return fmt.Errorf("TUNSETGROUP %s: %w", name, err)
	}
	return nil
}
