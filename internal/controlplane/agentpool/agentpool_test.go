package agentpool_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/agent/rpc"
	"github.com/wrenn/wrenn/internal/controlplane/agentpool"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/pgtest"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// fakeAgent answers GetHostStatus with its name and serves the guest proxy
// paths, recording who called.
type fakeAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	name string
}

func (a *fakeAgent) GetHostStatus(context.Context, *connect.Request[hostagentv1.GetHostStatusRequest]) (*connect.Response[hostagentv1.GetHostStatusResponse], error) {
	return connect.NewResponse(&hostagentv1.GetHostStatusResponse{Specs: &hostagentv1.HostSpecs{AgentVersion: a.name}}), nil
}

// startAgent serves a fake agent over mTLS the way wrenn-agent does: its
// certificate is issued by the CA for certHostID and certAddress, and it
// accepts only clients with a ClientAuth certificate from the CA.
func startAgent(t *testing.T, ca *hostreg.CA, name string, certHostID uuid.UUID, certAddress string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(&fakeAgent{name: name}))
	mux.HandleFunc("/sandboxes/{id}/envd/health", func(w http.ResponseWriter, r *http.Request) {
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		_, _ = io.WriteString(w, name+" "+r.Proto+" "+cn+" "+r.PathValue("id"))
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.TLS = &tls.Config{
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  ca.Pool(),
		MinVersion: tls.VersionTLS13,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	if certAddress == "" {
		certAddress = srv.Listener.Addr().String()
	}
	srv.TLS.Certificates = []tls.Certificate{hostCert(t, ca, certHostID, certAddress)}
	return srv
}

func hostCert(t *testing.T, ca *hostreg.CA, hostID uuid.UUID, address string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := hostreg.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignHost(csr, hostID, address, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}
}

type env struct {
	db     *pgxpool.Pool
	ca     *hostreg.CA
	pool   *agentpool.Pool
	teamID uuid.UUID
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.New(t)
	ca, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, ca: ca, pool: agentpool.New(db, hostreg.NewClientIdentity(ca, nil), nil)}
	t.Cleanup(e.pool.Close)
	if err := db.QueryRow(context.Background(), "INSERT INTO teams (name) VALUES ('t') RETURNING id").Scan(&e.teamID); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) addHost(t *testing.T, status, address string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	err := e.db.QueryRow(context.Background(),
		"INSERT INTO hosts (team_id, type, status, address) VALUES ($1, 'byoc', $2, $3) RETURNING id",
		e.teamID, status, address).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) setAddress(t *testing.T, id uuid.UUID, address string) {
	t.Helper()
	if _, err := e.db.Exec(context.Background(), "UPDATE hosts SET address = $2 WHERE id = $1", id, address); err != nil {
		t.Fatal(err)
	}
}

func agentName(ctx context.Context, p *agentpool.Pool, hostID uuid.UUID) (string, error) {
	c, err := p.RPC(ctx, hostID.String())
	if err != nil {
		return "", err
	}
	resp, err := c.GetHostStatus(ctx, connect.NewRequest(&hostagentv1.GetHostStatusRequest{}))
	if err != nil {
		return "", err
	}
	return resp.Msg.Specs.AgentVersion, nil
}

func TestReachesTheRightHost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.addHost(t, "online", "")
	srv := startAgent(t, e.ca, "agent-a", id, "")
	e.setAddress(t, id, srv.Listener.Addr().String())

	name, err := agentName(ctx, e.pool, id)
	if err != nil {
		t.Fatalf("RPC: %v", err)
	}
	if name != "agent-a" {
		t.Errorf("reached %q", name)
	}

	hc, base, err := e.pool.HTTP(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://" + srv.Listener.Addr().String(); base != want {
		t.Errorf("base URL %q, want %q", base, want)
	}
	resp, err := hc.Get(base + "/sandboxes/sb1/envd/health")
	if err != nil {
		t.Fatalf("guest proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(body), "agent-a HTTP/2.0 "+hostreg.ControlPlaneCN+" sb1"; got != want {
		t.Errorf("guest proxy answered %q, want %q", got, want)
	}

	// WebSocket upgrades (exec streams, PTYs) need HTTP/1.1: the same
	// client must fall back to it for them.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sandboxes/sb2/envd/health", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatalf("upgrade request: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(body), "agent-a HTTP/1.1 "+hostreg.ControlPlaneCN+" sb2"; got != want {
		t.Errorf("upgrade request answered %q, want %q", got, want)
	}

	again, _, _ := e.pool.HTTP(ctx, id.String())
	if again != hc {
		t.Error("client not reused for the same host and address")
	}
}

func TestRefusesAnotherHostsCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.addHost(t, "online", "")
	b := e.addHost(t, "online", "")
	srvA := startAgent(t, e.ca, "agent-a", a, "")
	// b's address leads to a's agent, whose certificate names a.
	e.setAddress(t, b, srvA.Listener.Addr().String())
	_, err := agentName(ctx, e.pool, b)
	if err == nil {
		t.Fatal("a's agent answered for b")
	}
	if !strings.Contains(err.Error(), "certificate is for host") {
		t.Errorf("error %v: want the certificate mismatch named", err)
	}

	// The right host id but a certificate for another address.
	c := e.addHost(t, "online", "")
	srvC := startAgent(t, e.ca, "agent-c", c, "127.0.0.2:1")
	e.setAddress(t, c, srvC.Listener.Addr().String())
	if _, err := agentName(ctx, e.pool, c); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("certificate for another address: %v, want a hostname verification error", err)
	}

	// A certificate from another CA.
	other, _ := hostreg.NewCA(time.Now())
	d := e.addHost(t, "online", "")
	srvD := startAgent(t, other, "agent-d", d, "")
	e.setAddress(t, d, srvD.Listener.Addr().String())
	if _, err := agentName(ctx, e.pool, d); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("certificate from another CA: %v, want unknown authority", err)
	}
}

func TestFollowsAddressChanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.addHost(t, "online", "")
	first := startAgent(t, e.ca, "first", id, "")
	second := startAgent(t, e.ca, "second", id, "")
	e.setAddress(t, id, first.Listener.Addr().String())
	if name, err := agentName(ctx, e.pool, id); err != nil || name != "first" {
		t.Fatalf("before move: %q %v", name, err)
	}
	e.setAddress(t, id, second.Listener.Addr().String())
	if name, err := agentName(ctx, e.pool, id); err != nil || name != "second" {
		t.Fatalf("after move: %q %v", name, err)
	}
}

func TestUnavailableHosts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"unreachable", e.addHost(t, "unreachable", "127.0.0.1:1").String(), errdefs.ErrUnavailable},
		{"pending", e.addHost(t, "pending", "").String(), errdefs.ErrUnavailable},
		{"deleted", e.addHost(t, "deleted", "127.0.0.1:1").String(), errdefs.ErrUnavailable},
		{"unknown", uuid.NewString(), errdefs.ErrUnavailable},
		{"not a uuid", "xyz", errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.pool.RPC(ctx, tc.id)
			if !errors.Is(err, tc.want) {
				t.Errorf("RPC: %v, want %v", err, tc.want)
			}
			_, _, err = e.pool.HTTP(ctx, tc.id)
			if !errors.Is(err, tc.want) {
				t.Errorf("HTTP: %v, want %v", err, tc.want)
			}
		})
	}
}

// certSource is the agent's view of its credentials (rpc.CertSource).
type certSource struct {
	cert tls.Certificate
	cas  *x509.CertPool
}

func (c certSource) Certificate() *tls.Certificate { return &c.cert }
func (c certSource) ClientCAs() *x509.CertPool     { return c.cas }

// The pool and the agent's real TLS listener (internal/agent/rpc) accept
// each other: the agent admits the control plane's client certificate and
// the pool the certificate the CA issued the agent.
func TestInteropWithAgentListener(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	id := e.addHost(t, "online", ln.Addr().String())
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(&fakeAgent{name: "real-tls"}))
	src := certSource{cert: hostCert(t, e.ca, id, ln.Addr().String()), cas: e.ca.Pool()}
	srv := rpc.NewServer(mux, rpc.ServerTLSConfig(src), slog.New(slog.DiscardHandler))
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })

	name, err := agentName(ctx, e.pool, id)
	if err != nil {
		t.Fatalf("RPC through the agent's TLS listener: %v", err)
	}
	if name != "real-tls" {
		t.Errorf("reached %q", name)
	}
}
