package wrenn

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn/wrenn/api"
)

// Sandboxes creates and finds sandboxes. Reach it as Client.Sandboxes.
type Sandboxes struct{ c *Client }

// CreateOptions describes a new sandbox. Zero fields take the server's
// defaults (template "minimal", 1 vCPU, 512 MiB, 2 GiB disk, 5 min).
type CreateOptions struct {
	Template string
	VCPUs    int
	MemoryMB int
	DiskMB   int
	// Timeout is how long the sandbox may sit idle; rounded up to seconds.
	Timeout time.Duration
	// OnTimeout is what happens then: api.Kill (default) or api.Pause.
	OnTimeout api.OnTimeout
	// Env is set for every command run in the sandbox.
	Env map[string]string
	// Metadata is free-form key/value data to find the sandbox by.
	Metadata map[string]string
	// Network is the egress policy; nil takes the default (internet on).
	Network *api.NetworkPolicy
	// PublicPorts are guest ports the proxy serves without credentials.
	PublicPorts []int
	// IdempotencyKey names this create (1-255 printable ASCII): a repeat
	// with the same key and options answers the first one's sandbox for
	// 24 hours. Empty: a fresh random key per call, which makes the
	// SDK's own retries (transport errors, 503) safe.
	IdempotencyKey string
}

// Sandbox is a handle on one sandbox. Its methods call the API; the
// handle itself holds no state that changes.
type Sandbox struct {
	// ID is the sandbox's id.
	ID string
	// AccessToken authorizes the port proxy for this sandbox. The API shows
	// it only in create and fork answers, so it is empty on handles from
	// Connect and List.
	AccessToken string
	// Details is the sandbox as the server described it when this handle
	// was made; call Info for the current state.
	Details api.Sandbox

	// Commands runs processes in the sandbox.
	Commands *Commands
	// PTY opens interactive terminals.
	PTY *PTYs
	// Files reads and writes the sandbox's filesystem.
	Files *Files

	c *Client
}

func (c *Client) sandbox(d api.Sandbox) *Sandbox {
	sb := &Sandbox{ID: d.Id, Details: d, c: c}
	if d.AccessToken != nil {
		sb.AccessToken = *d.AccessToken
	}
	sb.Commands = &Commands{sb: sb}
	sb.PTY = &PTYs{sb: sb}
	sb.Files = &Files{sb: sb}
	return sb
}

