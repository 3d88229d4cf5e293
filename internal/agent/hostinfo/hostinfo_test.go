package hostinfo_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/agent/state"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

type fakeSandboxes struct {
	infos     []agent.Info
	templates []agent.Template
	listErr   error
	tmplErr   error
}

func (f fakeSandboxes) List(context.Context) ([]agent.Info, error) { return f.infos, f.listErr }
func (f fakeSandboxes) Templates(context.Context) ([]agent.Template, error) {
	return f.templates, f.tmplErr
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeProc(t *testing.T) string {
	proc := t.TempDir()
	write(t, proc+"/meminfo", "MemTotal:       2048 kB\nMemFree:  1 kB\nMemAvailable:    1024 kB\nHugePages_Total:   0\n")
	write(t, proc+"/loadavg", "1.50 0.30 0.20 1/300 12345\n")
	return proc
}

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/kernels/vmlinux-6.1.9", "")
	write(t, dir+"/kernels/vmlinux-6.12.1", "")
	sb := func(id string, s state.State) agent.Info {
		return agent.Info{ID: id, State: s, VCPUs: 2, MemoryMB: 256, DiskMB: 1024}
	}
	// Paused without its memory: no VMM, only its disk.
	dropped := func(id string) agent.Info { in := sb(id, state.Paused); in.MemoryDropped = true; return in }
	versioned := func(id string, s state.State, v int64) agent.Info { in := sb(id, s); in.Version = v; return in }
	src := fakeSandboxes{
		infos: []agent.Info{sb("a", state.Starting), versioned("b", state.Running, 4), versioned("c", state.Paused, 7),
			sb("d", state.Hibernated), sb("e", state.Stopping), sb("f", state.Error), dropped("g")},
		templates: []agent.Template{{Name: "python", Snapshot: true, DiskBytes: 9}, {Name: "minimal", DiskBytes: 7}},
	}
	c := hostinfo.New(hostinfo.Config{Dir: dir, VMM: "firecracker", Accelerator: "kvm", Sandboxes: src, ProcDir: fakeProc(t)})
	st, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sp, u := st.Specs, st.Usage
	// Images are the base images every team may use: the snapshot
	// template "python" is one team's and is listed only as a template.
	if sp.GetKernelVersion() != "6.12.1" || sp.GetMemoryBytes() != 2048<<10 || sp.GetVmm() != "firecracker" ||
		sp.GetAccelerator() != "kvm" || strings.Join(sp.GetImages(), ",") != "minimal" || sp.GetDiskBytes() <= 0 {
		t.Errorf("specs = %v", sp)
	}
	// Starting and running count as running; paused and hibernated as
	// paused; a VMM's vCPUs and memory are held by a, b, c (not g, paused
	// without its memory); disk by all but the stopped.
	if u.GetSandboxesRunning() != 2 || u.GetSandboxesPaused() != 3 || u.GetReservedVcpus() != 6 ||
		u.GetReservedMemoryBytes() != 3*256<<20 || u.GetReservedDiskBytes() != 7*1024<<20 ||
		u.GetMemoryAvailableBytes() != 1024<<10 || u.GetLoad1() != 1.5 || u.GetDiskAvailableBytes() <= 0 {
		t.Errorf("usage = %v", u)
	}
	if strings.Join(st.SandboxIDs, ",") != "a,b,c,d,e,f,g" || len(st.Templates) != 2 || st.Templates[0].GetDiskBytes() != 9 {
		t.Errorf("ids %v templates %v", st.SandboxIDs, st.Templates)
	}
	wantStates := map[string]hostagentv1.SandboxState{
		"a": hostagentv1.SandboxState_SANDBOX_STATE_STARTING, "b": hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
		"c": hostagentv1.SandboxState_SANDBOX_STATE_PAUSED, "d": hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED,
		"e": hostagentv1.SandboxState_SANDBOX_STATE_STOPPED, "f": hostagentv1.SandboxState_SANDBOX_STATE_ERROR,
		"g": hostagentv1.SandboxState_SANDBOX_STATE_PAUSED,
	}
	if !maps.Equal(st.SandboxStates, wantStates) {
		t.Errorf("states %v, want %v", st.SandboxStates, wantStates)
	}
	// Versions of those that have one (records from before versions: none).
	if want := map[string]int64{"b": 4, "c": 7}; !maps.Equal(st.SandboxVersions, want) {
		t.Errorf("versions %v, want %v", st.SandboxVersions, want)
	}
}

