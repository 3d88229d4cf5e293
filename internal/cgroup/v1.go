package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// v1Controllers are the hierarchies a v1 group spans. cpuset is left out on
// purpose: a new v1 cpuset group starts with no CPUs and no memory nodes, and
// adding a process to it fails until both are copied from the parent.
var v1Controllers = []string{"cpu", "cpuacct", "memory", "pids"}

// v1 is the legacy layout: one hierarchy per controller (or per set of
// co-mounted controllers, such as cpu,cpuacct), each with its own copy of
// the group.
type v1 struct {
	parent string
	// mounts maps a controller to its hierarchy's root directory.
	mounts map[string]string
	// hierarchies lists each distinct hierarchy once, so co-mounted
	// controllers get one mkdir, one pid write and one rmdir.
	hierarchies []string
}

func newV1(root, parent string) (*v1, error) {
	b := &v1{parent: parent, mounts: map[string]string{}}
	seen := map[string]bool{}
	for _, c := range v1Controllers {
		dir := filepath.Join(root, c)
		// Distributions mount cpu and cpuacct together and link the single
		// names to "cpu,cpuacct"; resolve links so we notice.
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return nil, errdefs.New(errdefs.ErrUnavailable, "no usable cgroup hierarchy at %s: not v2 (no cgroup.controllers) and v1 controller %s is not mounted at %s", root, c, dir)
		}
		if !exists(filepath.Join(real, "cgroup.procs")) {
			return nil, errdefs.New(errdefs.ErrUnavailable, "no usable cgroup hierarchy at %s: %s has no cgroup.procs", root, real)
		}
		b.mounts[c] = real
		if !seen[real] {
			seen[real] = true
			b.hierarchies = append(b.hierarchies, real)
		}
	}
	return b, nil
}

func (b *v1) version() int { return 1 }

func (b *v1) dir(controller, id string) string {
	return filepath.Join(b.mounts[controller], b.parent, id)
}

func (b *v1) dirs(id string) []string {
	ds := make([]string, len(b.hierarchies))
	for i, h := range b.hierarchies {
		ds[i] = filepath.Join(h, b.parent, id)
	}
	return ds
}

func (b *v1) ensureParent() error {
	for _, h := range b.hierarchies {
		if err := mkdir(filepath.Join(h, b.parent)); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1) create(id string) error {
	for _, d := range b.dirs(id) {
		if err := mkdir(d); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1) exists(id string) (bool, error) {
	for _, d := range b.dirs(id) {
		_, err := os.Stat(d)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return false, errdefs.FromOS(err)
		}
	}
	return false, nil
}

func (b *v1) apply(id string, l Limits) error {
	cpu := b.dir("cpu", id)
	if err := writeFile(filepath.Join(cpu, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriodUS)); err != nil {
		return err
	}
	quota := "-1"
	if l.CPUQuota > 0 {
		quota = strconv.FormatInt(l.cpuQuotaUS(), 10)
	}
	if err := writeFile(filepath.Join(cpu, "cpu.cfs_quota_us"), quota); err != nil {
		return err
	}
	if err := b.applyMemory(b.dir("memory", id), l.MemoryBytes); err != nil {
		return err
	}
	pidsMax := "max"
	if l.Pids > 0 {
		pidsMax = strconv.FormatInt(l.Pids, 10)
	}
	return writeFile(filepath.Join(b.dir("pids", id), "pids.max"), pidsMax)
}

// applyMemory sets memory.limit_in_bytes and, when swap accounting is on,
// memory.memsw.limit_in_bytes (memory plus swap) to the same value, so the
// group cannot swap. The kernel requires memsw >= limit at every moment, so
// memsw is written first when the limit grows and last when it shrinks.
func (b *v1) applyMemory(dir string, limit int64) error {
	value := "-1"
	if limit > 0 {
		value = strconv.FormatInt(limit, 10)
	}
	memPath := filepath.Join(dir, "memory.limit_in_bytes")
	swPath := filepath.Join(dir, "memory.memsw.limit_in_bytes")
	if !exists(swPath) {
		return writeFile(memPath, value)
	}
	cur, err := readInt(swPath)
	if err != nil {
		return err
	}
	// An unlimited memsw reads as a huge page-aligned number, so any real
	// limit compares as shrinking, which is the right order.
	growing := limit <= 0 || (cur >= 0 && limit > cur)
	order := []string{memPath, swPath}
	if growing {
		order = []string{swPath, memPath}
	}
	for _, p := range order {
		if err := writeFile(p, value); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1) add(id string, pid int) error {
	for _, d := range b.dirs(id) {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1) stats(id string) (Stats, error) {
	var s Stats
	var err error
	mem := b.dir("memory", id)
	if s.MemoryBytes, err = readInt(filepath.Join(mem, "memory.usage_in_bytes")); err != nil {
		return Stats{}, err
	}
	if s.OOMKills, err = readKey(filepath.Join(mem, "memory.oom_control"), "oom_kill"); err != nil {
		return Stats{}, err
	}
	ns, err := readInt(filepath.Join(b.dir("cpuacct", id), "cpuacct.usage"))
	if err != nil {
		return Stats{}, err
	}
	s.CPUUsageUS = ns / 1000
	if s.Pids, err = readInt(filepath.Join(b.dir("pids", id), "pids.current")); err != nil {
		return Stats{}, err
	}
	return s, nil
}

// procs is the union over hierarchies: after a crash between two writes in
// add, a process can be in one hierarchy's copy of the group and not in
// another's, and Remove must still see it.
func (b *v1) procs(id string) ([]int, error) {
	seen := map[int]bool{}
	var all []int
	for _, d := range b.dirs(id) {
		pids, err := readPids(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			return nil, err
		}
		for _, p := range pids {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	return all, nil
}

// killAll: v1 has no cgroup.kill; Remove signals each process instead.
func (b *v1) killAll(string) (bool, error) { return false, nil }

func (b *v1) list() ([]string, error) {
	var ids []string
	for _, h := range b.hierarchies {
		names, err := subdirs(filepath.Join(h, b.parent))
		if err != nil {
			return nil, err
		}
		ids = append(ids, names...)
	}
	return ids, nil
}
