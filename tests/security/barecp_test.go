package security

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/tailfile"
)

// bareCP is a second wrenn-cp process with the defaults an operator gets
// when they set only what is required: the stack's devstack configuration
// (open signup on a loopback stack, and whatever else devstack sets for
// itself) does not apply to it. It shares the stack's database unless
// given another one, so tokens and keys made through the stack work on it.
type bareCP struct {
	URL string
	log string
}

// startBareCP starts wrenn-cp with DATABASE_URL, a JWT secret, loopback
// listen addresses and extra (KEY=VALUE), and nothing inherited from the
// test's environment or a .env file. It stops when t ends.
func startBareCP(t *testing.T, dsn string, extra ...string) *bareCP {
	t.Helper()
	stack(t)
	if dsn == "" {
		dsn = shared.dsn
	}
	dir := t.TempDir()
	addr := freeAddr()
	scheme := "http"
	for _, kv := range extra {
		if kv == "WRENN_TLS=self-signed" {
			scheme = "https"
		}
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WRENN_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"DATABASE_URL="+dsn,
		"WRENN_JWT_SECRET="+randHex(32),
		"WRENN_CP_LISTEN_ADDR="+addr,
		"WRENN_CP_URL="+scheme+"://"+addr,
		// The metrics listener's default port may be taken by the stack's
		// or a make up stack's control plane.
		"WRENN_METRICS_ADDR="+freeAddr(),
	)
	env = append(env, extra...)
	logPath := filepath.Join(dir, "cp.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(shared.bin, "wrenn-cp"))
	cmd.Env = env
	// Its own directory: no ./.env is read.
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start a second wrenn-cp: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	cp := &bareCP{URL: scheme + "://" + addr, log: logPath}
	// Only to see it is up: tests that care about its certificate check
	// it themselves.
	health := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := health.Get(cp.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cp
			}
		}
		select {
		case err := <-done:
			b, _ := tailfile.Read(logPath, 4096)
			t.Fatalf("second wrenn-cp exited: %v\n%s", err, b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := tailfile.Read(logPath, 4096)
			t.Fatalf("second wrenn-cp not healthy within a minute:\n%s", b)
		}
	}
}

// freshDatabase creates an empty database in the stack's cluster and
// returns its DSN: an installation nobody has signed up to yet.
func freshDatabase(t *testing.T) string {
	t.Helper()
	name := "fresh_" + randHex(4)
	withDB(t, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatalf("create database %s: %v", name, err)
		}
	})
	// Registered before the caller starts a control plane on it, so it
	// runs after that one stopped.
	t.Cleanup(func() {
		withDB(t, func(ctx context.Context, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Logf("drop database %s: %v", name, err)
			}
		})
	})
	return strings.Replace(shared.dsn, "/wrenn?", fmt.Sprintf("/%s?", name), 1)
}
