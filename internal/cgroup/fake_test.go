package cgroup

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// The tests in this file run against fake cgroup trees in t.TempDir(). A fake
// tree is a directory of plain files laid out as the kernel lays out cgroupfs;
// kernelDir plays the kernel's part of creating a group's interface files,
// which the code under test never creates itself.

// kernelDir creates dir and the interface files in it with their contents.
func kernelDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeHost replaces the two calls that would touch the real host: rmdir
// (a fake group directory is never empty, so the fake removes it whole) and
// kill (the fake "kills" a pid by deleting it from every cgroup.procs file
// under the root, as the kernel would once the process died).
type fakeHost struct {
	root string

	mu       sync.Mutex
	signaled []int
}

func (f *fakeHost) install(m *Manager) {
	m.rmdir = func(p string) error {
		if _, err := os.Stat(p); err != nil {
			return err
		}
		return os.RemoveAll(p)
	}
	m.signal = func(pid int) error {
		f.mu.Lock()
		f.signaled = append(f.signaled, pid)
		f.mu.Unlock()
		return filepath.WalkDir(f.root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var keep []string
			for _, s := range strings.Fields(string(b)) {
				if s != strconv.Itoa(pid) {
					keep = append(keep, s)
				}
			}
			return os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o644)
		})
	}
}

func detectFake(t *testing.T, root string) (*Manager, *fakeHost) {
	t.Helper()
	m, err := Detect(root, "")
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	f := &fakeHost{root: root}
	f.install(m)
	return m, f
}

// fakeV2 lays out a unified hierarchy whose root delegates only cpu and
// memory so far, plus the parent and group "sb1" as the kernel would create
// them when Create calls mkdir.
func fakeV2(t *testing.T, swap bool) string {
	root := t.TempDir()
	kernelDir(t, root, map[string]string{
		"cgroup.controllers":     "cpuset cpu io memory hugetlb pids rdma misc\n",
		"cgroup.subtree_control": "cpu memory\n",
		"cgroup.procs":           "1\n",
	})
	kernelDir(t, filepath.Join(root, "wrenn"), map[string]string{
		"cgroup.controllers":     "cpu memory pids\n",
		"cgroup.subtree_control": "",
		"cgroup.procs":           "",
	})
	files := map[string]string{
		"cgroup.procs":   "",
		"cpu.max":        "max 100000\n",
		"cpu.stat":       "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n",
		"memory.max":     "max\n",
		"memory.current": "52428800\n",
		"memory.events":  "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n",
		"pids.max":       "max\n",
		"pids.current":   "3\n",
	}
	if swap {
		files["memory.swap.max"] = "max\n"
	}
	kernelDir(t, filepath.Join(root, "wrenn", "sb1"), files)
	return root
}

func TestV2Create(t *testing.T) {
	tests := []struct {
		name   string
		swap   bool
		limits Limits
		want   map[string]string // file under wrenn/sb1 -> exact content
	}{
		{
			name:   "all limits",
			swap:   true,
			limits: Limits{CPUQuota: 1.5, MemoryBytes: 64 << 20, Pids: 32},
			want: map[string]string{
				"cpu.max":         "150000 100000",
				"memory.max":      "67108864",
				"memory.swap.max": "0",
				"pids.max":        "32",
			},
		},
		{
			name:   "zero means unlimited",
			swap:   true,
			limits: Limits{},
			want: map[string]string{
				"cpu.max":         "max 100000",
				"memory.max":      "max",
				"memory.swap.max": "0",
				"pids.max":        "max",
			},
		},
		{
			name:   "fractional cpu without swap accounting",
			swap:   false,
			limits: Limits{CPUQuota: 0.25, MemoryBytes: 1 << 30},
			want: map[string]string{
				"cpu.max":    "25000 100000",
				"memory.max": "1073741824",
				"pids.max":   "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeV2(t, tt.swap)
			m, _ := detectFake(t, root)
			if m.Version() != 2 {
				t.Fatalf("Version = %d, want 2", m.Version())
			}
			g, err := m.Create(context.Background(), "sb1", tt.limits)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			dir := filepath.Join(root, "wrenn", "sb1")
			for name, want := range tt.want {
				if got := readFile(t, filepath.Join(dir, name)); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if !tt.swap {
				if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("memory.swap.max was created on a host without swap accounting: %v", err)
				}
			}
			// Only the missing controller is added at the root; all three at
			// the parent.
			if got := readFile(t, filepath.Join(root, "cgroup.subtree_control")); got != "+pids" {
				t.Errorf("root subtree_control = %q, want %q", got, "+pids")
			}
			if got := readFile(t, filepath.Join(root, "wrenn", "cgroup.subtree_control")); got != "+cpu +memory +pids" {
				t.Errorf("parent subtree_control = %q, want %q", got, "+cpu +memory +pids")
			}
			if g.Dir() != dir {
				t.Errorf("Dir = %q, want %q", g.Dir(), dir)
			}
			f, err := g.OpenDir()
			if err != nil {
				t.Fatalf("OpenDir: %v", err)
			}
			f.Close()
		})
	}
}

