package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// world is the benchmark's private corner of the host: its own WRENN_DIR
// (the images are linked in, read-only), network prefix and address
// ranges, nftables table, cgroup parent and guest memory directory, all
// named from the process id, so that it never touches a real agent or a
// test run, and so that Close can find and remove everything it made.
type world struct {
	run     int
	dir     string // the benchmark's WRENN_DIR
	memDir  string // guest RAM files (tmpfs)
	cgroup  string // cgroup parent
	pcfg    network.PoolConfig
	pool    *network.Pool
	kernel  kernels.Kernel
	rootfs  string
	accel   qemu.AccelChoice
	log     *slog.Logger
	phases  *phases
	qemuBin string
	// tbNotes are the TCG translation-block counts the baseline's envd
	// diagnostic saw, "first/second" per sample.
	tbNotes []string

	mu       sync.Mutex
	cleanups []cleanup
}

type cleanup struct {
	what string
	fn   func(context.Context) error
}

// newWorld checks the host can run guests and lays out the benchmark's
// directories. Nothing on the host changes until then.
func newWorld(ctx context.Context, cfg Config, log *slog.Logger, ph *phases) (*world, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("wrennbench needs root (network namespaces, TAP devices, cgroups)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("needs /dev/net/tun: %w", err)
	}
	qemuBin, err := exec.LookPath(qemu.DefaultBinary)
	if err != nil {
		return nil, fmt.Errorf("needs %s: %w", qemu.DefaultBinary, err)
	}
	for _, bin := range []string{"qemu-img", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("needs %s: %w", bin, err)
		}
	}
	kernel, err := kernels.Latest(filepath.Join(cfg.ImagesDir, "kernels"))
	if err != nil {
		return nil, fmt.Errorf("guest kernel: %w", err)
	}
	rootfs := filepath.Join(cfg.ImagesDir, "images", cfg.Image, "rootfs.ext4")
	if _, err := os.Stat(rootfs); err != nil {
		return nil, fmt.Errorf("image %s: %w", cfg.Image, err)
	}

	run := os.Getpid()
	// 25 pairs of /16s from 10.200.0.0 up, away from the agent's defaults
	// (10.11/10.12) and the agent tests' (10.100-10.199).
	n := run % 25
	if cfg.Net >= 0 {
		n = cfg.Net
	}
	w := &world{
		run: run,
		// Short and on disk: VMM socket paths must fit in 107 bytes, and
		// hibernation must really write to disk, not to a tmpfs.
		dir:    fmt.Sprintf("/var/tmp/wrb-%d", run),
		memDir: fmt.Sprintf("/dev/shm/wrennbench-%d", run),
		cgroup: fmt.Sprintf("wrennbench-%d", run),
		pcfg: network.PoolConfig{
			Prefix:   fmt.Sprintf("wrb%d-", n),
			Slots:    512,
			HostCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + 2*n), 0, 0}), 16),
			VethCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(201 + 2*n), 0, 0}), 16),
			Table:    fmt.Sprintf("wrennbench_%d", run),
		},
		kernel:  kernel,
		rootfs:  rootfs,
		log:     log,
		phases:  ph,
		qemuBin: qemuBin,
	}
	w.pool, err = network.NewPool(w.pcfg, log)
	if err != nil {
		return nil, err
	}
	// From here on Close removes whatever was made.
	if err := w.layout(cfg); err != nil {
		return w, err
	}
	switch cfg.Accel {
	case "auto":
		w.accel = qemu.Probe(ctx, qemuBin, kernel.Path)
	default:
		w.accel = qemu.AccelChoice{Accel: qemu.Accel(cfg.Accel), Reason: "--accel " + cfg.Accel}
	}
	return w, nil
}

// layout makes the benchmark's WRENN_DIR, with the kernels and the image
// linked from the real one, and its memory directory.
func (w *world) layout(cfg Config) error {
	// VMMs run unprivileged and must pass through the directory.
	if err := os.Mkdir(w.dir, 0o711); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	if err := os.Mkdir(filepath.Join(w.dir, "images"), 0o755); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	links := map[string]string{
		filepath.Join(w.dir, "kernels"):               filepath.Dir(w.kernel.Path),
		filepath.Join(w.dir, "images", cfg.Image):     filepath.Dir(w.rootfs),
		filepath.Join(w.dir, "images", baselineImage): filepath.Dir(w.rootfs),
	}
	for link, target := range links {
		if err := os.Symlink(target, link); err != nil {
			return fmt.Errorf("link images: %w", err)
		}
	}
	if err := os.Mkdir(filepath.Join(w.dir, "baseline"), 0o700); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	if err := os.Mkdir(w.memDir, 0o711); err != nil {
		return fmt.Errorf("create memory dir: %w", err)
	}
	return nil
}

// baselineImage is the name the image is linked under for the baseline;
// the agent never sees it (it would not matter if it did).
const baselineImage = "baseline"

// onClose registers an undo, run by Close in reverse order.
func (w *world) onClose(what string, fn func(context.Context) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cleanups = append(w.cleanups, cleanup{what, fn})
}

// Close undoes everything: registered undos first (sandboxes, template,
// baseline VM), then a sweep by name of whatever could remain (network
// namespaces and links, the nftables table, cgroups and their processes,
// files). It returns what it could not remove.
func (w *world) Close(ctx context.Context) error {
	w.mu.Lock()
	cs := slices.Clone(w.cleanups)
	w.cleanups = nil
	w.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("clean up %s: %w", cs[i].what, err))
		}
	}
	errs = append(errs, w.sweep(ctx))
	return errors.Join(errs...)
}

// sweep removes by name everything of this run that an undo missed.
func (w *world) sweep(ctx context.Context) error {
	var errs []error
	// cgroups first: removing them kills any VMM still inside.
	if cg, err := cgroup.Detect("", w.cgroup); err == nil {
		groups, err := cg.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, g := range groups {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			errs = append(errs, g.Remove(rctx, cgroup.KillProcesses))
			cancel()
		}
	}
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids", ""} {
		p := filepath.Join("/sys/fs/cgroup", c, w.cgroup)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup parent %s: %w", p, err))
		}
	}
	// A fresh pool holds no slot, so Reclaim deletes every one of ours.
	if pool, err := network.NewPool(w.pcfg, w.log); err == nil {
		errs = append(errs, pool.Reclaim(ctx))
	}
	if out, err := exec.CommandContext(ctx, "nft", "delete", "table", "inet", w.pcfg.Table).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "No such file") {
		errs = append(errs, fmt.Errorf("delete nftables table %s: %v: %s", w.pcfg.Table, err, out))
	}
	// The agent mounts a huge-page tmpfs on the memory dir; a mount
	// point cannot be removed.
	if err := unix.Unmount(w.memDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", w.memDir, err))
	}
	for _, d := range []string{w.memDir, w.dir} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	errs = append(errs, w.leftovers())
	return errors.Join(errs...)
}

// leftovers checks the host holds nothing of this run.
func (w *world) leftovers() error {
	var found []string
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), w.pcfg.Prefix) {
		found = append(found, "network namespaces "+w.pcfg.Prefix+"*")
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), w.pcfg.Prefix) {
		found = append(found, "host links "+w.pcfg.Prefix+"*")
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), w.pcfg.Table) {
		found = append(found, "nftables table "+w.pcfg.Table)
	}
	for _, p := range []string{w.dir, w.memDir, filepath.Join("/sys/fs/cgroup/memory", w.cgroup), filepath.Join("/sys/fs/cgroup", w.cgroup)} {
		if _, err := os.Stat(p); err == nil {
			found = append(found, p)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(found, ", "))
	}
	return nil
}
