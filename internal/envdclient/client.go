// Package envdclient is the host side of envd, the agent inside every
// sandbox: it runs processes, moves files and checks health over envd's
// Connect RPC services and plain HTTP routes, and maps envd's errors back to
// errdefs kinds so callers can use errors.Is.
//
// The host agent reaches each guest through that sandbox's network
// namespace, so how connections are dialled is pluggable (WithDialContext).
package envdclient

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/rpclimit"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// Port is the TCP port envd listens on inside the guest.
const Port = 49983

// Bounds on what envd may send back. A tenant is root in its guest and can
// replace envd with anything, so every reply is read under a cap: a
// hostile guest then costs the host (the agent, and through the agent's
// proxy the control plane) at most these amounts per call, and the call
// fails with errdefs.ErrResourceExhausted naming the limit.
const (
	// MaxMessageBytes caps one Connect message from envd: a unary reply or
	// one event of a stream. envd sends process output in 32 KiB chunks;
	// 8 MiB holds a ListDir reply of some 50,000 entries with long paths.
	MaxMessageBytes = 8 << 20
	// MaxListEntries caps the entries of a list reply (ListDir, List),
	// nested lists and maps included. Counted on the wire before decoding:
	// an empty entry is 2 bytes there but ~200 bytes decoded, so without it
	// 8 MiB could cost ~1 GiB.
	MaxListEntries = 100_000
	// MaxJSONReplyBytes caps the JSON bodies of /envs and /metrics: small
	// maps and a handful of numbers.
	MaxJSONReplyBytes = 1 << 20
	// maxErrorBodyBytes is how much of an error body is read for its
	// message; the rest is not worth a byte of memory.
	maxErrorBodyBytes = 64 << 10
	// MaxResponseHeaderBytes caps envd's response headers (Go's default is
	// 10 MiB); envd sends a few short ones.
	MaxResponseHeaderBytes = 64 << 10
)

// limits is how the Connect clients apply the bounds above.
var limits = rpclimit.Limits{Peer: "envd", MaxMessageBytes: MaxMessageBytes, MaxRepeated: MaxListEntries}

// Header names envd reads.
const (
	headerAccessToken   = "X-Access-Token"
	headerAuthorization = "Authorization"
)

// Client talks to one envd. It is safe for concurrent use.
type Client struct {
	baseURL string
	hc      *http.Client
	doer    *authDoer

	proc processconnect.ProcessClient
	fs   filesystemconnect.FilesystemClient
}

// Option configures a Client.
type Option func(*config)

type config struct {
	hc      *http.Client
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	http1   bool
	token   string
	user    string
	timeout time.Duration
}

// WithHTTPClient makes the Client use hc as is; WithDialContext and
// WithHTTP1 are then ignored.
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.hc = hc } }

// WithDialContext sets how connections to envd are dialled, e.g. from inside
// the sandbox's network namespace.
func WithDialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *config) { c.dial = dial }
}

// WithHTTP1 makes the Client speak HTTP/1.1 instead of cleartext HTTP/2
// (h2c). Streams still work; one connection is then used per concurrent call.
func WithHTTP1() Option { return func(c *config) { c.http1 = true } }

// WithAccessToken sets the X-Access-Token sent with every request (Init
// replaces it when it sets a new token).
func WithAccessToken(token string) Option { return func(c *config) { c.token = token } }

// WithUser sets the guest user calls run as when they name none; empty means
// envd's own default (set by Init).
func WithUser(name string) Option { return func(c *config) { c.user = name } }

