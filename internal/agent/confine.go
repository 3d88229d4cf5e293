package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Every VMM runs as an unprivileged identity of its own, uid = gid =
// VMMUIDBase + the sandbox's network slot index, with no passwd entry and
// one supplementary group, the VMM group (vmmGroup: "kvm", else
// "wrenn-kvm"), which alone may open /dev/kvm (root:<group> 0660) and read
// what every VMM shares (shareWithVMMs). Slots are unique among running sandboxes,
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

// kvmDevice is opened by every VMM that runs guests under KVM.
const kvmDevice = "/dev/kvm"

// tunDevice is opened by every VMM to attach its TAP. It stays open to
// all (0666, as udev sets it everywhere): attaching to an existing TAP is
// refused by the kernel to anyone but its owner (Pool.SetTAPOwner).
const tunDevice = "/dev/net/tun"

// Names of the VMM group: the host's own "kvm" group when it has one (what
// udev gives /dev/kvm), else one of ours, created as a system group.
const (
	kvmGroupName      = "kvm"
	fallbackGroupName = "wrenn-kvm"
)

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
// is an error naming it. /dev/net/tun is set to 0666, the mode udev gives
// it everywhere (a TAP admits only its owner, set with Pool.SetTAPOwner).
// /dev/kvm is given to the VMM group, 0660: any process that can open it
// may create VMs and use the host's virtualisation, so only VMMs may. It
// returns the VMM group's gid, which every VMM identity gets.
func prepareVMMAccess(ctx context.Context, dir string, log *slog.Logger) (uint32, error) {
	sandboxes := filepath.Join(dir, "sandboxes")
	if err := os.Chmod(sandboxes, 0o711); err != nil {
		return 0, fmt.Errorf("open %s to vmm users: %w", sandboxes, err)
	}
	gid, err := vmmGroup(ctx, log)
	if err != nil {
		return 0, errdefs.New(errdefs.ErrFailedPrecondition, "unprivileged VMMs cannot run here: %v", err)
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
	if err := openToAll(tunDevice, log); err != nil {
		errs = append(errs, err)
	}
	if err := giveToGroup(kvmDevice, gid, log); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return 0, errdefs.New(errdefs.ErrFailedPrecondition, "unprivileged VMMs cannot run here: %v", errors.Join(errs...))
	}
	return gid, nil
}

// openToAll makes dev readable and writable by everyone. Absent is fine.
func openToAll(dev string, log *slog.Logger) error {
	st, err := os.Stat(dev)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", dev, err)
	}
	if st.Mode().Perm()&0o006 == 0o006 {
		return nil
	}
	if err := os.Chmod(dev, st.Mode().Perm()|0o666); err != nil {
		return fmt.Errorf("let vmm users open %s: %w", dev, err)
	}
	log.Warn("made a device usable by unprivileged VMMs", "device", dev, "was", fmt.Sprintf("%04o", st.Mode().Perm()), "now", "0666")
	return nil
}

// giveToGroup makes dev root:gid 0660, taking away any access for others
// (this agent set /dev/kvm to 0666 before, and some udev rules do too).
// Absent is fine: guests then run under TCG.
func giveToGroup(dev string, gid uint32, log *slog.Logger) error {
	st, err := os.Stat(dev)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", dev, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("stat %s: no owner information", dev)
	}
	const want = 0o660
	if sys.Gid == gid && st.Mode().Perm() == want {
		return nil
	}
	if err := os.Chown(dev, -1, int(gid)); err != nil {
		return fmt.Errorf("give %s to group %d: %w", dev, gid, err)
	}
	// Chmod after chown: chown may clear mode bits.
	if err := os.Chmod(dev, want); err != nil {
		return fmt.Errorf("restrict %s to group %d: %w", dev, gid, err)
	}
	log.Info("device restricted to the VMM group", "device", dev, "gid", gid,
		"was", fmt.Sprintf("%d %04o", sys.Gid, st.Mode().Perm()), "now", fmt.Sprintf("%d %04o", gid, want))
	return nil
}

// vmmGroup returns the gid of the VMM group, creating "wrenn-kvm" as a
// system group when the host has neither it nor "kvm".
func vmmGroup(ctx context.Context, log *slog.Logger) (uint32, error) {
	for _, name := range []string{kvmGroupName, fallbackGroupName} {
		if gid, ok, err := lookupGroup(name); err != nil || ok {
			return gid, err
		}
	}
	out, err := exec.CommandContext(ctx, "groupadd", "--system", fallbackGroupName).CombinedOutput()
	// Exit status 9 is "group already exists": another agent was quicker.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 9) {
		return 0, fmt.Errorf("create group %s for VMMs: %w: %s", fallbackGroupName, err, strings.TrimSpace(string(out)))
	}
	gid, ok, err := lookupGroup(fallbackGroupName)
	if err == nil && !ok {
		err = fmt.Errorf("group %s missing after groupadd", fallbackGroupName)
	}
	if err == nil {
		log.Info("created the VMM group", "group", fallbackGroupName, "gid", gid)
	}
	return gid, err
}

func lookupGroup(name string) (gid uint32, ok bool, err error) {
	g, err := user.LookupGroup(name)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up group %s: %w", name, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("group %s has gid %q: %w", name, g.Gid, err)
	}
	return uint32(n), true, nil
}

// vmmGroups is the supplementary group list of every VMM identity.
func (m *Manager) vmmGroups() []uint32 {
	if m.vmmGID == 0 {
		return nil
	}
	return []uint32{m.vmmGID}
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