func TestV2CreateIsIdempotent(t *testing.T) {
	root := fakeV2(t, true)
	m, _ := detectFake(t, root)
	ctx := context.Background()
	if _, err := m.Create(ctx, "sb1", Limits{Pids: 10}); err != nil {
		t.Fatal(err)
	}
	// Simulate the kernel: after the first write the controllers are enabled.
	kernelDir(t, root, map[string]string{"cgroup.subtree_control": "cpu memory pids\n"})
	kernelDir(t, filepath.Join(root, "wrenn"), map[string]string{"cgroup.subtree_control": "cpu memory pids\n"})
	if _, err := m.Create(ctx, "sb1", Limits{Pids: 20}); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if got := readFile(t, filepath.Join(root, "wrenn", "sb1", "pids.max")); got != "20" {
		t.Errorf("pids.max = %q, want 20", got)
	}
	// Nothing is rewritten when every controller is already delegated.
	if got := readFile(t, filepath.Join(root, "wrenn", "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("parent subtree_control rewritten to %q", got)
	}
}

func TestV2Errors(t *testing.T) {
	ctx := context.Background()
	t.Run("controller not available", func(t *testing.T) {
		root := fakeV2(t, true)
		kernelDir(t, root, map[string]string{"cgroup.controllers": "cpu memory\n"})
		m, _ := detectFake(t, root)
		_, err := m.Create(ctx, "sb1", Limits{})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "pids") {
			t.Fatalf("Create = %v, want FailedPrecondition naming pids", err)
		}
	})
	t.Run("interface file missing", func(t *testing.T) {
		root := fakeV2(t, true)
		if err := os.Remove(filepath.Join(root, "wrenn", "sb1", "pids.max")); err != nil {
			t.Fatal(err)
		}
		m, _ := detectFake(t, root)
		_, err := m.Create(ctx, "sb1", Limits{Pids: 5})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "pids.max") {
			t.Fatalf("Create = %v, want FailedPrecondition naming pids.max", err)
		}
		if _, err := os.Stat(filepath.Join(root, "wrenn", "sb1", "pids.max")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pids.max was created as a regular file: %v", err)
		}
	})
	t.Run("v1 has no directory fd", func(t *testing.T) {
		m, _ := detectFake(t, fakeV1(t, fakeV1Opts{}))
		g, err := m.Create(ctx, "sb1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.OpenDir(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("OpenDir on v1 = %v, want FailedPrecondition", err)
		}
		if g.Dir() != "" {
			t.Errorf("Dir on v1 = %q, want empty", g.Dir())
		}
	})
}

func TestInvalidInput(t *testing.T) {
	root := fakeV2(t, true)
	m, _ := detectFake(t, root)
	ctx := context.Background()
	tests := []struct {
		name   string
		id     string
		limits Limits
	}{
		{"empty id", "", Limits{}},
		{"dot dot", "..", Limits{}},
		{"hidden", ".x", Limits{}},
		{"slash", "a/b", Limits{}},
		{"escape", "../../etc", Limits{}},
		{"space", "a b", Limits{}},
		{"too long", strings.Repeat("a", 129), Limits{}},
		{"negative memory", "ok", Limits{MemoryBytes: -1}},
		{"negative pids", "ok", Limits{Pids: -1}},
		{"negative cpu", "ok", Limits{CPUQuota: -0.5}},
		{"NaN cpu", "ok", Limits{CPUQuota: math.NaN()}},
		{"infinite cpu", "ok", Limits{CPUQuota: math.Inf(1)}},
		{"cpu below kernel minimum", "ok", Limits{CPUQuota: 0.001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Create(ctx, tt.id, tt.limits)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Create(%q, %+v) = %v, want InvalidArgument", tt.id, tt.limits, err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "wrenn", "ok")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected Create left a directory behind: %v", err)
	}
	if _, err := Detect(root, "../x"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Detect with parent ../x = %v, want InvalidArgument", err)
	}
	g, err := m.Create(ctx, "sb1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Add(0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Add(0) = %v, want InvalidArgument", err)
	}
	if err := g.Update(Limits{Pids: -3}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Update(-3 pids) = %v, want InvalidArgument", err)
	}
}

