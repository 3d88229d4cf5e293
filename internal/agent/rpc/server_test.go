package rpc_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func running(id string) agent.Info {
	return agent.Info{
		ID: id, Template: "minimal", State: state.Running, VCPUs: 2, MemoryMB: 512, DiskMB: 2048,
		Timeout: 5 * time.Minute, OnTimeout: agent.OnTimeoutKill, CreatedAt: time.UnixMilli(1_700_000_000_000),
		Address: "127.0.0.1", AccessToken: "secret-" + id,
	}
}

// wantCode fails unless err is a Connect error with code.
func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
}

func TestCreateSandbox(t *testing.T) {
	m := newFakeManager()
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	res, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		Id: "sb1", Template: "python", Vcpus: 2, MemoryMb: 1024, DiskMb: 4096,
		Env: map[string]string{"A": "1"}, Metadata: map[string]string{"team": "t1"},
		Network:   &hostagentv1.NetworkPolicy{AllowInternet: true, AllowOut: []string{"10.1.0.0/16"}, DenyOut: []string{"1.2.3.4/32"}},
		TimeoutMs: 90_000, OnTimeout: hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE,
	}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	sb := res.Msg.GetSandbox()
	if sb.GetAccessToken() != "token-sb1" {
		t.Errorf("access_token = %q, want the sandbox's token in the create response", sb.GetAccessToken())
	}
	if sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_RUNNING || sb.GetTimeoutMs() != 90_000 ||
		sb.GetOnTimeout() != hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE || sb.GetCreatedAtUnixMs() != 1_700_000_000_000 {
		t.Errorf("sandbox = %v", sb)
	}
	if got := sb.GetNetwork(); !got.GetAllowInternet() || got.GetAllowOut()[0] != "10.1.0.0/16" || got.GetDenyOut()[0] != "1.2.3.4/32" {
		t.Errorf("network = %v", got)
	}
	req := read(m, func() agent.CreateRequest { return m.lastCreate })
	wantPol := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if req.Timeout != 90*time.Second || req.OnTimeout != agent.OnTimeoutPause || req.Env["A"] != "1" ||
		req.VCPUs != 2 || req.MemoryMB != 1024 || req.DiskMB != 4096 || !req.Network.Internet ||
		len(req.Network.AllowOut) != 1 || req.Network.AllowOut[0] != wantPol[0] {
		t.Errorf("manager got %+v", req)
	}

	tests := []struct {
		name string
		req  *hostagentv1.CreateSandboxRequest
		code connect.Code
	}{
		{name: "no id", req: &hostagentv1.CreateSandboxRequest{}, code: connect.CodeInvalidArgument},
		{name: "bad CIDR", req: &hostagentv1.CreateSandboxRequest{Id: "x", Network: &hostagentv1.NetworkPolicy{AllowOut: []string{"10.0.0.0/33"}}}, code: connect.CodeInvalidArgument},
		{name: "not a CIDR", req: &hostagentv1.CreateSandboxRequest{Id: "x", Network: &hostagentv1.NetworkPolicy{DenyOut: []string{"example.com"}}}, code: connect.CodeInvalidArgument},
		{name: "IPv6 CIDR", req: &hostagentv1.CreateSandboxRequest{Id: "x", Network: &hostagentv1.NetworkPolicy{DenyOut: []string{"fd00::/8"}}}, code: connect.CodeInvalidArgument},
		{name: "negative timeout", req: &hostagentv1.CreateSandboxRequest{Id: "x", TimeoutMs: -1}, code: connect.CodeInvalidArgument},
		{name: "unknown on_timeout", req: &hostagentv1.CreateSandboxRequest{Id: "x", OnTimeout: 7}, code: connect.CodeInvalidArgument},
		{name: "exists", req: &hostagentv1.CreateSandboxRequest{Id: "sb1"}, code: connect.CodeAlreadyExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(tt.req))
			wantCode(t, err, tt.code)
		})
	}
	t.Run("manager failure is internal", func(t *testing.T) {
		m.fail("Create", errors.New("qemu exploded"))
		defer m.fail("Create", nil)
		_, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{Id: "sb2"}))
		wantCode(t, err, connect.CodeInternal)
	})
	t.Run("no network means no egress", func(t *testing.T) {
		if _, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{Id: "sb3"})); err != nil {
			t.Fatal(err)
		}
		last := read(m, func() agent.CreateRequest { return m.lastCreate })
		if p := last.Network; p.Internet || len(p.AllowOut) != 0 {
			t.Errorf("policy = %+v, want none", p)
		}
		if last.OnTimeout != "" {
			t.Errorf("on_timeout = %q, want the manager's default", last.OnTimeout)
		}
	})
}

