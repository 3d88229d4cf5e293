package wrenn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// DefaultBaseURL is the API address used when neither WithBaseURL nor
// WRENN_API_URL says otherwise.
const DefaultBaseURL = "http://localhost:8000"

// DefaultDomain is the proxy domain Sandbox.Host uses unless WithDomain
// names another.
const DefaultDomain = "localhost"

// Client talks to one Wrenn API. It is safe for concurrent use.
type Client struct {
	// Sandboxes creates, finds and manages sandboxes.
	Sandboxes *Sandboxes
	// Templates lists and deletes templates.
	Templates *Templates
	// Hosts manages the team's hosts.
	Hosts *Hosts

	base      *url.URL
	apiKey    string
	http      *http.Client
	userAgent string
	domain    string
}

// Option configures a Client.
type Option func(*config)

type config struct {
	apiKey     *string
	baseURL    *string
	httpClient *http.Client
	userAgent  string
	domain     string
	getenv     func(string) string
}

// WithAPIKey sets the team API key (wrn_…). Default: $WRENN_API_KEY.
func WithAPIKey(key string) Option { return func(c *config) { c.apiKey = &key } }

// WithBaseURL sets the API address, e.g. https://wrenn.example.com.
// Default: $WRENN_API_URL, else DefaultBaseURL.
func WithBaseURL(u string) Option { return func(c *config) { c.baseURL = &u } }

// WithHTTPClient sets the HTTP client used for every call, WebSockets
// included. Do not give it a Timeout: uploads, downloads and streams last
// as long as they need; bound calls with their context instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.httpClient = hc } }

// WithUserAgent puts ua before the SDK's own product token in User-Agent.
func WithUserAgent(ua string) Option { return func(c *config) { c.userAgent = ua } }

// WithDomain sets the domain the control plane's port proxy answers on,
// used by Sandbox.Host ({port}-{id}.{domain}). Default: DefaultDomain.
func WithDomain(d string) Option { return func(c *config) { c.domain = d } }

// WithEnv replaces os.Getenv for the WRENN_API_KEY and WRENN_API_URL
// defaults; pass func(string) string { return "" } to ignore the
// environment.
func WithEnv(getenv func(string) string) Option { return func(c *config) { c.getenv = getenv } }

// sdkUserAgent is the SDK's product token.
const sdkUserAgent = "wrenn-go-sdk/1"

// NewClient returns a client configured by opts, falling back to the
// WRENN_API_KEY and WRENN_API_URL environment variables. It fails when no
// API key is set or the base URL is not an http(s) URL.
func NewClient(opts ...Option) (*Client, error) {
	cfg := config{getenv: os.Getenv}
	for _, o := range opts {
		o(&cfg)
	}
	key := cfg.getenv("WRENN_API_KEY")
	if cfg.apiKey != nil {
		key = *cfg.apiKey
	}
	if key == "" {
		return nil, errors.New("wrenn: no API key: set WRENN_API_KEY or use WithAPIKey")
	}
	raw := cfg.getenv("WRENN_API_URL")
	if cfg.baseURL != nil {
		raw = *cfg.baseURL
	}
	if raw == "" {
		raw = DefaultBaseURL
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("wrenn: base URL %q: want http(s)://host[:port]", raw)
	}
	c := &Client{base: base, apiKey: key, http: cfg.httpClient, domain: cfg.domain, userAgent: sdkUserAgent}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.domain == "" {
		c.domain = DefaultDomain
	}
	if cfg.userAgent != "" {
		c.userAgent = cfg.userAgent + " " + sdkUserAgent
	}
	c.Sandboxes = &Sandboxes{c: c}
	c.Templates = &Templates{c: c}
	c.Hosts = &Hosts{c: c}
	return c, nil
}

// BaseURL returns the API address the client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// endpoint joins the base URL with an API path (already escaped per
// segment) and a query.
func (c *Client) endpoint(path string, q url.Values) string {
	u := c.base.String() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// header sets the credentials and user agent on h.
func (c *Client) header(h http.Header) {
	h.Set("Authorization", "Bearer "+c.apiKey)
	h.Set("User-Agent", c.userAgent)
}

// newRequest builds a request for an API path.
func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(path, q), body)
	if err != nil {
		return nil, err
	}
	c.header(req.Header)
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends a request and returns the response when it is 2xx; otherwise
// it closes the body and returns an *Error.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, errorFromResponse(resp)
	}
	return resp, nil
}

// call sends in (if not nil) as JSON and decodes a 2xx JSON answer into out
// (if not nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// wsReadLimit bounds one WebSocket message; output frames carry at most a
// few tens of KiB of base64 in practice.
const wsReadLimit = 8 << 20

// dial opens a WebSocket to an API path. A refused handshake returns the
// API's *Error.
func (c *Client) dial(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	h := http.Header{}
	c.header(h)
	conn, resp, err := websocket.Dial(ctx, c.endpoint(path, q), &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode >= 300 {
			if resp.Body != nil {
				defer resp.Body.Close()
			}
			if resp.Body == nil {
				resp.Body = http.NoBody
			}
			return nil, errorFromResponse(resp)
		}
		return nil, err
	}
	conn.SetReadLimit(wsReadLimit)
	return conn, nil
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }

// Me returns the caller and the team the client acts for; it is the
// cheapest way to check that the credentials work.
func (c *Client) Me(ctx context.Context) (*api.Me, error) {
	var out api.Me
	if err := c.call(ctx, "GET", "/v1/me", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("who am I: %w", err)
	}
	return &out, nil
}
