package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Every VMM runs as an unprivileged identity of its own, uid = gid =
// VMMUIDBase + the sandbox's network slot index, with no supplementary
// groups and no passwd entry. Slots are unique among running sandboxes,
// so identities are too, and a restarted agent derives the same one from
// the record. The sandbox directory is laid out so that this identity can
// open its own VM's files and nothing else:
//
//	sandboxes/          root 0711  traversable, not listable
//	  <id>/             root:gid 0710  only this sandbox's VMM may pass
//	    sandbox.json    root 0600  the agent's record; the VMM cannot read it
//	    vm/             uid:gid 0700  the VMM's world (vmm.Spec.Dir)
//	      rootfs.qcow2  uid:gid 0600  the overlay; its backing file is the
//	                                  template's root-owned, world-readable base
//	      qmp.sock, console.sock, vmm.pid, qemu.log, console.log
//
// The agent's own record sits outside the directory the VMM may write,
// so a compromised VMM cannot replace it or plant a symlink where root
// writes it.

// DefaultVMMUIDBase is the first VMM identity when Config.VMMUIDBase is 0:
// far above the ranges distributions hand to users (1000-60000) and to
// systemd's dynamic users (61184-65519).
const DefaultVMMUIDBase = 200000

// vmDirName is the VMM's directory inside a sandbox's directory.
const vmDirName = "vm"

// Host devices an unprivileged VMM opens itself.
var vmmDevices = []string{"/dev/net/tun", "/dev/kvm"}

// vmmIdentity is the uid and gid of the VMM of the sandbox in network slot.
func (m *Manager) vmmIdentity(slot int) (uid, gid uint32) {
	id := m.cfg.VMMUIDBase + uint32(slot)
	return id, id
}

func vmDir(sandboxDir string) string { return filepath.Join(sandboxDir, vmDirName) }

// confineDirs hands the VM's directory and overlay to the VMM's identity
// and lets that identity, and no other, pass through the sandbox
// directory.
func confineDirs(sandboxDir, overlay string, uid, gid uint32) error {
	vm := vmDir(sandboxDir)
	for _, p := range []string{overlay, vm} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			return fmt.Errorf("give %s to vmm uid %d: %w", p, uid, err)
		}
	}
	if err := os.Chmod(overlay, 0o600); err != nil {
		return fmt.Errorf("restrict %s: %w", overlay, err)
	}
	if err := os.Chown(sandboxDir, 0, int(gid)); err != nil {
		return fmt.Errorf("give %s to vmm gid %d: %w", sandboxDir, gid, err)
	}
	// Chmod after chown: chown may clear mode bits.
	if err := os.Chmod(sandboxDir, 0o710); err != nil {
		return fmt.Errorf("restrict %s: %w", sandboxDir, err)
	}
	return nil
}

// prepareVMMAccess makes sure an unprivileged VMM can reach what it must
// open: the sandboxes, kernels and images directories through every parent
// (search permission for others), and the devices it opens itself. It
// never loosens a directory the agent does not own: an unreachable parent
// is an error naming it. The devices are set to 0666, the mode udev gives
// them on every systemd distribution, where containers and minimal VMs
// without udev leave 0600: access control for both lies elsewhere (a TAP
// admits only its owner, set with Pool.SetTAPOwner; /dev/kvm only creates
// VMs for the caller).
func prepareVMMAccess(dir string, log *slog.Logger) error {
	sandboxes := filepath.Join(dir, "sandboxes")
	if err := os.Chmod(sandboxes, 0o711); err != nil {
		return fmt.Errorf("open %s to vmm users: %w", sandboxes, err)
	}
	var errs []error
	for _, sub := range []string{"sandboxes", "kernels", "images"} {
		p, err := filepath.EvalSymlinks(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue // nothing to boot yet; Create says so
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", filepath.Join(dir, sub), err))
			continue
		}
		if err := searchableByOthers(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dev := range vmmDevices {
		st, err := os.Stat(dev)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stat %s: %w", dev, err))
			continue
		}
		if st.Mode().Perm()&0o006 == 0o006 {
			continue
		}
		if err := os.Chmod(dev, st.Mode().Perm()|0o666); err != nil {
			errs = append(errs, fmt.Errorf("let vmm users open %s: %w", dev, err))
			continue
		}
		log.Warn("made a device usable by unprivileged VMMs", "device", dev, "was", fmt.Sprintf("%04o", st.Mode().Perm()), "now", "0666")
	}
	if len(errs) > 0 {
		return errdefs.New(errdefs.ErrFailedPrecondition, "unprivileged VMMs cannot run here: %v", errors.Join(errs...))
	}
	return nil
}

// searchableByOthers checks that every directory from / down to p lets
// any user pass (the x bit for others).
func searchableByOthers(p string) error {
	for d := p; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if st.IsDir() && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %s, so VMMs running as other users cannot reach %s (chmod o+x %s)", d, st.Mode().Perm(), p, d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// unconfineDirs gives the VM's directory and everything in it back to root,
// so that the VMM identity of the slot, soon someone else's, cannot open
// it. Absent is fine.
func unconfineDirs(sandboxDir string) error {
	err := filepath.WalkDir(vmDir(sandboxDir), func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 0, 0)
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("take back vmm dir: %w", err)
	}
	return nil
}