func TestReadSandboxes(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	p := running("sb2")
	p.State, p.CreatedAt = state.Hibernated, p.CreatedAt.Add(time.Second)
	m.add(p)
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	got, err := s.rpc.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{Id: "sb1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.GetSandbox().GetId() != "sb1" || got.Msg.GetSandbox().GetAccessToken() != "" {
		t.Errorf("get = %v, want sb1 without its token", got.Msg.GetSandbox())
	}
	_, err = s.rpc.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{Id: "nope"}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = s.rpc.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{}))
	wantCode(t, err, connect.CodeInvalidArgument)

	list, err := s.rpc.ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	sbs := list.Msg.GetSandboxes()
	if len(sbs) != 2 || sbs[0].GetId() != "sb1" || sbs[1].GetState() != hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED {
		t.Fatalf("list = %v", sbs)
	}
	for _, sb := range sbs {
		if sb.GetAccessToken() != "" {
			t.Errorf("list leaks %s's access token", sb.GetId())
		}
	}
}

// TestMemoryDroppedReported: a sandbox paused without its memory says so
// in Get and List; others do not.
func TestMemoryDroppedReported(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	p := running("sb2")
	p.State, p.MemoryDropped, p.CreatedAt = state.Paused, true, p.CreatedAt.Add(time.Second)
	m.add(p)
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()
	got, err := s.rpc.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{Id: "sb2"}))
	if err != nil {
		t.Fatal(err)
	}
	if sb := got.Msg.GetSandbox(); !sb.GetMemoryDropped() || sb.GetState() != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED {
		t.Errorf("get = %v, want paused with memory_dropped", sb)
	}
	list, err := s.rpc.ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if sbs := list.Msg.GetSandboxes(); len(sbs) != 2 || sbs[0].GetMemoryDropped() || !sbs[1].GetMemoryDropped() {
		t.Errorf("list = %v", sbs)
	}
}

func TestLifecycleCalls(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()
	calls := []struct {
		name string
		call func(id string) error
	}{
		{"Pause", func(id string) error {
			_, err := s.rpc.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{Id: id}))
			return err
		}},
		{"PauseDropMemory", func(id string) error {
			_, err := s.rpc.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{Id: id, DropMemory: true}))
			return err
		}},
		{"Resume", func(id string) error {
			_, err := s.rpc.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{Id: id}))
			return err
		}},
		{"Hibernate", func(id string) error {
			_, err := s.rpc.HibernateSandbox(ctx, connect.NewRequest(&hostagentv1.HibernateSandboxRequest{Id: id}))
			return err
		}},
		{"Destroy", func(id string) error {
			_, err := s.rpc.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{Id: id}))
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			wantCode(t, c.call(""), connect.CodeInvalidArgument)
			wantCode(t, c.call("nope"), connect.CodeNotFound)
			m.fail(c.name, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox is stopping"))
			wantCode(t, c.call("sb1"), connect.CodeFailedPrecondition)
			m.fail(c.name, nil)
			if err := c.call("sb1"); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if last := read(m, func() string { return m.calls[len(m.calls)-1] }); last != c.name+" sb1" {
				t.Errorf("last manager call = %q", last)
			}
		})
	}
}

func TestForkSandbox(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()
	for _, n := range []int32{0, -1, 21} {
		_, err := s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "sb1", Count: n}))
		wantCode(t, err, connect.CodeInvalidArgument)
	}
	_, err := s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "nope", Count: 1}))
	wantCode(t, err, connect.CodeNotFound)
	res, err := s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "sb1", Count: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.GetSandboxes()) != 2 {
		t.Fatalf("forks = %v", res.Msg.GetSandboxes())
	}
	for _, f := range res.Msg.GetSandboxes() {
		if f.GetAccessToken() != "token-"+f.GetId() {
			t.Errorf("fork %s token = %q, want its own token in the fork response", f.GetId(), f.GetAccessToken())
		}
	}
	// Forks named by the control plane: exactly count ids.
	_, err = s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "sb1", Count: 2, Ids: []string{"only-one"}}))
	wantCode(t, err, connect.CodeInvalidArgument)
	res, err = s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "sb1", Count: 2, Ids: []string{"named-a", "named-b"}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range res.Msg.GetSandboxes() {
		got = append(got, f.GetId())
	}
	if !slices.Equal(got, []string{"named-a", "named-b"}) {
		t.Fatalf("named forks = %v, want [named-a named-b]", got)
	}
}

