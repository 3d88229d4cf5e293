package rpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/agent/rpc"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// fakeManager stands in for *agent.Manager: sandboxes in a map, every call
// recorded, and an error to return per method when set.
type fakeManager struct {
	mu        sync.Mutex
	sandboxes map[string]agent.Info
	templates []agent.Template
	console   []byte
	metrics   agent.Metrics
	history   []agent.MetricsSample
	// errs makes a method fail: by method name.
	errs map[string]error
	// calls records "Method id args..." in order.
	calls   []string
	touches map[string]int
	// last arguments worth checking
	lastCreate  agent.CreateRequest
	lastTimeout struct {
		d  time.Duration
		on agent.OnTimeout
	}
	lastPolicy network.Policy
	lastTail   int64
	lastRange  [2]time.Time
	// teams is the team the last call of each *As method carried.
	teams map[string]string
	// runs are the RunDone channels, closed by Destroy and stopRunning.
	runs map[string]chan struct{}
}

var _ rpc.Manager = (*fakeManager)(nil)

func newFakeManager() *fakeManager {
	return &fakeManager{sandboxes: map[string]agent.Info{}, errs: map[string]error{}, touches: map[string]int{}, teams: map[string]string{},
		runs: map[string]chan struct{}{}}
}

func (f *fakeManager) add(in agent.Info) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes[in.ID] = in
}

func (f *fakeManager) fail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[method] = err
}

func (f *fakeManager) touchCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.touches[id]
}

func (f *fakeManager) record(method, id string) error {
	f.calls = append(f.calls, method+" "+id)
	if err := f.errs[method]; err != nil {
		return err
	}
	return nil
}

func notFound(id string) error { return errdefs.New(errdefs.ErrNotFound, "sandbox %s not found", id) }

func (f *fakeManager) lookup(method, id string) (agent.Info, error) {
	if err := f.record(method, id); err != nil {
		return agent.Info{}, err
	}
	in, ok := f.sandboxes[id]
	if !ok {
		return agent.Info{}, notFound(id)
	}
	return in, nil
}

func (f *fakeManager) Create(_ context.Context, req agent.CreateRequest) (agent.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastCreate = req
	if err := f.record("Create", req.ID); err != nil {
		return agent.Info{}, err
	}
	if _, ok := f.sandboxes[req.ID]; ok {
		return agent.Info{}, errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s already exists", req.ID)
	}
	in := agent.Info{
		ID: req.ID, Template: req.Template, State: state.Running, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
		DiskMB: req.DiskMB, Metadata: req.Metadata, Network: req.Network, Timeout: req.Timeout,
		OnTimeout: req.OnTimeout, CreatedAt: time.UnixMilli(1_700_000_000_000), KernelVersion: "6.1.0",
		Address: "127.0.0.1", AccessToken: "token-" + req.ID,
	}
	f.sandboxes[req.ID] = in
	return in, nil
}

func (f *fakeManager) Get(_ context.Context, id string) (agent.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookup("Get", id)
}

func (f *fakeManager) List(context.Context) ([]agent.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("List", ""); err != nil {
		return nil, err
	}
	out := slices.Collect(maps.Values(f.sandboxes))
	slices.SortFunc(out, func(a, b agent.Info) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (f *fakeManager) simple(method, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.lookup(method, id)
	return err
}

func (f *fakeManager) Destroy(_ context.Context, id string) error {
	if err := f.simple("Destroy", id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, id)
	f.stopRunningLocked(id)
	return nil
}

// RunDone is closed by Destroy, as the manager's is when the sandbox
// stops running.
func (f *fakeManager) RunDone(id string) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; !ok {
		return nil, notFound(id)
	}
	ch, ok := f.runs[id]
	if !ok {
		ch = make(chan struct{})
		f.runs[id] = ch
	}
	return ch, nil
}

func (f *fakeManager) stopRunningLocked(id string) {
	if ch, ok := f.runs[id]; ok {
		close(ch)
		delete(f.runs, id)
	}
}

func (f *fakeManager) Pause(_ context.Context, id string) error { return f.simple("Pause", id) }
func (f *fakeManager) PauseDropMemory(_ context.Context, id string) error {
	return f.simple("PauseDropMemory", id)
}
func (f *fakeManager) Hibernate(_ context.Context, id string) error { return f.simple("Hibernate", id) }

func (f *fakeManager) ResumeAs(_ context.Context, team, id string) error {
	f.setTeam("Resume", team)
	return f.simple("Resume", id)
}

func (f *fakeManager) setTeam(method, team string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teams[method] = team
}

func (f *fakeManager) team(method string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.teams[method]
}

func (f *fakeManager) ForkAs(ctx context.Context, team, id string, n int) ([]agent.Info, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = id + "-fork" + string(rune('a'+i))
	}
	return f.ForkNamed(ctx, team, id, ids)
}

