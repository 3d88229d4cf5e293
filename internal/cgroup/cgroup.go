// Package cgroup confines each sandbox's VMM process to its CPU, memory and
// process-count limits with Linux control groups, on both the unified (v2)
// and the legacy per-controller (v1) layouts.
//
// All of Wrenn's groups live under one parent (DefaultParent, "wrenn") with one
// child group per sandbox: <root>/wrenn/<sandbox-id> on v2, and
// <root>/<controller>/wrenn/<sandbox-id> for each of the cpu, cpuacct,
// memory and pids hierarchies on v1. Which layout is in use is detected once,
// by Detect, from what is mounted under the root.
package cgroup

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

const (
	// DefaultRoot is where the kernel's cgroup filesystems are mounted.
	DefaultRoot = "/sys/fs/cgroup"
	// DefaultParent is the group that holds every sandbox's group.
	DefaultParent = "wrenn"

	// cpuPeriodUS is the CFS period quotas are expressed against. 100 ms is
	// the kernel default; a shorter one costs more scheduler work, a longer
	// one makes throttling burstier.
	cpuPeriodUS = 100_000
	// minCPUQuotaUS is the smallest quota the kernel accepts (1 ms).
	minCPUQuotaUS = 1000
	// pollInterval is how often Remove re-reads a group's process list
	// while waiting for it to empty.
	pollInterval = 10 * time.Millisecond
)

// Limits are the resources a sandbox's VMM process may use. A zero field
// means "no limit" for that resource.
type Limits struct {
	// CPUQuota is in vCPUs: 1.0 is one full core, 0.5 half of one, 2 two.
	CPUQuota float64
	// MemoryBytes caps resident memory (guest RAM plus VMM overhead). Swap is
	// disabled for the group where the kernel lets us, so the cap is hard.
	MemoryBytes int64
	// Pids caps the number of tasks (processes and threads) in the group.
	Pids int64
}

// Validate reports the first field that the kernel would refuse, as an
// InvalidArgument error.
func (l Limits) Validate() error {
	if math.IsNaN(l.CPUQuota) || math.IsInf(l.CPUQuota, 0) || l.CPUQuota < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "cpu quota %v: must be a non-negative number of vCPUs", l.CPUQuota)
	}
	if l.CPUQuota > 0 && l.cpuQuotaUS() < minCPUQuotaUS {
		return errdefs.New(errdefs.ErrInvalidArgument, "cpu quota %v: below the minimum of %v vCPUs", l.CPUQuota, float64(minCPUQuotaUS)/cpuPeriodUS)
	}
	// The kernel stores quotas as signed 64-bit microseconds; anything near
	// that is a typo, not a machine.
	if l.CPUQuota > 1<<20 {
		return errdefs.New(errdefs.ErrInvalidArgument, "cpu quota %v: too large", l.CPUQuota)
	}
	if l.MemoryBytes < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "memory limit %d: must not be negative", l.MemoryBytes)
	}
	if l.Pids < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "pids limit %d: must not be negative", l.Pids)
	}
	return nil
}

func (l Limits) cpuQuotaUS() int64 { return int64(math.Round(l.CPUQuota * cpuPeriodUS)) }

// Stats is a cheap snapshot of a group's usage, read from a handful of
// small kernel files.
type Stats struct {
	MemoryBytes int64 // current memory charged to the group
	CPUUsageUS  int64 // total CPU time consumed, microseconds
	Pids        int64 // current number of tasks
	OOMKills    int64 // processes killed because the group hit its memory limit
}

// RemoveMode says what Remove does about processes still in the group.
type RemoveMode int

const (
	// WaitEmpty waits (until ctx ends) for the processes to exit on their own.
	WaitEmpty RemoveMode = iota
	// KillProcesses sends SIGKILL to every process in the group, repeatedly
	// until it is empty.
	KillProcesses
)