func TestV2AddStatsUpdate(t *testing.T) {
	root := fakeV2(t, true)
	m, _ := detectFake(t, root)
	g, err := m.Create(context.Background(), "sb1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "wrenn", "sb1")
	if err := g.Add(4242); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Errorf("cgroup.procs = %q, want 4242", got)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	want := Stats{MemoryBytes: 52428800, CPUUsageUS: 1234567, Pids: 3, OOMKills: 2}
	if s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
	if err := g.Update(Limits{CPUQuota: 2, MemoryBytes: 128 << 20, Pids: 64}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	for name, want := range map[string]string{"cpu.max": "200000 100000", "memory.max": "134217728", "pids.max": "64"} {
		if got := readFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("after Update %s = %q, want %q", name, got, want)
		}
	}
}

func TestV2Remove(t *testing.T) {
	ctx := context.Background()
	t.Run("cgroup.kill", func(t *testing.T) {
		root := fakeV2(t, true)
		dir := filepath.Join(root, "wrenn", "sb1")
		kernelDir(t, dir, map[string]string{"cgroup.kill": "", "cgroup.procs": "101\n102\n"})
		m, host := detectFake(t, root)
		g, err := m.Create(ctx, "sb1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		// The fake kernel never empties the group, so Remove must give up
		// when ctx ends, having asked the kernel to kill the group.
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		err = g.Remove(short, KillProcesses)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 processes remain") {
			t.Fatalf("Remove = %v, want deadline error naming 2 processes", err)
		}
		if got := readFile(t, filepath.Join(dir, "cgroup.kill")); got != "1" {
			t.Errorf("cgroup.kill = %q, want 1", got)
		}
		if len(host.signaled) != 0 {
			t.Errorf("signalled %v although cgroup.kill exists", host.signaled)
		}
		kernelDir(t, dir, map[string]string{"cgroup.procs": ""})
		if err := g.Remove(ctx, KillProcesses); err != nil {
			t.Fatalf("Remove of emptied group: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("group directory still there: %v", err)
		}
		if err := g.Remove(ctx, WaitEmpty); err != nil {
			t.Errorf("Remove of absent group = %v, want nil", err)
		}
	})
	t.Run("signal each process", func(t *testing.T) {
		root := fakeV2(t, true)
		dir := filepath.Join(root, "wrenn", "sb1")
		kernelDir(t, dir, map[string]string{"cgroup.procs": "101\n102\n"})
		m, host := detectFake(t, root)
		g, err := m.Create(ctx, "sb1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Remove(ctx, KillProcesses); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if !slices.Equal(host.signaled, []int{101, 102}) {
			t.Errorf("signalled %v, want [101 102]", host.signaled)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("group directory still there: %v", err)
		}
	})
	t.Run("wait empty does not kill", func(t *testing.T) {
		root := fakeV2(t, true)
		dir := filepath.Join(root, "wrenn", "sb1")
		kernelDir(t, dir, map[string]string{"cgroup.procs": "101\n"})
		m, host := detectFake(t, root)
		g, err := m.Create(ctx, "sb1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if err := g.Remove(short, WaitEmpty); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Remove = %v, want DeadlineExceeded", err)
		}
		if len(host.signaled) != 0 {
			t.Errorf("WaitEmpty signalled %v", host.signaled)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("group removed while a process was in it: %v", err)
		}
	})
}

func TestV2ListAndOpen(t *testing.T) {
	root := fakeV2(t, true)
	kernelDir(t, filepath.Join(root, "wrenn", "sb2"), nil)
	kernelDir(t, filepath.Join(root, "wrenn", ".not-ours"), nil)
	kernelDir(t, filepath.Join(root, "wrenn", "not ours"), nil)
	m, _ := detectFake(t, root)
	gs, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range gs {
		ids = append(ids, g.ID())
	}
	if !slices.Equal(ids, []string{"sb1", "sb2"}) {
		t.Errorf("List = %v, want [sb1 sb2]", ids)
	}
	if _, err := m.Open("sb2"); err != nil {
		t.Errorf("Open(sb2): %v", err)
	}
	if _, err := m.Open("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open(nope) = %v, want NotFound", err)
	}

	empty := t.TempDir()
	kernelDir(t, empty, map[string]string{"cgroup.controllers": "cpu memory pids"})
	m2, _ := detectFake(t, empty)
	if gs, err := m2.List(context.Background()); err != nil || len(gs) != 0 {
		t.Errorf("List without parent = %v, %v; want none", gs, err)
	}
}

