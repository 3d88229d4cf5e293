package hostmon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"github.com/wrenn/wrenn/internal/clocktest"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/controlplane/hostmon"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/pgtest"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// fakeClock moves only when the test says so.
type fakeClock = clocktest.Clock

// env is a database, a registry service and a fake clock shared by the
// registry and the monitors.
type env struct {
	db       *pgxpool.Pool
	clk      *fakeClock
	registry hostagentv1connect.HostRegistryServiceClient
	teamID   uuid.UUID
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	clk := clocktest.New(time.Now().Truncate(time.Second))
	ca, err := hostreg.LoadOrCreateCA(ctx, store.New(db), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	path, h := hostreg.New(db, ca, clk, nil).Handler()
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &env{db: db, clk: clk, registry: hostagentv1connect.NewHostRegistryServiceClient(srv.Client(), srv.URL)}
	if err := db.QueryRow(ctx, "INSERT INTO teams (name) VALUES ('t') RETURNING id").Scan(&e.teamID); err != nil {
		t.Fatal(err)
	}
	return e
}

// agent is a registered host as its agent sees it.
type agent struct {
	id   uuid.UUID
	cred string
}

func (e *env) registerHost(t *testing.T, address string) agent {
	t.Helper()
	ctx := context.Background()
	tok, hash := hostreg.NewRegistrationToken()
	h, err := store.New(e.db).CreateHost(ctx, store.CreateHostParams{
		TeamID: e.teamID, Type: "byoc", RegistrationTokenHash: hash, RegistrationExpiresAt: e.clk.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	resp, err := e.registry.Register(ctx, connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: tok, Address: address, Specs: &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 2},
		CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
	}))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return agent{id: h.ID, cred: resp.Msg.HostToken}
}

func (e *env) heartbeat(t *testing.T, a agent, sandboxIDs ...string) {
	t.Helper()
	req := connect.NewRequest(&hostagentv1.HeartbeatRequest{SandboxIds: sandboxIDs})
	req.Header().Set("Authorization", "Bearer "+a.cred)
	if _, err := e.registry.Heartbeat(context.Background(), req); err != nil {
		t.Fatalf("heartbeat of %s: %v", a.id, err)
	}
}

