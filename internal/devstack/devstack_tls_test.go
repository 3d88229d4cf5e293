package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/controlplane/servetls"
	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/pgcluster"
	"github.com/wrenn/wrenn/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// built holds wrenn-cp and wrenn-agent, built once for every test here.
var built struct {
	once sync.Once
	dir  string
	err  error
}

func buildOnce(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "wrenn-devstack-bin-"); built.err != nil {
			return
		}
		for _, c := range []string{"wrenn-cp", "wrenn-agent"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(built.dir, c), "./cmd/"+c)
			cmd.Dir = filepath.Join("..", "..")
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = fmt.Errorf("build %s: %v\n%s", c, err, out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// up builds wrenn-cp and wrenn-agent and starts a stack of its own (names,
// ranges, ports) under a fresh directory, closed when the test ends.
func up(t *testing.T, withTLS bool) (*devstack.Stack, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds wrenn-cp and wrenn-agent and starts PostgreSQL: not in -short")
	}
	testenv.RequireRoot(t)
	if _, err := pgcluster.BinDir(); err != nil {
		testenv.Missing(t, err.Error())
	}
	// Not t.TempDir: its parent is 0700, and PostgreSQL runs as postgres.
	root, err := os.MkdirTemp("", "wrenn-devstack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, dir := buildOnce(t), filepath.Join(root, "wrenn")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	st, err := devstack.Up(ctx, devstack.Config{
		Dir: dir, BinDir: bin, CPAddr: freeAddr(t), AgentAddr: freeAddr(t), PGPort: 5439, TLS: withTLS,
		Out:   &progress,
		CPEnv: []string{"WRENN_METRICS_ADDR=" + freeAddr(t)},
		AgentEnv: []string{"WRENN_AGENT_NAME=wtls", "WRENN_AGENT_HOST_CIDR=10.92.0.0/16", "WRENN_AGENT_VETH_CIDR=10.93.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + freeAddr(t), "WRENN_AGENT_VMM_UID_BASE=410000"},
	})
	if err != nil {
		t.Fatalf("up (TLS %v): %v\n%s", withTLS, err, progress.String())
	}
	t.Cleanup(func() {
		if err := st.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return st, dir
}

// The loopback stack make up runs stays plain HTTP, and its agent still
// registers with a pinned token (checked against the ca.crt it receives),
// without warnings.
func TestUpPlainHTTP(t *testing.T) {
	st, dir := up(t, false)
	if !strings.HasPrefix(st.URL, "http://") || st.HostID == "" || st.CACert != "" {
		t.Fatalf("stack URL %s host %q CA %q", st.URL, st.HostID, st.CACert)
	}
	agentLog, _ := os.ReadFile(filepath.Join(dir, "logs", "agent.log"))
	for _, w := range []string{"no CA fingerprint", "plain HTTP"} {
		if strings.Contains(string(agentLog), w) {
			t.Errorf("agent warned %q on the loopback stack:\n%s", w, agentLog)
		}
	}
	cpLog, _ := os.ReadFile(filepath.Join(dir, "logs", "cp.log"))
	if strings.Contains(string(cpLog), "PLAIN HTTP") || !strings.Contains(string(cpLog), "ca_cert_hash") {
		t.Errorf("control plane log: want the CA fingerprint and no plain-HTTP warning on loopback:\n%s", cpLog)
	}
}

// The one-box stack with WRENN_TLS=self-signed: the real wrenn-agent
// registers over HTTPS by the fingerprint its token carries and heartbeats
// by the CA it saved (Up returns only once the host is online); plain HTTP
// gets nothing; and a registration sent to an impostor with another CA in
// front of the same control plane is refused before the impostor sees a
// request.
func TestUpWithSelfSignedTLS(t *testing.T) {
	st, dir := up(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !strings.HasPrefix(st.URL, "https://") || st.HostID == "" {
		t.Fatalf("stack URL %s host %q", st.URL, st.HostID)
	}
	caPEM, err := os.ReadFile(st.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if err := capin.Check(caPEM, st.CACertHash); err != nil {
		t.Errorf("saved CA: %v", err)
	}
	agentLog, _ := os.ReadFile(filepath.Join(dir, "logs", "agent.log"))
	if strings.Contains(string(agentLog), "no CA fingerprint") || !strings.Contains(string(agentLog), "registered with the control plane") {
		t.Errorf("the agent did not register with a pinned token:\n%s", agentLog)
	}
	if saved, err := os.ReadFile(filepath.Join(dir, registration.CAFile)); err != nil || string(saved) != string(caPEM) {
		t.Errorf("agent's ca.crt differs from the control plane's CA (%v)", err)
	}
	if resp, err := http.Get("http://" + strings.TrimPrefix(st.URL, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200 on the HTTPS port")
		}
	}

	// An impostor with a CA of its own relays to the real control plane.
	other, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := servetls.Config(servetls.Options{Mode: servetls.ModeSelfSigned, Names: []string{"127.0.0.1"}}, other, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tlsCfg.GetCertificate(nil)
	tlsCfg.Certificates = append(tlsCfg.Certificates, *cert)
	target, _ := url.Parse(st.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	if proxy.Transport, err = capin.Transport(capin.Trust{CAPEM: caPEM}, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int64
	mitm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	mitm.TLS = tlsCfg
	mitm.EnableHTTP2 = true
	mitm.StartTLS()
	defer mitm.Close()

	var created struct {
		Token string `json:"registration_token"`
	}
	if err := callJSON(ctx, st, "/v1/hosts", map[string]string{"type": "byoc"}, &created); err != nil {
		t.Fatal(err)
	}
	_, err = registration.Start(ctx, registration.StartConfig{
		Store: registration.NewStore(t.TempDir()), Token: created.Token, Address: "127.0.0.1:1", CPURL: mitm.URL,
	})
	if !errors.Is(err, capin.ErrMismatch) {
		t.Errorf("registration through the impostor: %v, want capin.ErrMismatch", err)
	}
	if n := seen.Load(); n != 0 {
		t.Errorf("the impostor received %d requests", n)
	}
}

// callJSON POSTs body to the stack's API as its admin, trusting the CA the
// stack saved, and decodes a 201 answer into out.
func callJSON(ctx context.Context, st *devstack.Stack, path string, body, out any) error {
	caPEM, err := os.ReadFile(st.CACert)
	if err != nil {
		return err
	}
	hc, err := capin.Client(capin.Trust{CAPEM: caPEM}, st.URL, 30*time.Second)
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.URL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+st.Admin.APIKey)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, msg)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