type fakeV1Opts struct {
	noMemsw   bool
	coMounted bool // cpu and cpuacct share one hierarchy, as on most distributions
	hybrid    bool // a controller-less cgroup2 at root/unified, as on this host
	noPids    bool
}

// fakeV1 lays out v1 hierarchies and group "sb1" in each.
func fakeV1(t *testing.T, o fakeV1Opts) string {
	root := t.TempDir()
	ctrls := []string{"cpu", "cpuacct", "memory", "pids"}
	if o.coMounted {
		ctrls = []string{"cpu,cpuacct", "memory", "pids"}
	}
	for _, c := range ctrls {
		if c == "pids" && o.noPids {
			continue
		}
		kernelDir(t, filepath.Join(root, c), map[string]string{"cgroup.procs": "1\n", "tasks": "1\n"})
	}
	if o.coMounted {
		for _, l := range []string{"cpu", "cpuacct"} {
			if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if o.hybrid {
		kernelDir(t, filepath.Join(root, "unified"), map[string]string{"cgroup.controllers": "hugetlb\n"})
	}
	unlimited := "9223372036854771712\n"
	group := func(c string) string { return filepath.Join(root, c, "wrenn", "sb1") }
	kernelDir(t, group("cpu"), map[string]string{
		"cgroup.procs": "", "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n",
	})
	kernelDir(t, group("cpuacct"), map[string]string{"cgroup.procs": "", "cpuacct.usage": "987654321\n"})
	mem := map[string]string{
		"cgroup.procs":          "",
		"memory.limit_in_bytes": unlimited,
		"memory.usage_in_bytes": "1048576\n",
		"memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
	}
	if !o.noMemsw {
		mem["memory.memsw.limit_in_bytes"] = unlimited
	}
	kernelDir(t, group("memory"), mem)
	if !o.noPids {
		kernelDir(t, group("pids"), map[string]string{"cgroup.procs": "", "pids.max": "max\n", "pids.current": "5\n"})
	}
	return root
}

func TestV1Create(t *testing.T) {
	tests := []struct {
		name   string
		opts   fakeV1Opts
		limits Limits
		want   map[string]string // path under root -> exact content
	}{
		{
			name:   "separate hierarchies with memsw",
			opts:   fakeV1Opts{hybrid: true},
			limits: Limits{CPUQuota: 1, MemoryBytes: 64 << 20, Pids: 16},
			want: map[string]string{
				"cpu/wrenn/sb1/cpu.cfs_period_us":              "100000",
				"cpu/wrenn/sb1/cpu.cfs_quota_us":               "100000",
				"memory/wrenn/sb1/memory.limit_in_bytes":       "67108864",
				"memory/wrenn/sb1/memory.memsw.limit_in_bytes": "67108864",
				"pids/wrenn/sb1/pids.max":                      "16",
			},
		},
		{
			name:   "co-mounted cpu,cpuacct without memsw",
			opts:   fakeV1Opts{coMounted: true, noMemsw: true},
			limits: Limits{CPUQuota: 0.5, MemoryBytes: 1 << 30},
			want: map[string]string{
				"cpu,cpuacct/wrenn/sb1/cpu.cfs_quota_us": "50000",
				"memory/wrenn/sb1/memory.limit_in_bytes": "1073741824",
				"pids/wrenn/sb1/pids.max":                "max",
			},
		},
		{
			name:   "unlimited",
			opts:   fakeV1Opts{},
			limits: Limits{},
			want: map[string]string{
				"cpu/wrenn/sb1/cpu.cfs_quota_us":               "-1",
				"memory/wrenn/sb1/memory.limit_in_bytes":       "-1",
				"memory/wrenn/sb1/memory.memsw.limit_in_bytes": "-1",
				"pids/wrenn/sb1/pids.max":                      "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeV1(t, tt.opts)
			m, _ := detectFake(t, root)
			if m.Version() != 1 {
				t.Fatalf("Version = %d, want 1", m.Version())
			}
			if _, err := m.Create(context.Background(), "sb1", tt.limits); err != nil {
				t.Fatalf("Create: %v", err)
			}
			for p, want := range tt.want {
				if got := readFile(t, filepath.Join(root, p)); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			if tt.opts.noMemsw {
				if _, err := os.Stat(filepath.Join(root, "memory/wrenn/sb1/memory.memsw.limit_in_bytes")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("memsw file created on a host without swap accounting: %v", err)
				}
			}
		})
	}
}

func TestV1AddStatsRemove(t *testing.T) {
	ctx := context.Background()
	for _, coMounted := range []bool{false, true} {
		t.Run("coMounted="+strconv.FormatBool(coMounted), func(t *testing.T) {
			root := fakeV1(t, fakeV1Opts{coMounted: coMounted})
			m, host := detectFake(t, root)
			g, err := m.Create(ctx, "sb1", Limits{MemoryBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Add(777); err != nil {
				t.Fatalf("Add: %v", err)
			}
			procsFiles := []string{"cpu/wrenn/sb1/cgroup.procs", "cpuacct/wrenn/sb1/cgroup.procs", "memory/wrenn/sb1/cgroup.procs", "pids/wrenn/sb1/cgroup.procs"}
			if coMounted {
				procsFiles = []string{"cpu,cpuacct/wrenn/sb1/cgroup.procs", "memory/wrenn/sb1/cgroup.procs", "pids/wrenn/sb1/cgroup.procs"}
			}
			for _, p := range procsFiles {
				if got := readFile(t, filepath.Join(root, p)); got != "777" {
					t.Errorf("%s = %q, want 777", p, got)
				}
			}
			s, err := g.Stats()
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if want := (Stats{MemoryBytes: 1 << 20, CPUUsageUS: 987654, Pids: 5, OOMKills: 1}); s != want {
				t.Errorf("Stats = %+v, want %+v", s, want)
			}
			if err := g.Remove(ctx, KillProcesses); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if !slices.Equal(host.signaled, []int{777}) {
				t.Errorf("signalled %v, want [777] once", host.signaled)
			}
			for _, p := range procsFiles {
				if _, err := os.Stat(filepath.Dir(filepath.Join(root, p))); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists", filepath.Dir(p))
				}
			}
		})
	}
}

func TestV1ListUnion(t *testing.T) {
	root := fakeV1(t, fakeV1Opts{})
	// A crash between mkdirs can leave a group in one hierarchy only.
	kernelDir(t, filepath.Join(root, "memory", "wrenn", "half"), map[string]string{"cgroup.procs": "55\n"})
	m, host := detectFake(t, root)
	gs, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range gs {
		ids = append(ids, g.ID())
	}
	if !slices.Equal(ids, []string{"half", "sb1"}) {
		t.Fatalf("List = %v, want [half sb1]", ids)
	}
	if err := gs[0].Remove(context.Background(), KillProcesses); err != nil {
		t.Fatalf("Remove half group: %v", err)
	}
	if !slices.Equal(host.signaled, []int{55}) {
		t.Errorf("signalled %v, want [55]", host.signaled)
	}
}

func TestV1ShrinkAndGrowMemory(t *testing.T) {
	root := fakeV1(t, fakeV1Opts{})
	m, _ := detectFake(t, root)
	g, err := m.Create(context.Background(), "sb1", Limits{MemoryBytes: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int64{64 << 20, 512 << 20, 0} {
		if err := g.Update(Limits{MemoryBytes: n}); err != nil {
			t.Fatalf("Update(%d): %v", n, err)
		}
		want := "-1"
		if n > 0 {
			want = strconv.FormatInt(n, 10)
		}
		for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
			if got := readFile(t, filepath.Join(root, "memory/wrenn/sb1", f)); got != want {
				t.Errorf("after Update(%d) %s = %q, want %q", n, f, got, want)
			}
		}
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name    string
		root    func(t *testing.T) string
		version int
		err     error
	}{
		{"unified", func(t *testing.T) string { return fakeV2(t, true) }, 2, nil},
		{"hybrid is v1", func(t *testing.T) string { return fakeV1(t, fakeV1Opts{hybrid: true}) }, 1, nil},
		{"co-mounted v1", func(t *testing.T) string { return fakeV1(t, fakeV1Opts{coMounted: true}) }, 1, nil},
		{"v1 without pids", func(t *testing.T) string { return fakeV1(t, fakeV1Opts{noPids: true}) }, 0, errdefs.ErrUnavailable},
		{"nothing mounted", func(t *testing.T) string { return t.TempDir() }, 0, errdefs.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Detect(tt.root(t), "")
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Detect = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if m.Version() != tt.version {
				t.Errorf("Version = %d, want %d", m.Version(), tt.version)
			}
		})
	}
}