// backend is one cgroup layout. Every method is safe for concurrent use on
// different ids; ids are validated before they get here.
type backend interface {
	version() int
	ensureParent() error
	create(id string) error
	exists(id string) (bool, error)
	apply(id string, l Limits) error
	add(id string, pid int) error
	stats(id string) (Stats, error)
	procs(id string) ([]int, error)
	// killAll asks the kernel to kill the group at once; false means the
	// layout has no such file and the caller must signal each process.
	killAll(id string) (bool, error)
	dirs(id string) []string
	list() ([]string, error)
}

// Manager creates and finds sandbox groups under one parent. It holds no
// mutable state, so one Manager serves every sandbox concurrently.
type Manager struct {
	b backend
	// rmdir and signal touch the host; tests of fake trees replace them
	// (a fake directory is never empty, and fake pids must not be signalled).
	rmdir  func(path string) error
	signal func(pid int) error
}

// Detect inspects root (DefaultRoot when empty) and returns a Manager for the
// layout found there: v2 when root itself is a unified hierarchy (it has
// cgroup.controllers), otherwise v1 when the cpu, cpuacct, memory and pids
// hierarchies are mounted below it. A hybrid host's cgroup2 mount at
// root/unified is ignored: it carries no controllers we need. parent
// (DefaultParent when empty) names the group that holds all sandbox groups;
// it is created on first use.
func Detect(root, parent string) (*Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	if parent == "" {
		parent = DefaultParent
	}
	if err := validName("parent", parent); err != nil {
		return nil, err
	}
	m := &Manager{
		rmdir:  func(p string) error { return syscall.Rmdir(p) },
		signal: func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) },
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		m.b = &v2{root: root, parent: parent}
		return m, nil
	}
	b, err := newV1(root, parent)
	if err != nil {
		return nil, err
	}
	m.b = b
	return m, nil
}

// Version is 1 or 2, the cgroup layout in use.
func (m *Manager) Version() int { return m.b.version() }

// Create makes the group for sandbox id (and the parent, if needed) and sets
// its limits. It is idempotent: creating an existing group only applies the
// limits again.
func (m *Manager) Create(ctx context.Context, id string, l Limits) (*Group, error) {
	if err := validName("sandbox id", id); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", id, err)
	}
	if err := m.b.ensureParent(); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", id, err)
	}
	if err := m.b.create(id); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", id, err)
	}
	if err := m.b.apply(id, l); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", id, err)
	}
	return &Group{m: m, id: id}, nil
}

// Open returns the existing group for sandbox id, without changing it, or a
// NotFound error. The agent uses it to re-attach to sandboxes that outlived
// a restart.
func (m *Manager) Open(id string) (*Group, error) {
	if err := validName("sandbox id", id); err != nil {
		return nil, err
	}
	ok, err := m.b.exists(id)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", id, err)
	}
	if !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, "cgroup for sandbox %s not found", id)
	}
	return &Group{m: m, id: id}, nil
}

// List returns the sandbox groups that exist under the parent, sorted by id,
// so that the agent can reclaim leftovers at start-up. A missing parent means
// none.
func (m *Manager) List(ctx context.Context) ([]*Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	ids, err := m.b.list()
	if err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	sort.Strings(ids)
	ids = slices.Compact(ids)
	gs := make([]*Group, 0, len(ids))
	for _, id := range ids {
		// Skip whatever else someone put in our parent; it is not ours.
		if validName("sandbox id", id) != nil {
			continue
		}
		gs = append(gs, &Group{m: m, id: id})
	}
	return gs, nil
}

// Group is one sandbox's cgroup.
type Group struct {
	m  *Manager
	id string
}

// ID is the sandbox id the group belongs to.
func (g *Group) ID() string { return g.id }

// Dir is the group's directory on v2, for SysProcAttr.UseCgroupFD or for
// logging. On v1 there is one directory per controller and Dir returns "".
func (g *Group) Dir() string {
	if g.m.b.version() != 2 {
		return ""
	}
	return g.m.b.dirs(g.id)[0]
}

