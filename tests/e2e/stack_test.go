// Package e2e runs user journeys against a whole single-node Wrenn: a
// private PostgreSQL, the real wrenn-cp and wrenn-agent binaries (built by
// the test), and real microVMs (TCG here). One stack, in a temporary
// WRENN_DIR that shares the built guest images, serves every test of the
// package; it starts on first use and stops when the package ends.
//
// The tests need root, QEMU and the images (make images): without them they
// skip and say why, or fail under WRENN_TEST_REQUIRE_VM=1.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/testenv"
)

var shared struct {
	once  sync.Once
	st    *devstack.Stack
	cfg   devstack.Config
	bin   string
	dir   string
	err   error
	close func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.close != nil {
		shared.close()
	}
	os.Exit(code)
}

// stack returns the package's running stack, starting it on first use.
func stack(t *testing.T) *devstack.Stack {
	t.Helper()
	images := testenv.RequireVM(t)
	shared.once.Do(func() { shared.err = startStack(images) })
	if shared.err != nil {
		t.Fatalf("start stack: %v", shared.err)
	}
	return shared.st
}

func startStack(images testenv.Images) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ws, err := stacktest.New(ctx, images, "wrenn-e2e-", "wrenn-cp", "wrenn-agent", "wrenn")
	if err != nil {
		return err
	}
	root, dir := ws.Root, ws.Dir
	shared.dir, shared.bin = root, ws.Bin
	fmt.Fprintf(os.Stderr, "e2e: built binaries in %s\n", ws.BuildTime.Round(time.Millisecond))

	shared.cfg = devstack.Config{
		Dir:       dir,
		BinDir:    ws.Bin,
		CPAddr:    freeAddr(),
		AgentAddr: freeAddr(),
		PGPort:    5433,
		Out:       os.Stderr,
		CPEnv:     []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + freeAddr()},
		// Its own names, ranges and ports: a real agent (make up) or a
		// benchmark stack may run on the same machine.
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=we2e", "WRENN_AGENT_REAPER_INTERVAL=1s",
			"WRENN_AGENT_HOST_CIDR=10.90.0.0/16", "WRENN_AGENT_VETH_CIDR=10.91.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + freeAddr(), "WRENN_AGENT_VMM_UID_BASE=400000"},
	}
	st, err := devstack.Up(ctx, shared.cfg)
	if err != nil {
		return err
	}
	shared.st = st
	shared.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		st := shared.st
		if st == nil {
			return
		}
		if n, err := st.DestroySandboxes(ctx); err != nil || n > 0 {
			fmt.Fprintf(os.Stderr, "e2e: destroyed %d leftover sandboxes (err %v)\n", n, err)
		}
		if err := st.Close(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stop stack: %v\n", err)
		}
		if os.Getenv("WRENN_E2E_KEEP") == "" {
			os.RemoveAll(root)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: kept %s\n", root)
		}
	}
	return nil
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() string { return stacktest.FreeAddr() }

// client is a tiny REST client for the journeys that exercise the raw API.
type client struct {
	base string
	cred string
}

func (c client) do(t *testing.T, method, path string, body any) *http.Response {
	t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r, ct = b, "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.cred != "" {
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// json does a request, checks the status and decodes the body into out.
func (c client) json(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	resp := c.do(t, method, path, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
}