func (e *env) addSandbox(t *testing.T, id string, host uuid.UUID, state string) {
	t.Helper()
	_, err := e.db.Exec(context.Background(), `INSERT INTO sandboxes
		(id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, created_at)
		VALUES ($1, $2, $3, 'minimal', $4, 1, 512, 1024, 300, 'kill', $5)`,
		id, e.teamID, host, state, e.clk.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) states(t *testing.T) map[string]string {
	t.Helper()
	rows, err := e.db.Query(context.Background(), "SELECT id, state FROM sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var id, s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		m[id] = s
	}
	return m
}

func (e *env) hostStatus(t *testing.T, id uuid.UUID) string {
	t.Helper()
	var s string
	if err := e.db.QueryRow(context.Background(), "SELECT status FROM hosts WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func wantStates(t *testing.T, got, want map[string]string) {
	t.Helper()
	for id, w := range want {
		if got[id] != w {
			t.Errorf("sandbox %s: %s, want %s", id, got[id], w)
		}
	}
}

// A host that stops heartbeating becomes unreachable once its last
// heartbeat is more than the timeout old, and not a second before; its
// running sandboxes go missing, paused ones stay. When it heartbeats
// again, the sandboxes it still holds run and the others are stopped.
func TestSilentHostGoesUnreachableAndComesBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	mon, err := hostmon.New(e.db, hostmon.Options{Clock: e.clk, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	silent := e.registerHost(t, "127.0.0.1:50051")
	alive := e.registerHost(t, "127.0.0.1:50052")
	for id, state := range map[string]string{
		"run-kept": "running", "run-lost": "running", "starting": "starting",
		"paused": "paused", "hibernated": "hibernated", "stopped": "stopped",
	} {
		e.addSandbox(t, id, silent.id, state)
	}
	e.addSandbox(t, "elsewhere", alive.id, "running")
	silentSince := e.clk.Now()

	// One simulated second at a time; the live host heartbeats every 30 s.
	var unreachableAfter time.Duration
	for step := 1; step <= 200; step++ {
		e.clk.Advance(time.Second)
		if step%30 == 0 {
			e.heartbeat(t, alive, "elsewhere")
		}
		n, err := mon.Tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			unreachableAfter = e.clk.Now().Sub(silentSince)
			if n != 1 {
				t.Errorf("tick marked %d hosts, want 1", n)
			}
			break
		}
		if got := e.hostStatus(t, silent.id); got != "online" {
			t.Fatalf("host %s after %v of silence, without the monitor saying so", got, e.clk.Now().Sub(silentSince))
		}
	}
	// "Older than 90 s": still online at exactly 90 s, unreachable at 91.
	if unreachableAfter != hostmon.DefaultTimeout+time.Second {
		t.Fatalf("host marked unreachable after %v of silence, want %v", unreachableAfter, hostmon.DefaultTimeout+time.Second)
	}
	if got := e.hostStatus(t, silent.id); got != "unreachable" {
		t.Fatalf("host status %s, want unreachable", got)
	}
	if got := e.hostStatus(t, alive.id); got != "online" {
		t.Errorf("heartbeating host %s, want online", got)
	}
	wantStates(t, e.states(t), map[string]string{
		"run-kept": "missing", "run-lost": "missing", "starting": "missing",
		"paused": "paused", "hibernated": "hibernated", "stopped": "stopped",
		"elsewhere": "running",
	})
	if n, err := mon.Tick(ctx); err != nil || n != 0 {
		t.Errorf("second pass marked %d (%v), want nothing", n, err)
	}
	if got := counter(t, reg, "wrenn_hosts_unreachable_total"); got != 1 {
		t.Errorf("wrenn_hosts_unreachable_total = %v, want 1", got)
	}
	if got := counter(t, reg, "wrenn_sandboxes_missing_total"); got != 3 {
		t.Errorf("wrenn_sandboxes_missing_total = %v, want 3", got)
	}

	// The host returns holding run-kept and its paused sandboxes.
	e.clk.Advance(5 * time.Minute)
	e.heartbeat(t, silent, "run-kept", "paused", "hibernated")
	e.heartbeat(t, alive, "elsewhere")
	if got := e.hostStatus(t, silent.id); got != "online" {
		t.Fatalf("host status %s after heartbeat, want online", got)
	}
	wantStates(t, e.states(t), map[string]string{
		"run-kept": "running", "run-lost": "stopped", "starting": "stopped",
		"paused": "paused", "hibernated": "hibernated", "stopped": "stopped",
		"elsewhere": "running",
	})
	if n, err := mon.Tick(ctx); err != nil || n != 0 {
		t.Errorf("pass right after the heartbeat marked %d (%v), want nothing", n, err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Replicas each run a monitor: concurrent passes mark a host once.
func TestConcurrentMonitorsMarkOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hosts := make([]agent, 3)
	for i := range hosts {
		hosts[i] = e.registerHost(t, "127.0.0.1:5005"+string(rune('1'+i)))
		e.addSandbox(t, "sb-"+hosts[i].id.String(), hosts[i].id, "running")
	}
	e.clk.Advance(hostmon.DefaultTimeout + time.Second)

	const replicas = 4
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range replicas {
		mon, err := hostmon.New(e.db, hostmon.Options{Clock: e.clk})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := mon.Tick(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != len(hosts) {
		t.Errorf("replicas marked %d hosts in all, want %d", total, len(hosts))
	}
	for _, h := range hosts {
		if got := e.hostStatus(t, h.id); got != "unreachable" {
			t.Errorf("host %s: %s", h.id, got)
		}
	}
	for id, s := range e.states(t) {
		if s != "missing" {
			t.Errorf("sandbox %s: %s, want missing", id, s)
		}
	}
}

// Run stops when its context ends.
func TestRunStops(t *testing.T) {
	e := newEnv(t)
	mon, err := hostmon.New(e.db, hostmon.Options{Clock: e.clk, Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h := e.registerHost(t, "127.0.0.1:50051")
	e.clk.Advance(hostmon.DefaultTimeout + time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		mon.Run(ctx)
	}()
	// Poll until the loop has done a pass, then stop it.
	for e.hostStatus(t, h.id) != "unreachable" {
		select {
		case <-done:
			t.Fatal("Run returned early")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
}

// A host that never comes back: its missing sandboxes are given up as
// stopped once it has been silent for LostAfter, and not before; paused
// ones keep their state (their files may come back with the host).
func TestLostHostSandboxesStop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mon, err := hostmon.New(e.db, hostmon.Options{Clock: e.clk, LostAfter: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	h := e.registerHost(t, "127.0.0.1:50051")
	e.heartbeat(t, h)
	e.addSandbox(t, "run", h.id, "running")
	e.addSandbox(t, "nap", h.id, "paused")

	e.clk.Advance(hostmon.DefaultTimeout + time.Second)
	if _, err := mon.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	wantStates(t, e.states(t), map[string]string{"run": "missing", "nap": "paused"})

	e.clk.Advance(10*time.Minute - hostmon.DefaultTimeout - 2*time.Second) // just under LostAfter
	if _, err := mon.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	wantStates(t, e.states(t), map[string]string{"run": "missing", "nap": "paused"})

	e.clk.Advance(2 * time.Second)
	if _, err := mon.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	wantStates(t, e.states(t), map[string]string{"run": "stopped", "nap": "paused"})
	var stoppedAt *time.Time
	var why string
	if err := e.db.QueryRow(ctx, "SELECT stopped_at, error FROM sandboxes WHERE id = 'run'").Scan(&stoppedAt, &why); err != nil {
		t.Fatal(err)
	}
	if stoppedAt == nil || why == "" {
		t.Errorf("given-up sandbox: stopped_at %v, error %q; want both set", stoppedAt, why)
	}
}

// A host that returns reports its sandboxes' states: one its agent paused
// while the host was away comes back paused, not running.
func TestReturningHostReportsStates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mon, err := hostmon.New(e.db, hostmon.Options{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	h := e.registerHost(t, "127.0.0.1:50051")
	e.heartbeat(t, h)
	for _, id := range []string{"napped", "ran", "died", "old-agent"} {
		e.addSandbox(t, id, h.id, "running")
	}
	e.clk.Advance(hostmon.DefaultTimeout + time.Second)
	if _, err := mon.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	wantStates(t, e.states(t), map[string]string{"napped": "missing", "ran": "missing", "died": "missing", "old-agent": "missing"})

	req := connect.NewRequest(&hostagentv1.HeartbeatRequest{
		SandboxIds: []string{"napped", "ran", "died", "old-agent"},
		SandboxStates: map[string]hostagentv1.SandboxState{
			"napped": hostagentv1.SandboxState_SANDBOX_STATE_PAUSED,
			"ran":    hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
			"died":   hostagentv1.SandboxState_SANDBOX_STATE_ERROR,
			// "old-agent": no state reported, as from an older agent.
		},
	})
	req.Header().Set("Authorization", "Bearer "+h.cred)
	if _, err := e.registry.Heartbeat(ctx, req); err != nil {
		t.Fatal(err)
	}
	wantStates(t, e.states(t), map[string]string{"napped": "paused", "ran": "running", "died": "error", "old-agent": "running"})
}
