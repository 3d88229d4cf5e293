package hostreg_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/wrenn/wrenn/internal/clocktest"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/pgtest"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// fakeClock moves only when the test says so.
type fakeClock = clocktest.Clock

// logRecorder keeps every log record's message and attributes.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// attr returns the value of key in the first record with message msg.
func (l *logRecorder) attr(msg, key string) (slog.Value, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Message != msg {
			continue
		}
		var v slog.Value
		found := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v, found = a.Value, true
				return false
			}
			return true
		})
		return v, found
	}
	return slog.Value{}, false
}

type env struct {
	pool   *pgxpool.Pool
	q      *store.Queries
	clk    *fakeClock
	ca     *hostreg.CA
	logs   *logRecorder
	client hostagentv1connect.HostRegistryServiceClient
	teamID uuid.UUID
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.New(t)
	q := store.New(pool)
	clk := clocktest.New(time.Now().Truncate(time.Millisecond))
	ca, err := hostreg.LoadOrCreateCA(ctx, q, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	svc := hostreg.New(pool, ca, clk, slog.New(logs))
	path, h := svc.Handler()
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &env{pool: pool, q: q, clk: clk, ca: ca, logs: logs,
		client: hostagentv1connect.NewHostRegistryServiceClient(srv.Client(), srv.URL)}
	if err := pool.QueryRow(ctx, "INSERT INTO teams (name) VALUES ('t') RETURNING id").Scan(&e.teamID); err != nil {
		t.Fatal(err)
	}
	return e
}

// newHost adds a pending host and returns it with its registration token.
func (e *env) newHost(t *testing.T) (uuid.UUID, string) {
	t.Helper()
	tok, hash := hostreg.NewRegistrationToken()
	exp := e.clk.Now().Add(hostreg.RegistrationTokenTTL)
	h, err := e.q.CreateHost(context.Background(), store.CreateHostParams{
		TeamID: e.teamID, Type: "byoc", RegistrationTokenHash: hash, RegistrationExpiresAt: exp,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h.ID, tok
}

func newCSR(t *testing.T) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "ignored"}, DNSNames: []string{"evil.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func specs() *hostagentv1.HostSpecs {
	return &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 8, MemoryBytes: 16 << 30, DiskBytes: 100 << 30,
		Vmm: "qemu", Accelerator: "kvm", KernelVersion: "6.1.0", AgentVersion: "test", Images: []string{"minimal"}}
}

func (e *env) register(t *testing.T, tok, address string) *hostagentv1.RegisterResponse {
	t.Helper()
	csr, _ := newCSR(t)
	resp, err := e.client.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: tok, Address: address, Specs: specs(), CsrPem: csr,
	}))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return resp.Msg
}

func (e *env) heartbeat(cred string, m *hostagentv1.HeartbeatRequest) (*hostagentv1.HeartbeatResponse, error) {
	req := connect.NewRequest(m)
	req.Header().Set("Authorization", "Bearer "+cred)
	resp, err := e.client.Heartbeat(context.Background(), req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got %v (%v), want %v", got, err, code)
	}
}

func (e *env) hostStatus(t *testing.T, id uuid.UUID) string {
	t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), "SELECT status FROM hosts WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// addSandbox inserts a sandbox row on host in state, created at created.
func (e *env) addSandbox(t *testing.T, id string, host uuid.UUID, state string, created time.Time) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(), `INSERT INTO sandboxes
		(id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, created_at)
		VALUES ($1, $2, $3, 'minimal', $4, 1, 512, 1024, 300, 'kill', $5)`, id, e.teamID, host, state, created)
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) sandboxState(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), "SELECT state FROM sandboxes WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
