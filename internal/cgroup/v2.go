package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// v2Controllers are enabled for the parent's children, in this order.
var v2Controllers = []string{"cpu", "memory", "pids"}

// v2 is the unified layout: one directory per group holding every
// controller's files.
type v2 struct {
	root   string
	parent string
}

func (b *v2) version() int { return 2 }

func (b *v2) parentDir() string       { return filepath.Join(b.root, b.parent) }
func (b *v2) dir(id string) string    { return filepath.Join(b.root, b.parent, id) }
func (b *v2) dirs(id string) []string { return []string{b.dir(id)} }

// ensureParent creates the parent group and delegates cpu, memory and pids
// to its children. In v2 a controller reaches a group only if every
// ancestor lists it in cgroup.subtree_control, so both the root and the
// parent need it. Only missing controllers are written, so a second call
// writes nothing.
func (b *v2) ensureParent() error {
	avail, err := os.ReadFile(filepath.Join(b.root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read available controllers: %w", errdefs.FromOS(err))
	}
	have := strings.Fields(string(avail))
	for _, c := range v2Controllers {
		if !slices.Contains(have, c) {
			return errdefs.New(errdefs.ErrFailedPrecondition, "cgroup v2 at %s lacks the %s controller (available: %q)", b.root, c, strings.TrimSpace(string(avail)))
		}
	}
	if err := enableControllers(b.root); err != nil {
		return err
	}
	if err := mkdir(b.parentDir()); err != nil {
		return err
	}
	return enableControllers(b.parentDir())
}

func enableControllers(dir string) error {
	path := filepath.Join(dir, "cgroup.subtree_control")
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, errdefs.FromOS(err))
	}
	enabled := strings.Fields(string(cur))
	var add []string
	for _, c := range v2Controllers {
		if !slices.Contains(enabled, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(path, strings.Join(add, " "))
}

func (b *v2) create(id string) error { return mkdir(b.dir(id)) }

func (b *v2) exists(id string) (bool, error) {
	_, err := os.Stat(b.dir(id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, errdefs.FromOS(err)
	}
	return true, nil
}

func (b *v2) apply(id string, l Limits) error {
	d := b.dir(id)
	quota := "max"
	if l.CPUQuota > 0 {
		quota = strconv.FormatInt(l.cpuQuotaUS(), 10)
	}
	if err := writeFile(filepath.Join(d, "cpu.max"), fmt.Sprintf("%s %d", quota, cpuPeriodUS)); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(d, "memory.max"), limitOrMax(l.MemoryBytes)); err != nil {
		return err
	}
	// Without swap the memory limit is a hard cap on the VMM; the file is
	// absent when the kernel has no swap accounting, which is equally fine.
	if swap := filepath.Join(d, "memory.swap.max"); exists(swap) {
		if err := writeFile(swap, "0"); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(d, "pids.max"), limitOrMax(l.Pids))
}

func (b *v2) add(id string, pid int) error {
	return writeFile(filepath.Join(b.dir(id), "cgroup.procs"), strconv.Itoa(pid))
}

func (b *v2) stats(id string) (Stats, error) {
	d := b.dir(id)
	var s Stats
	var err error
	if s.MemoryBytes, err = readInt(filepath.Join(d, "memory.current")); err != nil {
		return Stats{}, err
	}
	if s.CPUUsageUS, err = readKey(filepath.Join(d, "cpu.stat"), "usage_usec"); err != nil {
		return Stats{}, err
	}
	if s.Pids, err = readInt(filepath.Join(d, "pids.current")); err != nil {
		return Stats{}, err
	}
	if s.OOMKills, err = readKey(filepath.Join(d, "memory.events"), "oom_kill"); err != nil {
		return Stats{}, err
	}
	return s, nil
}

func (b *v2) procs(id string) ([]int, error) {
	return readPids(filepath.Join(b.dir(id), "cgroup.procs"))
}

// killAll uses cgroup.kill (Linux 5.14+), which kills every process in the
// group atomically, so a fork bomb cannot outrun the killer.
func (b *v2) killAll(id string) (bool, error) {
	p := filepath.Join(b.dir(id), "cgroup.kill")
	if !exists(p) {
		return false, nil
	}
	return true, writeFile(p, "1")
}

func (b *v2) list() ([]string, error) { return subdirs(b.parentDir()) }