// Create starts a sandbox and returns once it can run commands. It is
// retried with the same idempotency key on transport errors and 503.
func (s *Sandboxes) Create(ctx context.Context, o CreateOptions) (*Sandbox, error) {
	req := api.CreateSandboxRequest{
		Template: nonZero(o.Template),
		Vcpus:    nonZero(o.VCPUs),
		MemoryMb: nonZero(o.MemoryMB),
		DiskMb:   nonZero(o.DiskMB),
		Network:  o.Network,
	}
	if o.Timeout > 0 {
		req.TimeoutSec = ptr(seconds(o.Timeout))
	}
	if o.OnTimeout != "" {
		req.OnTimeout = &o.OnTimeout
	}
	if len(o.Env) > 0 {
		req.Env = &o.Env
	}
	if len(o.Metadata) > 0 {
		req.Metadata = &o.Metadata
	}
	if len(o.PublicPorts) > 0 {
		req.PublicPorts = &o.PublicPorts
	}
	var out api.Sandbox
	key := o.IdempotencyKey
	if key == "" {
		key = newIdempotencyKey()
	}
	if err := s.c.callIdempotent(ctx, "/v1/sandboxes", key, req, &out); err != nil {
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	return s.c.sandbox(out), nil
}

// Connect returns a handle on an existing sandbox after checking that it
// exists. Connecting does not resume a paused sandbox; call Resume.
func (s *Sandboxes) Connect(ctx context.Context, id string) (*Sandbox, error) {
	d, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.c.sandbox(*d), nil
}

// Handle returns a handle on sandbox id without calling the API; the
// handle's Details holds only the id.
func (s *Sandboxes) Handle(id string) *Sandbox { return s.c.sandbox(api.Sandbox{Id: id}) }

func (s *Sandboxes) get(ctx context.Context, id string) (*api.Sandbox, error) {
	var out api.Sandbox
	if err := s.c.call(ctx, "GET", "/v1/sandboxes/"+seg(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return &out, nil
}

// ListOptions filters List.
type ListOptions struct {
	// States keeps sandboxes in any of these states; empty means every
	// state but stopped.
	States []api.SandboxState
	// Metadata keeps sandboxes whose metadata has every pair.
	Metadata map[string]string
	// PageSize is how many sandboxes each request asks for (1–1000); zero
	// takes the server's default. List follows every page regardless.
	PageSize int
}

// List returns the team's sandboxes matching o, newest first, following
// pagination to the end.
func (s *Sandboxes) List(ctx context.Context, o ListOptions) ([]*Sandbox, error) {
	q := url.Values{}
	if len(o.States) > 0 {
		states := make([]string, len(o.States))
		for i, st := range o.States {
			states[i] = string(st)
		}
		q.Set("state", strings.Join(states, ","))
	}
	for k, v := range o.Metadata {
		q.Add("metadata", k+"="+v)
	}
	if o.PageSize > 0 {
		q.Set("limit", strconv.Itoa(o.PageSize))
	}
	var all []*Sandbox
	seen := map[string]bool{}
	for {
		var page struct {
			Sandboxes  []api.Sandbox `json:"sandboxes"`
			NextCursor string        `json:"next_cursor"`
		}
		if err := s.c.call(ctx, "GET", "/v1/sandboxes", q, nil, &page); err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		for _, d := range page.Sandboxes {
			all = append(all, s.c.sandbox(d))
		}
		if page.NextCursor == "" {
			return all, nil
		}
		// A server that hands back a cursor it gave before would loop
		// forever; stop with an error instead.
		if seen[page.NextCursor] {
			return nil, fmt.Errorf("list sandboxes: server repeated cursor %q", page.NextCursor)
		}
		seen[page.NextCursor] = true
		q.Set("cursor", page.NextCursor)
	}
}

// Info returns the sandbox as the server sees it now.
func (sb *Sandbox) Info(ctx context.Context) (*api.Sandbox, error) {
	return sb.c.Sandboxes.get(ctx, sb.ID)
}

// Kill destroys the sandbox. Killing a sandbox that is already gone
// returns a not_found error.
func (sb *Sandbox) Kill(ctx context.Context) error {
	if err := sb.c.call(ctx, "DELETE", sb.path(""), nil, nil, nil); err != nil {
		return fmt.Errorf("kill sandbox %s: %w", sb.ID, err)
	}
	return nil
}

// Pause freezes the sandbox, memory and processes included, and returns it
// as it is after the change.
func (sb *Sandbox) Pause(ctx context.Context) (*api.Sandbox, error) {
	return sb.post(ctx, "pause", "pause", nil)
}

// Hibernate writes the sandbox's memory to its host's disk and stops its
// VM, so that it holds no RAM or vCPUs until Resume brings it back with
// its processes and files as they were.
func (sb *Sandbox) Hibernate(ctx context.Context) (*api.Sandbox, error) {
	return sb.post(ctx, "hibernate", "hibernate", nil)
}

// Resume continues a paused or hibernated sandbox where it stopped.
func (sb *Sandbox) Resume(ctx context.Context) (*api.Sandbox, error) {
	return sb.post(ctx, "resume", "resume", nil)
}

// SetTimeout sets how long the sandbox may sit idle from now (rounded up
// to seconds).
func (sb *Sandbox) SetTimeout(ctx context.Context, d time.Duration) (*api.Sandbox, error) {
	return sb.post(ctx, "timeout", "set timeout of", api.SetSandboxTimeoutJSONBody{TimeoutSec: seconds(d)})
}

// Fork makes n new sandboxes from this one, memory included; each runs
// on from the state this one is in now. It is retried with the same
// idempotency key (opts, else a fresh one) on transport errors and 503.
func (sb *Sandbox) Fork(ctx context.Context, n int, opts ...CallOptions) ([]*Sandbox, error) {
	var out struct {
		Sandboxes []api.Sandbox `json:"sandboxes"`
	}
	if err := sb.c.callIdempotent(ctx, sb.path("/fork"), keyOf(opts), api.ForkSandboxJSONBody{Count: &n}, &out); err != nil {
		return nil, fmt.Errorf("fork sandbox %s: %w", sb.ID, err)
	}
	forks := make([]*Sandbox, len(out.Sandboxes))
	for i, d := range out.Sandboxes {
		forks[i] = sb.c.sandbox(d)
	}
	return forks, nil
}

// SetNetwork replaces the sandbox's egress policy while it runs.
func (sb *Sandbox) SetNetwork(ctx context.Context, p api.NetworkPolicy) (*api.Sandbox, error) {
	var out api.Sandbox
	if err := sb.c.call(ctx, "PUT", sb.path("/network"), nil, p, &out); err != nil {
		return nil, fmt.Errorf("set network of sandbox %s: %w", sb.ID, err)
	}
	return &out, nil
}

// Metrics returns the sandbox's resource use now.
func (sb *Sandbox) Metrics(ctx context.Context) (*api.SandboxMetrics, error) {
	var out api.SandboxMetrics
	if err := sb.c.call(ctx, "GET", sb.path("/metrics"), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("metrics of sandbox %s: %w", sb.ID, err)
	}
	return &out, nil
}

// Logs returns the tail of the guest's serial console (kernel, init,
// envd): at most tailBytes bytes, or the server's default when zero.
func (sb *Sandbox) Logs(ctx context.Context, tailBytes int) (string, error) {
	q := url.Values{}
	if tailBytes > 0 {
		q.Set("tail_bytes", strconv.Itoa(tailBytes))
	}
	req, err := sb.c.newRequest(ctx, "GET", sb.path("/logs"), q, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := sb.c.do(req)
	if err != nil {
		return "", fmt.Errorf("logs of sandbox %s: %w", sb.ID, err)
	}
	defer resp.Body.Close()
	// The server caps the tail at 1 MiB; read a little past that at most.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
	if err != nil {
		return "", fmt.Errorf("logs of sandbox %s: %w", sb.ID, err)
	}
	return string(b), nil
}

// Snapshot makes a template called name (disk and memory) from the
// sandbox, which keeps running. It is retried with the same idempotency
// key (opts, else a fresh one) on transport errors and 503.
func (sb *Sandbox) Snapshot(ctx context.Context, name string, opts ...CallOptions) (*api.Template, error) {
	var out api.Template
	if err := sb.c.callIdempotent(ctx, sb.path("/snapshot"), keyOf(opts), api.SnapshotSandboxJSONBody{Name: name}, &out); err != nil {
		return nil, fmt.Errorf("snapshot sandbox %s: %w", sb.ID, err)
	}
	return &out, nil
}

// Host returns the host name the control plane's proxy serves the guest's
// port on: "{port}-{id}.{domain}", with the domain from WithDomain
// (default "localhost"). It has no scheme or port: the proxy listens
// where the deployment put it (behind TLS on 443 in production). Requests
// need the sandbox's AccessToken in X-Access-Token unless the port is
// public.
func (sb *Sandbox) Host(port int) string {
	return fmt.Sprintf("%d-%s.%s", port, sb.ID, sb.c.domain)
}

// PortURL returns the path-form proxy URL for a guest port on the API's
// own address: {base}/v1/sandboxes/{id}/ports/{port}/. Append the path to
// request in the guest. It needs the same credentials as Host.
func (sb *Sandbox) PortURL(port int) string {
	return sb.c.endpoint(sb.path("/ports/"+strconv.Itoa(port)+"/"), nil)
}

func (sb *Sandbox) path(suffix string) string { return "/v1/sandboxes/" + seg(sb.ID) + suffix }

func (sb *Sandbox) post(ctx context.Context, action, verb string, in any) (*api.Sandbox, error) {
	var out api.Sandbox
	if err := sb.c.call(ctx, "POST", sb.path("/"+action), nil, in, &out); err != nil {
		return nil, fmt.Errorf("%s sandbox %s: %w", verb, sb.ID, err)
	}
	return &out, nil
}

// seconds rounds d up to whole seconds, at least 1.
func seconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func nonZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}
