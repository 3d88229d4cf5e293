package agentpool_test

// A hostile agent: a BYOC host is a tenant's machine and may run anything
// as its agent. Its replies must not grow the control plane: an endless
// reply, a gigantic list and huge headers end in an error after about the
// cap. The fake agent stops by itself past hostileCeiling, so a pool
// without limits fails these tests instead of exhausting the machine.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn/wrenn/internal/controlplane/agentpool"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

const hostileCeiling = 256 << 20

// startHostileAgent serves h over the agent's mTLS for a new online host
// and returns the host id.
func startHostileAgent(t *testing.T, e *env, h http.Handler) uuid.UUID {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.ca.Pool(), MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	id := e.addHost(t, "online", addr)
	srv.TLS.Certificates = []tls.Certificate{hostCert(t, e.ca, id, addr)}
	return id
}

// endless writes chunk until the client goes away or the ceiling, and
// records how much it wrote.
func endless(w http.ResponseWriter, r *http.Request, chunk []byte, wrote *atomic.Int64) {
	for r.Context().Err() == nil && wrote.Load() < hostileCeiling {
		n, err := w.Write(chunk)
		wrote.Add(int64(n))
		if err != nil {
			return
		}
	}
}

func hostileCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantExhausted(t *testing.T, err error) {
	t.Helper()
	err = errdefs.FromConnect(err)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("error = %v; want resource exhausted naming the limit", err)
	}
}

func TestHostileAgentEndlessReply(t *testing.T) {
	e := newEnv(t)
	var wrote atomic.Int64
	id := startHostileAgent(t, e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		endless(w, r, make([]byte, 64<<10), &wrote)
	}))
	ctx := hostileCtx(t)
	c, err := e.pool.RPC(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: "x"}))
	wantExhausted(t, err)
	// Slack: the HTTP/2 stream window (4 MiB) and socket buffers.
	if got := wrote.Load(); got > agentpool.MaxAgentMessageBytes+(16<<20) {
		t.Errorf("agent got %d bytes out; want about %d at most", got, agentpool.MaxAgentMessageBytes)
	}
}

func TestHostileAgentGiganticList(t *testing.T) {
	e := newEnv(t)
	resp := &hostagentv1.ListTemplatesResponse{}
	for range agentpool.MaxAgentListEntries + 1 {
		resp.Templates = append(resp.Templates, &hostagentv1.Template{})
	}
	body, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	id := startHostileAgent(t, e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(body)
	}))
	ctx := hostileCtx(t)
	c, err := e.pool.RPC(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListTemplates(ctx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
	wantExhausted(t, err)
}

func TestHostileAgentHeaders(t *testing.T) {
	e := newEnv(t)
	id := startHostileAgent(t, e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 64 {
			w.Header().Set("X-Junk-"+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("j", 16<<10))
		}
		w.WriteHeader(http.StatusOK)
	}))
	ctx := hostileCtx(t)
	hc, base, err := e.pool.HTTP(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sandboxes/x/envd/health", nil)
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("1 MiB of agent response headers accepted (status %s)", resp.Status)
	}
}