func TestSetTimeoutAndNetwork(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	_, err := s.rpc.SetSandboxTimeout(ctx, connect.NewRequest(&hostagentv1.SetSandboxTimeoutRequest{Id: "sb1", TimeoutMs: 0}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = s.rpc.SetSandboxTimeout(ctx, connect.NewRequest(&hostagentv1.SetSandboxTimeoutRequest{Id: "nope", TimeoutMs: 1000}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := s.rpc.SetSandboxTimeout(ctx, connect.NewRequest(&hostagentv1.SetSandboxTimeoutRequest{Id: "sb1", TimeoutMs: 1500})); err != nil {
		t.Fatal(err)
	}
	d, on := read(m, func() time.Duration { return m.lastTimeout.d }), read(m, func() agent.OnTimeout { return m.lastTimeout.on })
	if d != 1500*time.Millisecond || on != "" {
		t.Errorf("timeout = %v %q, want 1.5s keeping the current action", d, on)
	}

	_, err = s.rpc.SetSandboxNetwork(ctx, connect.NewRequest(&hostagentv1.SetSandboxNetworkRequest{Id: "sb1"}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = s.rpc.SetSandboxNetwork(ctx, connect.NewRequest(&hostagentv1.SetSandboxNetworkRequest{Id: "sb1",
		Network: &hostagentv1.NetworkPolicy{AllowOut: []string{"300.0.0.0/8"}}}))
	wantCode(t, err, connect.CodeInvalidArgument)
	if _, err := s.rpc.SetSandboxNetwork(ctx, connect.NewRequest(&hostagentv1.SetSandboxNetworkRequest{Id: "sb1",
		Network: &hostagentv1.NetworkPolicy{AllowInternet: true, DenyOut: []string{"8.8.8.8/32"}}})); err != nil {
		t.Fatal(err)
	}
	if p := read(m, func() network.Policy { return m.lastPolicy }); !p.Internet || len(p.DenyOut) != 1 || p.DenyOut[0].String() != "8.8.8.8/32" {
		t.Errorf("policy = %+v", p)
	}
}

func TestMetricsAndLogs(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	m.metrics = agent.Metrics{VMMMemoryBytes: 1, VMMCPUUsageUS: 2, DiskAllocated: 3, SnapshotBytes: 4,
		Guest: envdclient.Metrics{MemTotal: 5, MemUsed: 6, CPUUsedPct: 7.5, DiskTotal: 8, DiskUsed: 9}}
	m.console = []byte("[    0.000000] Linux version 6.1\n")
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	met, err := s.rpc.GetSandboxMetrics(ctx, connect.NewRequest(&hostagentv1.GetSandboxMetricsRequest{Id: "sb1"}))
	if err != nil {
		t.Fatal(err)
	}
	g := met.Msg
	if g.GetVmmMemoryBytes() != 1 || g.GetVmmCpuUsageUs() != 2 || g.GetDiskAllocatedBytes() != 3 || g.GetSnapshotBytes() != 4 ||
		g.GetGuestMemTotalBytes() != 5 || g.GetGuestMemUsedBytes() != 6 || g.GetGuestCpuUsedPct() != 7.5 ||
		g.GetGuestDiskTotalBytes() != 8 || g.GetGuestDiskUsedBytes() != 9 {
		t.Errorf("metrics = %v", g)
	}
	_, err = s.rpc.GetSandboxMetrics(ctx, connect.NewRequest(&hostagentv1.GetSandboxMetricsRequest{Id: "nope"}))
	wantCode(t, err, connect.CodeNotFound)
	// No range: unbounded on both sides, no samples yet.
	if r := read(m, func() [2]time.Time { return m.lastRange }); !r[0].IsZero() || !r[1].IsZero() || len(g.GetSamples()) != 0 {
		t.Errorf("unbounded request: range %v, samples %v", r, g.GetSamples())
	}

	// History: the range reaches the manager as times, samples come back
	// field by field in the manager's order.
	m.mu.Lock()
	m.history = []agent.MetricsSample{
		{UnixMs: 1_700_000_000_000, CPUCount: 2, CPUUsedPct: 12.5, MemUsed: 10, MemTotal: 20, DiskUsed: 30, DiskTotal: 40},
		{UnixMs: 1_700_000_005_000, CPUCount: 2, CPUUsedPct: 50, MemUsed: 11, MemTotal: 20, DiskUsed: 31, DiskTotal: 40},
	}
	m.mu.Unlock()
	met, err = s.rpc.GetSandboxMetrics(ctx, connect.NewRequest(&hostagentv1.GetSandboxMetricsRequest{Id: "sb1", StartUnixMs: 1_699_999_999_000, EndUnixMs: 1_700_000_009_000}))
	if err != nil {
		t.Fatal(err)
	}
	if r := read(m, func() [2]time.Time { return m.lastRange }); r[0].UnixMilli() != 1_699_999_999_000 || r[1].UnixMilli() != 1_700_000_009_000 {
		t.Errorf("range reached the manager as %v", r)
	}
	samples := met.Msg.GetSamples()
	if len(samples) != 2 {
		t.Fatalf("samples = %v", samples)
	}
	if s0, s1 := samples[0], samples[1]; s0.GetTimeUnixMs() != 1_700_000_000_000 || s0.GetCpuCount() != 2 || s0.GetCpuUsedPct() != 12.5 ||
		s0.GetMemUsedBytes() != 10 || s0.GetMemTotalBytes() != 20 || s0.GetDiskUsedBytes() != 30 || s0.GetDiskTotalBytes() != 40 ||
		s1.GetTimeUnixMs() != 1_700_000_005_000 || s1.GetCpuUsedPct() != 50 {
		t.Errorf("samples = %v", samples)
	}
	// Only a start: unbounded end.
	if _, err := s.rpc.GetSandboxMetrics(ctx, connect.NewRequest(&hostagentv1.GetSandboxMetricsRequest{Id: "sb1", StartUnixMs: 5})); err != nil {
		t.Fatal(err)
	}
	if r := read(m, func() [2]time.Time { return m.lastRange }); r[0].UnixMilli() != 5 || !r[1].IsZero() {
		t.Errorf("start-only range reached the manager as %v", r)
	}
	for _, bad := range []*hostagentv1.GetSandboxMetricsRequest{
		{Id: "sb1", StartUnixMs: -1},
		{Id: "sb1", EndUnixMs: -1},
		{Id: "sb1", StartUnixMs: 2000, EndUnixMs: 1000},
	} {
		_, err := s.rpc.GetSandboxMetrics(ctx, connect.NewRequest(bad))
		wantCode(t, err, connect.CodeInvalidArgument)
	}

	logs, err := s.rpc.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: "sb1"}))
	if err != nil {
		t.Fatal(err)
	}
	if tail := read(m, func() int64 { return m.lastTail }); string(logs.Msg.GetConsole()) != string(m.console) || tail != 0 {
		t.Errorf("logs = %q with tail %d", logs.Msg.GetConsole(), tail)
	}
	for _, n := range []int64{-1, agent.MaxConsoleTail + 1} {
		_, err = s.rpc.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: "sb1", TailBytes: n}))
		wantCode(t, err, connect.CodeInvalidArgument)
	}
	_, err = s.rpc.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: "nope"}))
	wantCode(t, err, connect.CodeNotFound)
}