func TestCollectFailures(t *testing.T) {
	tests := []struct {
		name  string
		src   fakeSandboxes
		proc  func(t *testing.T, proc string)
		fails bool
	}{
		{name: "no images dir is no templates", src: fakeSandboxes{tmplErr: fmt.Errorf("list templates: %w", os.ErrNotExist)}},
		{name: "sandbox list fails", src: fakeSandboxes{listErr: context.DeadlineExceeded}, fails: true},
		{name: "template list fails", src: fakeSandboxes{tmplErr: errors.New("EIO")}, fails: true},
		{name: "no MemAvailable", proc: func(t *testing.T, p string) { write(t, p+"/meminfo", "MemTotal: 1 kB\n") }, fails: true},
		{name: "garbled loadavg", proc: func(t *testing.T, p string) { write(t, p+"/loadavg", "high\n") }, fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := fakeProc(t)
			if tt.proc != nil {
				tt.proc(t, proc)
			}
			c := hostinfo.New(hostinfo.Config{Dir: t.TempDir(), Sandboxes: tt.src, ProcDir: proc})
			_, err := c.Collect(context.Background())
			if (err != nil) != tt.fails {
				t.Errorf("err = %v, want failure %v", err, tt.fails)
			}
		})
	}
}

func TestSandboxCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(hostinfo.NewSandboxCollector(fakeSandboxes{infos: []agent.Info{
		{ID: "a", State: state.Running}, {ID: "b", State: state.Running}, {ID: "c", State: state.Paused}}}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if got["running"] != 2 || got["paused"] != 1 || got["hibernated"] != 0 || len(got) != len(state.All) {
		t.Errorf("wrenn_agent_sandboxes = %v", got)
	}

	bad := prometheus.NewRegistry()
	bad.MustRegister(hostinfo.NewSandboxCollector(fakeSandboxes{listErr: context.DeadlineExceeded}))
	if _, err := bad.Gather(); err == nil {
		t.Error("a failed listing was reported as zero sandboxes")
	}
}

// TestCollectAdmissionFigures: the heartbeat carries what the control
// plane admits guest RAM and disk against: the guest-memory tmpfs's size
// and free space, and the bytes live sandboxes occupy on WRENN_DIR (their
// directories and hibernation snapshots; a stopped one's are not counted).
func TestCollectAdmissionFigures(t *testing.T) {
	dir, memDir := t.TempDir(), t.TempDir()
	write(t, dir+"/sandboxes/a/vm/rootfs.qcow2", strings.Repeat("x", 1<<20))
	write(t, dir+"/snapshots/b/memory", strings.Repeat("y", 2<<20))
	write(t, dir+"/sandboxes/s/vm/rootfs.qcow2", strings.Repeat("z", 4<<20))
	src := fakeSandboxes{infos: []agent.Info{
		{ID: "a", State: state.Running}, {ID: "b", State: state.Hibernated}, {ID: "s", State: state.Stopped},
	}}
	c := hostinfo.New(hostinfo.Config{Dir: dir, Sandboxes: src, ProcDir: fakeProc(t), MemoryDir: memDir})
	st, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u := st.Usage
	if u.GetGuestMemoryBytes() <= 0 || u.GetGuestMemoryAvailableBytes() <= 0 || u.GetGuestMemoryAvailableBytes() > u.GetGuestMemoryBytes() {
		t.Errorf("guest memory tmpfs: size %d, free %d", u.GetGuestMemoryBytes(), u.GetGuestMemoryAvailableBytes())
	}
	// 3 MiB written by a and b (allocation may round up a block or so).
	if got := u.GetSandboxDiskUsedBytes(); got < 3<<20 || got > 3<<20+64<<10 {
		t.Errorf("sandbox disk used = %d, want 3 MiB (a's disk and b's snapshot, not stopped s's)", got)
	}
}
