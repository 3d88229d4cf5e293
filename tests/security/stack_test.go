// Package security is issue 11's attacker's-eye test suite. It drives a
// whole single-node Wrenn (a private PostgreSQL, the real wrenn-cp and
// wrenn-agent binaries built by the test, real microVMs) through its public
// HTTP API as two tenant teams (A and B, each with users and API keys), an
// unauthenticated caller and the platform admin, and checks each hole of
// the issue the way an attacker would try it. Where the loopback stack's
// own configuration hides a default (open signup, private host addresses),
// a second wrenn-cp process is started against the same database without
// it.
//
// One stack serves the whole package (TestMain stops it); team A owns one
// long-lived sandbox and a snapshot template made from it, so at most two
// or three VMs run at once.
//
// The tests need root, QEMU and the images (make images): without them they
// skip and say why, or fail under WRENN_TEST_REQUIRE_VM=1. docs/security.md
// says what each test covers.
package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/pgcluster"
	"github.com/wrenn/wrenn/internal/testenv"
)

// pgPort names the private cluster's socket; tests/e2e uses 5433 (in its
// own directory, so only a readable choice, not a collision).
const pgPort = 5434

var shared struct {
	once sync.Once
	st   *devstack.Stack
	bin  string
	dir  string
	dsn  string
	// metricsAddr is the stack's control plane's WRENN_METRICS_ADDR.
	metricsAddr string
	err         error
	close       func()
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
	if testing.Short() {
		t.Skip("-short: the security suite boots a whole stack with VMs")
	}
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
	ws, err := stacktest.New(ctx, images, "wrenn-security-", "wrenn-cp", "wrenn-agent")
	if err != nil {
		return err
	}
	root, dir := ws.Root, ws.Dir
	shared.dir, shared.bin = root, ws.Bin
	fmt.Fprintf(os.Stderr, "security: built binaries in %s\n", ws.BuildTime.Round(time.Millisecond))

	shared.metricsAddr = freeAddr()
	cfg := devstack.Config{
		Dir:       dir,
		BinDir:    ws.Bin,
		CPAddr:    freeAddr(),
		AgentAddr: freeAddr(),
		PGPort:    pgPort,
		Out:       os.Stderr,
		// The metrics listener gets its own port: the default one may be
		// taken by a make up stack on this machine. The tenants sign up,
		// so signup is open here (TestHole3SignupClosedByDefault checks
		// the default on a control plane of its own).
		CPEnv: []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + shared.metricsAddr,
			"WRENN_SIGNUP=open"},
		// Its own names, ranges and ports: tests/e2e's stack (we2e,
		// 10.90-91, uids from 400000), a make up stack or a benchmark may
		// be on the same machine. The name is fixed, as tests/e2e's is: the
		// agent leaves host-wide state named after it (nftables table,
		// cgroup parent, guest-memory tmpfs) for its successor to adopt,
		// and a name per run left one of each behind every run.
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=wsec",
			"WRENN_AGENT_HOST_CIDR=10.100.0.0/16", "WRENN_AGENT_VETH_CIDR=10.101.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + freeAddr(), "WRENN_AGENT_VMM_UID_BASE=410000"},
	}
	st, err := devstack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	shared.st = st
	shared.dsn = (&pgcluster.Cluster{Dir: filepath.Join(dir, "pg"), Port: pgPort}).DSN("wrenn")
	shared.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// Every team's sandboxes, not just the admin's: the tenants made
		// the VMs.
		if n, err := destroyAllSandboxes(ctx); err != nil || n > 0 {
			fmt.Fprintf(os.Stderr, "security: destroyed %d leftover sandboxes (err %v)\n", n, err)
		}
		if err := st.Close(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "security: stop stack: %v\n", err)
		}
		if os.Getenv("WRENN_SECURITY_KEEP") == "" {
			os.RemoveAll(root)
		} else {
			fmt.Fprintf(os.Stderr, "security: kept %s\n", root)
		}
	}
	return nil
}

// destroyAllSandboxes deletes the live sandboxes of every tenant the
// suite made (their keys are in the world fixture) and the admin's.
func destroyAllSandboxes(ctx context.Context) (int, error) {
	creds := []string{}
	if w.ready {
		creds = append(creds, w.a.key, w.b.key)
	}
	n, err := shared.st.DestroySandboxes(ctx)
	for _, cred := range creds {
		var list struct {
			Sandboxes []struct {
				ID string `json:"id"`
			} `json:"sandboxes"`
		}
		c := client{base: shared.st.URL, cred: cred}
		resp, e := c.raw(ctx, "GET", "/v1/sandboxes?limit=1000", nil, nil)
		if e != nil {
			err = e
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if json.Unmarshal(b, &list) != nil {
			continue
		}
		for _, sb := range list.Sandboxes {
			if resp, e := c.raw(ctx, "DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); e == nil {
				resp.Body.Close()
				n++
			}
		}
	}
	return n, err
}

// repoRoot is the checkout's top directory.
func repoRoot() string {
	root, err := stacktest.RepoRoot()
	if err != nil {
		panic(err)
	}
	return root
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() string { return stacktest.FreeAddr() }

// client is a tiny REST client: base URL and one credential (an API key or
// a session token; empty: unauthenticated), and optionally the team a
// session acts for.
type client struct {
	base string
	cred string
	team string
}

// raw sends body (nil, []byte sent as JSON, io.Reader sent as octet
// stream, or a value marshalled to JSON) with extra headers.
func (c client) raw(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		r, ct = bytes.NewReader(b), "application/json"
	case io.Reader:
		r, ct = b, "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.cred != "" {
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	if c.team != "" {
		req.Header.Set("X-Wrenn-Team", c.team)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return http.DefaultClient.Do(req)
}

// reply is a response read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// errorCode and errorMessage read the API's {"error":{"code","message"}}.
// errorCode is the machine-readable code of an error reply: /v1's
// {"error":{"code"}} or, on the E2B-compatible routes, {"code": <status>,
// "error_code"} (whose numeric code must then be the status).
func (r reply) errorCode() string {
	var e struct {
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
		Status    any    `json:"code"`
		ErrorCode string `json:"error_code"`
	}
	if json.Unmarshal(r.body, &e) != nil {
		return ""
	}
	if e.Error != nil {
		return e.Error.Code
	}
	if n, ok := e.Status.(float64); ok && int(n) == r.status {
		return e.ErrorCode
	}
	return ""
}

func (r reply) errorMessage() string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(r.body, &e)
	if e.Error.Message == "" {
		return e.Message
	}
	return e.Error.Message
}

func (r reply) String() string {
	b := strings.TrimSpace(string(r.body))
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// do sends a request and reads the whole reply; a transport error fails t.
func (c client) do(t *testing.T, method, path string, body any) reply {
	t.Helper()
	return c.doHeader(t, method, path, body, nil)
}

func (c client) doHeader(t *testing.T, method, path string, body any, hdr http.Header) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := c.raw(ctx, method, path, body, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// json does a request, checks the status and decodes the body into out.
func (c client) json(t *testing.T, method, path string, body any, want int, out any) reply {
	t.Helper()
	r := c.do(t, method, path, body)
	if r.status != want {
		t.Fatalf("%s %s: got %s, want %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, r.body, err)
		}
	}
	return r
}

// wantError checks a reply's status and error code.
func wantError(t *testing.T, what string, r reply, status int, code string) {
	t.Helper()
	if r.status != status || r.errorCode() != code {
		t.Errorf("%s: got %s, want %d %s", what, r, status, code)
	}
}
