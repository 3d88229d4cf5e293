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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
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
	root, err := os.MkdirTemp("", "wrenn-e2e-")
	if err != nil {
		return err
	}
	// PostgreSQL (as postgres) and the VMMs (their own uids) pass through.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	shared.dir = root
	bin := filepath.Join(root, "bin")
	dir := filepath.Join(root, "wrenn")
	for _, d := range []string{bin, filepath.Join(dir, "images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Kernels and the base image are shared read-only with the machine's
	// WRENN_DIR; templates the tests make stay in the temporary one.
	for link, target := range map[string]string{
		filepath.Join(dir, "kernels"):           filepath.Join(images.Dir, "kernels"),
		filepath.Join(dir, "images", "minimal"): filepath.Dir(images.Rootfs),
	} {
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	start := time.Now()
	for _, c := range []string{"wrenn-cp", "wrenn-agent", "wrenn"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, c), "./cmd/"+c)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", c, err, out)
		}
	}
	shared.bin = bin
	fmt.Fprintf(os.Stderr, "e2e: built binaries in %s\n", time.Since(start).Round(time.Millisecond))

	shared.cfg = devstack.Config{
		Dir:       dir,
		BinDir:    bin,
		CPAddr:    freeAddr(),
		AgentAddr: freeAddr(),
		PGPort:    5433,
		Out:       os.Stderr,
		CPEnv:     []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + freeAddr()},
		// Its own names, ranges and ports: a real agent (make up) or a
		// benchmark stack may run on the same machine.
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=we2e",
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

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

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