// OpenDir opens the group's directory on v2 so a child can be started
// directly inside it (SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}),
// which leaves no window in which the VMM runs unconfined. The caller closes
// the file. On v1 it fails with FailedPrecondition; use Add instead.
func (g *Group) OpenDir() (*os.File, error) {
	if g.m.b.version() != 2 {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "open cgroup %s: a directory fd needs cgroup v2, host has v1", g.id)
	}
	f, err := os.Open(g.Dir())
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", g.id, errdefs.FromOS(err))
	}
	return f, nil
}

// Add moves process pid (all its threads) into the group, in every
// controller hierarchy on v1. Its signature fits vmm.Spec.Confine.
func (g *Group) Add(pid int) error {
	if pid <= 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "add pid %d to cgroup %s: pid must be positive", pid, g.id)
	}
	if err := g.m.b.add(g.id, pid); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.id, err)
	}
	return nil
}

// Update replaces the group's limits.
func (g *Group) Update(l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if err := g.m.b.apply(g.id, l); err != nil {
		return fmt.Errorf("update cgroup %s: %w", g.id, err)
	}
	return nil
}

// Stats reads the group's current usage.
func (g *Group) Stats() (Stats, error) {
	s, err := g.m.b.stats(g.id)
	if err != nil {
		return Stats{}, fmt.Errorf("read stats of cgroup %s: %w", g.id, err)
	}
	return s, nil
}

// Pids lists the processes in the group (on v1, in any of its hierarchies).
func (g *Group) Pids() ([]int, error) {
	pids, err := g.m.b.procs(g.id)
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", g.id, err)
	}
	return pids, nil
}

// Remove deletes the group. With KillProcesses it first kills whatever is
// still inside; with WaitEmpty it waits for the processes to leave. Either
// way it returns when the directories are gone or ctx ends. A group that is
// already gone is removed successfully.
func (g *Group) Remove(ctx context.Context, mode RemoveMode) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		pids, err := g.m.b.procs(g.id)
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", g.id, err)
		}
		if len(pids) == 0 {
			err := g.rmdirs()
			switch {
			case err == nil:
				return nil
			case errors.Is(err, syscall.EBUSY):
				// The last task has left cgroup.procs but the kernel has not
				// yet marked the group unpopulated; try again shortly.
			default:
				return fmt.Errorf("remove cgroup %s: %w", g.id, err)
			}
		}
		if len(pids) > 0 && mode == KillProcesses {
			if err := g.kill(pids); err != nil {
				return fmt.Errorf("remove cgroup %s: %w", g.id, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %d processes remain: %w", g.id, len(pids), ctx.Err())
		case <-t.C:
		}
	}
}

func (g *Group) kill(pids []int) error {
	done, err := g.m.b.killAll(g.id)
	if err != nil {
		return err
	}
	if done {
		return nil
	}
	for _, pid := range pids {
		// A process that exited since we listed it is fine.
		if err := g.m.signal(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill pid %d: %w", pid, err)
		}
	}
	return nil
}

// rmdirs removes the group's directory in every hierarchy; absent ones
// count as removed.
func (g *Group) rmdirs() error {
	var errs []error
	for _, d := range g.m.b.dirs(g.id) {
		if err := g.m.rmdir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// validName accepts what can safely be one path component in a cgroup tree:
// letters, digits, '-', '_' and '.', not starting with '.', at most 128
// bytes. Sandbox ids are much narrower than this; the check exists so that
// no id can reach outside the parent.
func validName(what, s string) error {
	if s == "" || len(s) > 128 || s[0] == '.' {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s %q: must be 1-128 characters and not start with '.'", what, s)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return errdefs.New(errdefs.ErrInvalidArgument, "%s %q: only letters, digits, '-', '_' and '.' are allowed", what, s)
		}
	}
	return nil
}