// WithDialTimeout bounds each TCP connect (default 3s). A guest that is not
// up yet often drops SYNs silently, so this keeps WaitReady polling.
func WithDialTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// New returns a client for the envd at baseURL, e.g. "http://169.254.0.21:49983".
func New(baseURL string, opts ...Option) *Client {
	cfg := config{timeout: 3 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	hc := cfg.hc
	if hc == nil {
		hc = &http.Client{Transport: newTransport(cfg)}
	}
	doer := &authDoer{next: hc, token: cfg.token, user: cfg.user}
	baseURL = strings.TrimRight(baseURL, "/")
	return &Client{
		baseURL: baseURL,
		hc:      hc,
		doer:    doer,
		proc:    processconnect.NewProcessClient(limits.Doer(doer), baseURL, limits.ClientOptions()...),
		fs:      filesystemconnect.NewFilesystemClient(limits.Doer(doer), baseURL, limits.ClientOptions()...),
	}
}

// newTransport builds the default transport: h2c with prior knowledge so all
// of a sandbox's calls, streams included, share one TCP connection.
func newTransport(cfg config) *http.Transport {
	dialer := &net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}
	dial := cfg.dial
	if dial == nil {
		dial = dialer.DialContext
	} else if cfg.timeout > 0 {
		inner := dial
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
			defer cancel()
			return inner(ctx, network, addr)
		}
	}
	t := &http.Transport{
		DialContext:         dial,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		// Responses can be large file downloads; never ask for gzip so the
		// body streams through untouched.
		DisableCompression:     true,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		// A guest that was paused, restored or forked may leave a pooled
		// connection dead without a word; a connection silent for 10 s is
		// pinged and dropped if the ping goes unanswered, instead of
		// holding requests until TCP gives up minutes later.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second},
	}
	var p http.Protocols
	if cfg.http1 {
		p.SetHTTP1(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	t.Protocols = &p
	return t
}

// Process returns the generated Connect client for envd's process service.
// Calls carry the access token and default user automatically.
func (c *Client) Process() processconnect.ProcessClient { return c.proc }

// Filesystem returns the generated Connect client for envd's filesystem
// service. Calls carry the access token and default user automatically.
func (c *Client) Filesystem() filesystemconnect.FilesystemClient { return c.fs }

// SetAccessToken changes the token sent with later requests.
func (c *Client) SetAccessToken(token string) { c.doer.setToken(token) }

// CloseIdleConnections drops pooled connections, e.g. after the guest was
// restored from a snapshot and old connections are dead.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// CallOption adjusts one call.
type CallOption func(*callConfig)

type callConfig struct{ user string }

// AsUser runs the call as the named guest user instead of the default.
func AsUser(name string) CallOption { return func(c *callConfig) { c.user = name } }

func callOpts(opts []CallOption) callConfig {
	var cc callConfig
	for _, o := range opts {
		o(&cc)
	}
	return cc
}

// basicUser is how E2B's SDKs name the user: HTTP Basic with an empty password.
func basicUser(name string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"))
}

// setUser sets the user header on h when name is not empty.
func setUser(h http.Header, name string) {
	if name != "" {
		h.Set(headerAuthorization, basicUser(name))
	}
}

// authDoer adds the access token and default user to every request that does
// not carry its own, for both the Connect clients and the plain HTTP routes.
type authDoer struct {
	next *http.Client

	mu    sync.RWMutex
	token string
	user  string
}

func (d *authDoer) setToken(t string) {
	d.mu.Lock()
	d.token = t
	d.mu.Unlock()
}

func (d *authDoer) Do(r *http.Request) (*http.Response, error) {
	d.mu.RLock()
	token, user := d.token, d.user
	d.mu.RUnlock()
	if (token != "" && r.Header.Get(headerAccessToken) == "") ||
		(user != "" && r.Header.Get(headerAuthorization) == "") {
		// A RoundTripper must not modify its request; cloning the header
		// keeps the caller's request untouched.
		r = r.Clone(r.Context())
		if token != "" && r.Header.Get(headerAccessToken) == "" {
			r.Header.Set(headerAccessToken, token)
		}
		if user != "" && r.Header.Get(headerAuthorization) == "" {
			setUser(r.Header, user)
		}
	}
	return d.next.Do(r)
}

// connectErr wraps a Connect error with what was being done and its kind.
func connectErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, fromConnect(err))
}

// fromConnect maps a Connect error to an errdefs kind; context errors from
// our own ctx keep their identity so errors.Is(err, context.Canceled) works.
func fromConnect(err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeCanceled:
		return fmt.Errorf("%w: %w", context.Canceled, err)
	case connect.CodeDeadlineExceeded:
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return errdefs.FromConnect(err)
}