func TestTemplates(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	m.templates = []agent.Template{{Name: "minimal", DiskBytes: 100}}
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	_, err := s.rpc.SnapshotTemplate(ctx, connect.NewRequest(&hostagentv1.SnapshotTemplateRequest{SandboxId: "sb1"}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = s.rpc.SnapshotTemplate(ctx, connect.NewRequest(&hostagentv1.SnapshotTemplateRequest{SandboxId: "nope", Template: "t"}))
	wantCode(t, err, connect.CodeNotFound)
	snap, err := s.rpc.SnapshotTemplate(ctx, connect.NewRequest(&hostagentv1.SnapshotTemplateRequest{SandboxId: "sb1", Template: "mine"}))
	if err != nil {
		t.Fatal(err)
	}
	if tp := snap.Msg.GetTemplate(); tp.GetName() != "mine" || !tp.GetSnapshot() || tp.GetDiskBytes() != 4096 {
		t.Errorf("template = %v", tp)
	}

	list, err := s.rpc.ListTemplates(ctx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetTemplates()) != 2 {
		t.Errorf("templates = %v", list.Msg.GetTemplates())
	}

	_, err = s.rpc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = s.rpc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: "nope"}))
	wantCode(t, err, connect.CodeNotFound)
	m.fail("DeleteTemplate", errdefs.New(errdefs.ErrFailedPrecondition, "in use"))
	_, err = s.rpc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: "mine"}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	m.fail("DeleteTemplate", nil)
	if _, err := s.rpc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: "mine"})); err != nil {
		t.Fatal(err)
	}
}

