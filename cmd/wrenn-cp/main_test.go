package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/controlplane/config"
	"github.com/wrenn/wrenn/internal/pgtest"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// run wires the daemon: the API answers over HTTP/1.1, the host registry
// over h2c, and cancelling the context shuts it down cleanly.
func TestRunServesAndStops(t *testing.T) {
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir()) // no ./.env
	var logs bytes.Buffer
	d := startDaemon(t, dsn, newTestLogger(&logs), "--listen", "127.0.0.1:0")
	base := "http://" + d.addr

	resp, err := http.Get(base + "/v1/hosts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/hosts without credentials: %d, want 401", resp.StatusCode)
	}

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	reg := hostagentv1connect.NewHostRegistryServiceClient(h2c, base)
	hb := connect.NewRequest(&hostagentv1.HeartbeatRequest{})
	hb.Header().Set("Authorization", "Bearer wrh_"+strings.Repeat("0", 64))
	_, err = reg.Heartbeat(context.Background(), hb)
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("heartbeat with an unknown credential over h2c: %v, want unauthenticated", err)
	}

	d.stop(t)
	if !bytes.Contains(logs.Bytes(), []byte("wrenn-cp shutting down")) {
		t.Errorf("no shutdown log:\n%s", logs.String())
	}
	if bytes.Contains(logs.Bytes(), []byte("0123456789abcdef0123456789abcdef")) {
		t.Error("the JWT secret was logged")
	}
}

// lockedBuffer is a bytes.Buffer the daemon's goroutines can log to.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func newTestLogger(b *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(&lockedBuffer{b: b}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// daemon is run in a goroutine, for a test.
type daemon struct {
	cfg    config.Config
	addr   string // where the API listens
	cancel context.CancelFunc
	done   chan error
}

// startDaemon parses args against the database at dsn (with a test session
// secret), runs wrenn-cp logging to log, and returns once it serves.
func startDaemon(t *testing.T, dsn string, log *slog.Logger, args ...string) *daemon {
	t.Helper()
	cfg, err := config.Parse(args,
		[]string{"DATABASE_URL=" + dsn, "WRENN_JWT_SECRET=0123456789abcdef0123456789abcdef"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := &daemon{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() { d.done <- run(ctx, cfg, log, func(a string) { addr <- a }) }()
	select {
	case d.addr = <-addr:
	case err := <-d.done:
		t.Fatalf("run returned before serving: %v", err)
	}
	return d
}

// stop cancels the daemon and fails t unless run returns cleanly within a
// minute.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return after cancel")
	}
}
