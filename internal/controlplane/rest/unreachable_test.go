package rest

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// deadAgents reaches every host at an address where nothing listens, as
// the agent pool does for a host whose address is a tenant's choice.
type deadAgents struct{ addr string }

func (d deadAgents) RPC(context.Context, string) (hostagentv1connect.HostAgentServiceClient, error) {
	return hostagentv1connect.NewHostAgentServiceClient(http.DefaultClient, "http://"+d.addr), nil
}

func (d deadAgents) HTTP(context.Context, string) (*http.Client, string, error) {
	return http.DefaultClient, "http://" + d.addr, nil
}

// TestAgentDialErrorsNotEchoed is issue 11 hole 6: the control plane
// answered a tenant with its own dial error ("dial tcp 10.0.0.5:50051:
// connect: connection refused"), which turns it into a port scanner of
// whatever address the tenant's byoc host registered with. Tenants get
// "host unreachable"; the error is logged.
func TestAgentDialErrorsNotEchoed(t *testing.T) {
	// A port that was just free: connecting is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := newTestEnv(t, func(d *Deps) { d.Agents = deadAgents{addr: addr} })
	a := env.newTeam(t, "a")
	ctx := context.Background()
	var host uuid.UUID
	if err := env.Pool.QueryRow(ctx, `INSERT INTO hosts (team_id, type, status, address) VALUES ($1, 'byoc', 'online', $2) RETURNING id`,
		a.ID, addr).Scan(&host); err != nil {
		t.Fatal(err)
	}
	env.addSandboxRow(t, a, host, "sb-dead", "running")

	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/sandboxes/sb-dead/metrics"},
		{"POST", "/v1/sandboxes/sb-dead/pause"},
	} {
		resp := env.do(t, c.method, c.path, a.Key, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 500 {
			t.Errorf("%s %s: %d %s, want a 5xx", c.method, c.path, resp.StatusCode, body)
		}
		_, port, _ := net.SplitHostPort(addr)
		for _, leak := range []string{port, "dial", "refused", "127.0.0.1"} {
			if strings.Contains(string(body), leak) {
				t.Errorf("%s %s answer names %q: %s", c.method, c.path, leak, body)
			}
		}
		if !strings.Contains(string(body), "host unreachable") && !strings.Contains(string(body), "internal error") {
			t.Errorf("%s %s: %s, want host unreachable", c.method, c.path, body)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", c.method, c.path)
		}
	}
}