func TestGetHostStatus(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	paused := running("sb2")
	paused.State = state.Paused
	m.add(paused)
	hib := running("sb3")
	hib.State = state.Hibernated
	m.add(hib)
	m.templates = []agent.Template{{Name: "python", Snapshot: true}, {Name: "minimal"}}
	s := startAgent(t, m, serverOpts{host: collector(t, m)})

	res, err := s.rpc.GetHostStatus(context.Background(), connect.NewRequest(&hostagentv1.GetHostStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	sp, u := res.Msg.GetSpecs(), res.Msg.GetUsage()
	if sp.GetCpus() < 1 || sp.GetArch() == "" || sp.GetMemoryBytes() != 16000000<<10 || sp.GetDiskBytes() <= 0 ||
		sp.GetVmm() != "qemu" || sp.GetAccelerator() != "tcg" || sp.GetAgentVersion() == "" ||
		strings.Join(sp.GetImages(), ",") != "minimal" { // a snapshot template is never a base image
		t.Errorf("specs = %v", sp)
	}
	// sb1 running, sb2 paused (both hold 2 vCPUs / 512 MiB), sb3
	// hibernated (disk only).
	if u.GetSandboxesRunning() != 1 || u.GetSandboxesPaused() != 2 || u.GetReservedVcpus() != 4 ||
		u.GetReservedMemoryBytes() != 1024<<20 || u.GetReservedDiskBytes() != 3*2048<<20 ||
		u.GetMemoryAvailableBytes() != 8000000<<10 || u.GetDiskAvailableBytes() <= 0 || u.GetLoad1() != 0.42 {
		t.Errorf("usage = %v", u)
	}
	if len(res.Msg.GetTemplates()) != 2 {
		t.Errorf("templates = %v", res.Msg.GetTemplates())
	}

	m.fail("List", context.DeadlineExceeded)
	_, err = s.rpc.GetHostStatus(context.Background(), connect.NewRequest(&hostagentv1.GetHostStatusRequest{}))
	wantCode(t, err, connect.CodeDeadlineExceeded)
}

func TestRPCMetrics(t *testing.T) {
	m := newFakeManager()
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()
	_, _ = s.rpc.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{Id: "nope"}))
	if _, err := s.rpc.ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{})); err != nil {
		t.Fatal(err)
	}
	families, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "wrenn_agent_rpc_requests_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = mt.GetCounter().GetValue()
		}
	}
	if got["code=not_found,method=GetSandbox"] != 1 || got["code=ok,method=ListSandboxes"] != 1 {
		t.Errorf("rpc request counts = %v", got)
	}
}

// TestTeamReachesManager checks that every call that creates from a
// template, forks, resumes, snapshots or deletes a template hands the
// manager the team the control plane acts for, and that the manager's
// refusal of another team's sandbox or template reaches the caller as
// PermissionDenied.
func TestTeamReachesManager(t *testing.T) {
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()
	const team = "0b5c8f9e-1f57-4a43-9d3c-5c1e8a3f0a11"

	if _, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{Id: "new1", Template: "t-abc", TeamId: team})); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	created := m.lastCreate.TeamID
	m.mu.Unlock()
	if created != team {
		t.Errorf("create team = %q, want %q", created, team)
	}
	if _, err := s.rpc.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: "sb1", Count: 1, TeamId: team})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rpc.SnapshotTemplate(ctx, connect.NewRequest(&hostagentv1.SnapshotTemplateRequest{SandboxId: "sb1", Template: "t-mine", TeamId: team})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rpc.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{Id: "sb1", TeamId: team})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rpc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: "t-mine", TeamId: team})); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"Fork", "SnapshotTemplate", "Resume", "DeleteTemplate"} {
		if got := m.team(method); got != team {
			t.Errorf("%s team = %q, want %q", method, got, team)
		}
	}

	m.fail("Create", errdefs.New(errdefs.ErrPermissionDenied, "template %q belongs to another team", "t-abc"))
	_, err := s.rpc.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{Id: "new2", Template: "t-abc", TeamId: "other"}))
	wantCode(t, err, connect.CodePermissionDenied)
}
