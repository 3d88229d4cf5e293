package rest

// A hostile envd behind the agent's guest proxy (issue 11 hole 5): a tenant
// is root in its guest and can replace envd. Its replies must cost the
// control plane a bounded amount of memory and end in a clear 4xx/5xx with
// a machine-readable code, never a 500 or an unbounded read.

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/proto/envd/process"
)

// hostileAgents is fakeAgents whose guest proxy leads to a hostile envd.
type hostileAgents struct {
	*fakeAgents
	envdURL string
}

func (h *hostileAgents) HTTP(_ context.Context, hostID string) (*http.Client, string, error) {
	if _, err := h.get(hostID); err != nil {
		return nil, "", err
	}
	return http.DefaultClient, h.envdURL, nil
}

// newHostileEnv makes a running sandbox whose envd is envd (served under
// the agent's /sandboxes/{id}/envd/ prefix).
func newHostileEnv(t *testing.T, envd http.Handler) (*sbEnv, api.Sandbox) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Drop /sandboxes/{id}/envd.
		parts := strings.SplitN(r.URL.Path, "/", 5)
		if len(parts) == 5 {
			r.URL.Path = "/" + parts[4]
		}
		envd.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	env := newTestEnv(t, func(d *Deps) { d.Agents = &hostileAgents{fakeAgents: fa, envdURL: srv.URL} })
	e := &sbEnv{testEnv: env, agents: fa, guest: startGuest(t), team: env.newTeam(t, "hostile")}
	e.addHost(t)
	return e, e.create(t, map[string]any{"template": "minimal"})
}

// connectEnvelope frames msg as one message of a Connect stream.
func connectEnvelope(t *testing.T, msg proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// gigantic is a list reply of 200,000 empty entries: 400 KB on the wire,
// far more decoded and as JSON.
func gigantic() []byte {
	b := make([]byte, 0, 400_000)
	for range 200_000 {
		b = append(b, 0x0a, 0x00)
	}
	return b
}

func TestHostileEnvdGiganticLists(t *testing.T) {
	body := gigantic()
	e, sb := newHostileEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(body)
	}))
	for _, path := range []string{"/files/list?path=/", "/processes"} {
		resp := e.do(t, "GET", "/v1/sandboxes/"+sb.Id+path, e.team.Key, nil)
		msg := wantError(t, resp, http.StatusInsufficientStorage, "resource_exhausted")
		if !strings.Contains(msg, "list entries") {
			t.Errorf("GET %s: message %q does not name the limit", path, msg)
		}
	}
}

func TestHostileEnvdExecOutput(t *testing.T) {
	start := connectEnvelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: 7}}}})
	chunk := connectEnvelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Data{Data: &process.ProcessEvent_DataEvent{
			Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: []byte(strings.Repeat("a", 32<<10))}}}}})
	oversized := connectEnvelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Data{Data: &process.ProcessEvent_DataEvent{
			Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: make([]byte, 9<<20)}}}}})
	e, sb := newHostileEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/process.Process/Start":
			w.Header().Set("Content-Type", "application/connect+proto")
			_, _ = w.Write(start)
			// The request (a Connect envelope) names the command.
			req, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if strings.Contains(string(req), "oversized") {
				_, _ = w.Write(oversized)
				return
			}
			// Output without end, until the control plane hangs up.
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		default: // SendSignal (the kill after the timeout) and friends
			w.Header().Set("Content-Type", "application/proto")
		}
	}))
	path := "/v1/sandboxes/" + sb.Id + "/exec"

	// Endless output: kept up to the cap, flagged, the process killed at
	// its timeout.
	var res api.ExecResult
	e.doJSON(t, "POST", path, e.team.Key, map[string]any{"cmd": "yes", "timeout_sec": 2}, http.StatusOK, &res)
	if res.Truncated == nil || !*res.Truncated || res.Stdout == nil || len(*res.Stdout) != maxExecOutput {
		n := -1
		if res.Stdout != nil {
			n = len(*res.Stdout)
		}
		t.Errorf("endless output: truncated %v, %d bytes of stdout; want truncated and exactly %d", res.Truncated, n, maxExecOutput)
	}

	// One message over envdclient.MaxMessageBytes: refused, not read.
	resp := e.do(t, "POST", path, e.team.Key, map[string]any{"cmd": "oversized", "timeout_sec": 10})
	wantError(t, resp, http.StatusInsufficientStorage, "resource_exhausted")
}

// A reply envd's client cannot parse is the guest's fault: 503
// unavailable, not 400 (the caller did nothing wrong) nor 500.
func TestHostileEnvdMalformedReply(t *testing.T) {
	e, sb := newHostileEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write([]byte{0xff, 0xff, 0xff})
	}))
	for _, path := range []string{"/files/list?path=/", "/files/stat?path=/x", "/processes"} {
		resp := e.do(t, "GET", "/v1/sandboxes/"+sb.Id+path, e.team.Key, nil)
		wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
	}
}

// A host agent may be a tenant's own machine: the console log answered is
// never longer than the tail asked for, whatever the agent sent (the fake
// agent ignores tail_bytes and sends "console of <id>").
func TestLogsTrimmedToTail(t *testing.T) {
	e := newSandboxEnv(t)
	e.addHost(t)
	sb := e.create(t, map[string]any{"template": "minimal"})
	resp := e.do(t, "GET", "/v1/sandboxes/"+sb.Id+"/logs?tail_bytes=5", e.team.Key, nil)
	if got := readAll(t, resp); resp.StatusCode != http.StatusOK || got != sb.Id[len(sb.Id)-5:] {
		t.Errorf("logs?tail_bytes=5: %d %q; want 200 %q", resp.StatusCode, got, sb.Id[len(sb.Id)-5:])
	}
}
