package envdclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/rpclimit"
)

// InitRequest is the body of POST /init: what every later call inherits.
type InitRequest struct {
	EnvVars map[string]string `json:"envVars,omitempty"`
	// AccessToken, when set, is required as X-Access-Token on every later
	// request but /health. The Client adopts it once Init succeeds.
	AccessToken    string `json:"accessToken,omitempty"`
	DefaultUser    string `json:"defaultUser,omitempty"`
	DefaultWorkdir string `json:"defaultWorkdir,omitempty"`
	// Timestamp sets the guest clock; zero means now.
	Timestamp time.Time `json:"timestamp,omitzero"`
}

// Metrics is the guest's resource usage from GET /metrics (E2B's shape).
type Metrics struct {
	Timestamp  int64   `json:"ts"`
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	MemTotal   int64   `json:"mem_total"`
	MemUsed    int64   `json:"mem_used"`
	DiskUsed   int64   `json:"disk_used"`
	DiskTotal  int64   `json:"disk_total"`
}

// Health asks envd once whether it serves; nil means it answered 204.
// It is cheap, needs no token and is meant to be polled (see WaitReady).
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/health", nil, nil, "")
	if err != nil {
		return fmt.Errorf("envd health: %w", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("envd health: %w", httpError(resp))
	}
	return nil
}

// WaitReady polls Health with a short backoff until envd answers or ctx
// ends, returning the last health error with ctx's.
func (c *Client) WaitReady(ctx context.Context) error {
	const (
		first = 5 * time.Millisecond
		// ceiling stays low: right after a restore envd answers within
		// milliseconds, and each probe is one cheap local round trip.
		ceiling = 20 * time.Millisecond
		// A probe sent before the guest's network is up is lost, and TCP
		// would retry it only after a second; a short first attempt starts
		// a fresh connection sooner. Attempts grow so a slow but live
		// guest still gets through.
		firstAttempt = 100 * time.Millisecond
		maxAttempt   = 2 * time.Second
	)
	delay, attempt := first, firstAttempt
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("no attempt made")
			}
			return fmt.Errorf("wait for envd: %w (last: %w)", ctx.Err(), last)
		case <-timer.C:
		}
		actx, cancel := context.WithTimeout(ctx, attempt)
		last = c.Health(actx)
		cancel()
		if last == nil {
			return nil
		}
		timer.Reset(delay)
		delay = min(delay*2, ceiling)
		attempt = min(attempt*2, maxAttempt)
	}
}

// Init sends POST /init. On success a new AccessToken becomes the Client's.
func (c *Client) Init(ctx context.Context, req InitRequest) error {
	if req.Timestamp.IsZero() {
		req.Timestamp = time.Now().UTC()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("envd init: encode: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	resp, err := c.do(ctx, http.MethodPost, "/init", nil, h, "", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("envd init: %w", httpError(resp))
	}
	if req.AccessToken != "" {
		c.SetAccessToken(req.AccessToken)
	}
	return nil
}

// Envs returns the environment variables envd gives new processes (GET /envs).
func (c *Client) Envs(ctx context.Context) (map[string]string, error) {
	env := map[string]string{}
	if err := c.getJSON(ctx, "/envs", &env); err != nil {
		return nil, fmt.Errorf("envd envs: %w", err)
	}
	return env, nil
}

// Metrics returns the guest's resource usage (GET /metrics).
func (c *Client) Metrics(ctx context.Context) (Metrics, error) {
	var m Metrics
	if err := c.getJSON(ctx, "/metrics", &m); err != nil {
		return Metrics{}, fmt.Errorf("envd metrics: %w", err)
	}
	return m, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, "")
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return httpError(resp)
	}
	// Bounded: these bodies are small maps; a runaway one is an error,
	// found after reading one byte past the cap (never to the end).
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxJSONReplyBytes+1))
	if err != nil {
		return fmt.Errorf("read response: %w: %w", errdefs.ErrUnavailable, err)
	}
	if len(raw) > MaxJSONReplyBytes {
		return &rpclimit.LimitError{Peer: "envd", What: "JSON reply bytes", Limit: MaxJSONReplyBytes}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errdefs.New(errdefs.ErrUnavailable, "decode envd's reply: %v", err)
	}
	return nil
}

// do sends one plain HTTP request through the auth-adding doer. body is
// optional (at most one). Transport errors are classified as Unavailable:
// the guest is unreachable, not wrong.
func (c *Client) do(ctx context.Context, method, path string, query map[string]string, h http.Header, user string, body ...io.Reader) (*http.Response, error) {
	var b io.Reader
	if len(body) > 0 {
		b = body[0]
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, b)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "build request %s %s: %v", method, path, err)
	}
	if len(query) > 0 {
		q := req.URL.Query()
		for k, v := range query {
			if v != "" {
				q.Set(k, v)
			}
		}
		req.URL.RawQuery = q.Encode()
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	setUser(req.Header, user)
	resp, err := c.doer.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		return nil, fmt.Errorf("%s %s: %w: %w", method, path, errdefs.ErrUnavailable, err)
	}
	return resp, nil
}

// httpError turns a non-2xx envd response into an error of the matching
// kind, from the body's "kind" when envd sent one, else from the status.
func httpError(resp *http.Response) error {
	var body struct {
		Code    int    `json:"code"`
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	if json.Unmarshal(raw, &body) != nil || body.Message == "" {
		body.Message = string(bytes.TrimSpace(raw))
	}
	if body.Message == "" {
		body.Message = http.StatusText(resp.StatusCode)
	}
	kind := kindFromCode(body.Kind)
	if kind == nil {
		kind = kindFromStatus(resp.StatusCode)
	}
	if kind == nil {
		return fmt.Errorf("envd: HTTP %d: %s", resp.StatusCode, body.Message)
	}
	return errdefs.New(kind, "envd: HTTP %d: %s", resp.StatusCode, body.Message)
}

// kindFromCode inverts errdefs.Code.
func kindFromCode(code string) error {
	for _, k := range []error{
		errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument,
		errdefs.ErrFailedPrecondition, errdefs.ErrPermissionDenied, errdefs.ErrUnauthenticated,
		errdefs.ErrResourceExhausted, errdefs.ErrUnavailable,
	} {
		if code != "" && errdefs.Code(k) == code {
			return k
		}
	}
	return nil
}

// kindFromStatus classifies responses without a "kind" (E2B's envd, proxies).
func kindFromStatus(status int) error {
	switch status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusConflict:
		return errdefs.ErrFailedPrecondition
	case http.StatusInsufficientStorage, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errdefs.ErrUnavailable
	}
	return nil
}

// drainClose reads a little of what is left so the connection can be
// reused, then closes.
func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, maxErrorBodyBytes))
	_ = rc.Close()
}
