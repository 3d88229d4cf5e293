package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/agent/rpc"
	"github.com/wrenn/wrenn/internal/testenv"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// poll retries f until it succeeds or ctx ends.
func poll(ctx context.Context, t *testing.T, what string, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// daemon runs the agent's run() with args until stop is called.
func daemon(t *testing.T, args []string) (stop func() error) {
	t.Helper()
	cfg, err := agent.ParseDaemonConfig(args, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestDaemon runs the wiring of main: register, serve the control plane
// over mTLS, heartbeat, serve /metrics, shut down gracefully, start again
// from the saved credentials, and let go when the control plane deletes
// the host. It boots no guest.
func TestDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cp := cptest.NewRegistry(t)
	cpURL := cp.Serve(t)
	// WRENN_DIR must be short (socket paths) and searchable by VMM users.
	dir, err := os.MkdirTemp("/tmp", "wrenn-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	listen, metrics := freeAddr(t), freeAddr(t)
	base := []string{"--dir", dir, "--vmm", "qemu", "--listen", listen, "--metrics-listen", metrics, "--heartbeat-interval", "1s"}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cp.CA.ClientTLS(t, rpc.ControlPlaneCN), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	client := hostagentv1connect.NewHostAgentServiceClient(hc, "https://"+listen)
	status := func() error {
		_, err := client.GetHostStatus(ctx, connect.NewRequest(&hostagentv1.GetHostStatusRequest{}))
		return err
	}

	stop := daemon(t, append(base, "--register", cp.NewRegistrationToken(), "--address", listen, "--cp-url", cpURL))
	poll(ctx, t, "serve the control plane", status)
	creds, err := registration.NewStore(dir).Load()
	if err != nil {
		t.Fatalf("saved credentials: %v", err)
	}
	poll(ctx, t, "first heartbeat", func() error {
		if h, _ := cp.Host(creds.HostID); len(h.Heartbeats) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	res, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`wrenn_agent_sandboxes{state="running"} 0`, `wrenn_agent_rpc_requests_total{code="ok",method="GetHostStatus"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if status() == nil {
		t.Fatal("still serving after shutdown")
	}

	// A later start needs no registration flags.
	daemon(t, base)
	poll(ctx, t, "serve again from the saved credentials", status)
	beats := func() int { h, _ := cp.Host(creds.HostID); return len(h.Heartbeats) }
	before := beats()
	poll(ctx, t, "heartbeat again", func() error {
		if beats() == before {
			return errors.New("no new heartbeat")
		}
		return nil
	})

	cp.Delete(creds.HostID)
	poll(ctx, t, "let go of the deleted host", func() error {
		if _, err := os.Stat(filepath.Join(dir, registration.TokenFile)); err == nil {
			return errors.New("host-token still there")
		}
		if status() == nil {
			return errors.New("still serving")
		}
		return nil
	})
}