func (f *fakeManager) ForkNamed(_ context.Context, team, id string, ids []string) ([]agent.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teams["Fork"] = team
	src, err := f.lookup("Fork", id)
	if err != nil {
		return nil, err
	}
	var out []agent.Info
	for _, fid := range ids {
		in := src
		in.ID = fid
		in.AccessToken = "token-" + in.ID
		f.sandboxes[in.ID] = in
		out = append(out, in)
	}
	return out, nil
}

func (f *fakeManager) SetTimeout(_ context.Context, id string, d time.Duration, on agent.OnTimeout) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastTimeout.d, f.lastTimeout.on = d, on
	_, err := f.lookup("SetTimeout", id)
	return err
}

func (f *fakeManager) SetNetwork(_ context.Context, id string, pol network.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastPolicy = pol
	_, err := f.lookup("SetNetwork", id)
	return err
}

func (f *fakeManager) Metrics(_ context.Context, id string) (agent.Metrics, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup("Metrics", id); err != nil {
		return agent.Metrics{}, err
	}
	return f.metrics, nil
}

func (f *fakeManager) MetricsHistory(id string, from, to time.Time) ([]agent.MetricsSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastRange = [2]time.Time{from, to}
	if _, err := f.lookup("MetricsHistory", id); err != nil {
		return nil, err
	}
	return f.history, nil
}

func (f *fakeManager) ConsoleLog(_ context.Context, id string, n int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastTail = n
	if _, err := f.lookup("ConsoleLog", id); err != nil {
		return nil, err
	}
	return f.console, nil
}

func (f *fakeManager) SnapshotTemplateAs(_ context.Context, team, id, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teams["SnapshotTemplate"] = team
	if _, err := f.lookup("SnapshotTemplate", id); err != nil {
		return err
	}
	f.templates = append(f.templates, agent.Template{Name: name, Snapshot: true, DiskBytes: 4096})
	return nil
}

func (f *fakeManager) DeleteTemplateAs(_ context.Context, team, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teams["DeleteTemplate"] = team
	if err := f.record("DeleteTemplate", name); err != nil {
		return err
	}
	i := slices.IndexFunc(f.templates, func(t agent.Template) bool { return t.Name == name })
	if i < 0 {
		return errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
	}
	f.templates = slices.Delete(f.templates, i, i+1)
	return nil
}

func (f *fakeManager) Templates(context.Context) ([]agent.Template, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Templates", ""); err != nil {
		return nil, err
	}
	return slices.Clone(f.templates), nil
}

func (f *fakeManager) Touch(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; !ok {
		return notFound(id)
	}
	f.touches[id]++
	return nil
}

// staticCerts is a CertSource that never changes.
type staticCerts struct {
	cert *tls.Certificate
	pool *x509.CertPool
}

func (s staticCerts) Certificate() *tls.Certificate { return s.cert }
func (s staticCerts) ClientCAs() *x509.CertPool     { return s.pool }

// agentServer is the agent's handler served the way the daemon serves it.
type agentServer struct {
	url      string
	ca       *cptest.CA
	m        *fakeManager
	registry *prometheus.Registry
	// client presents the control plane's certificate.
	client *http.Client
	rpc    hostagentv1connect.HostAgentServiceClient
}

type serverOpts struct {
	envdPort int
	host     rpc.HostStatus
}

// startAgent serves rpc.NewHandler over m on a loopback TLS listener.
func startAgent(t *testing.T, m *fakeManager, o serverOpts) *agentServer {
	t.Helper()
	ca := cptest.NewCA(t, "test CA")
	certPEM, keyPEM := ca.ServerCert(t, "host-1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := rpc.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := rpc.NewHandler(rpc.Config{Manager: m, Host: o.host, Logger: log, Metrics: metrics, EnvdPort: o.envdPort})
	srv := rpc.NewServer(h, rpc.ServerTLSConfig(staticCerts{cert: &cert, pool: ca.Pool()}), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(t, rpc.ControlPlaneCN), ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	url := "https://" + ln.Addr().String()
	return &agentServer{
		url: url, ca: ca, m: m, registry: reg, client: client,
		rpc: hostagentv1connect.NewHostAgentServiceClient(client, url),
	}
}

// collector is a hostinfo.Collector over the fake manager with a fake /proc.
func collector(t *testing.T, m *fakeManager) *hostinfo.Collector {
	t.Helper()
	proc := t.TempDir()
	writeFile(t, proc+"/meminfo", "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:    8000000 kB\n")
	writeFile(t, proc+"/loadavg", "0.42 0.30 0.20 1/300 12345\n")
	return hostinfo.New(hostinfo.Config{Dir: t.TempDir(), VMM: "qemu", Accelerator: "tcg", Sandboxes: m, ProcDir: proc})
}

// read runs fn under the fake's lock: the server's goroutines write what
// tests read.
func read[T any](f *fakeManager, fn func() T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn()
}
