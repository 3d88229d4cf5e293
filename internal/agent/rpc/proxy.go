package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// DefaultTouchInterval is how often a long-lived proxied request counts as
// use of its sandbox: well under any idle timeout worth having, so an open
// terminal or event stream keeps its sandbox alive.
const DefaultTouchInterval = 15 * time.Second

// accessTokenHeader carries envd's per-sandbox token.
const accessTokenHeader = "X-Access-Token"

// proxy forwards plain HTTP (streams and WebSocket upgrades included) to a
// sandbox's envd or to one of its ports. The control plane authenticates
// callers; the agent only routes, adds envd's token and counts the traffic
// as use of the sandbox. Only the control plane can connect (mTLS), so the
// Host and X-Forwarded-* headers it sets describe the real client and are
// passed on as they are.
type proxy struct {
	cfg Config
	// errLog takes the reverse proxy's own complaints (a guest hanging up
	// mid-stream), which are routine.
	errLog *log.Logger
	// connectErrors writes refusals of envd's Connect calls.
	connectErrors *connect.ErrorWriter
}

// envd serves /sandboxes/{id}/envd/{rest...}.
func (p *proxy) envd(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p.forward(w, r, "envd", id, p.cfg.EnvdPort, "/sandboxes/"+id+"/envd", true)
}

// port serves /sandboxes/{id}/ports/{port}/{rest...}. envd's port is not
// reachable this way: only the envd route, which adds the token, leads
// there.
func (p *proxy) port(w http.ResponseWriter, r *http.Request) {
	id, ps := r.PathValue("id"), r.PathValue("port")
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		p.done(w, r, "port", errdefs.New(errdefs.ErrInvalidArgument, "port %q: want 1-65535", ps))
		return
	}
	if port == envdclient.Port || port == p.cfg.EnvdPort {
		p.done(w, r, "port", errdefs.New(errdefs.ErrPermissionDenied, "port %d is envd's; use /sandboxes/%s/envd/", port, id))
		return
	}
	p.forward(w, r, "port", id, port, "/sandboxes/"+id+"/ports/"+ps, false)
}

// forward proxies r to the sandbox's guest at port, with prefix stripped
// from the path and the query kept.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request, kind, id string, port int, prefix string, withToken bool) {
	info, err := p.cfg.Manager.Get(r.Context(), id)
	if err != nil {
		p.done(w, r, kind, err)
		return
	}
	if info.State != state.Running || info.Address == "" {
		p.done(w, r, kind, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s, not running", id, info.State))
		return
	}
	// The request ends when the sandbox stops running (killed, paused, its
	// VMM died): a dead guest never closes its TCP connections, so a
	// stream open at that moment would otherwise hang for minutes.
	gone, err := p.cfg.Manager.RunDone(id)
	if err != nil {
		p.done(w, r, kind, err)
		return
	}
	if again, err := p.cfg.Manager.Get(r.Context(), id); err != nil || again.State != state.Running {
		// It stopped between the two looks; the channel may be a new one.
		p.done(w, r, kind, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s, not running", id, again.State))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	r = r.WithContext(ctx)
	stop := p.keepTouching(id)
	defer stop()

	rec := &statusRecorder{ResponseWriter: w}
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(info.Address, strconv.Itoa(port))}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path, pr.Out.URL.RawPath = guestPath(pr.In, prefix)
			for _, h := range forwardedHeaders {
				if v := pr.In.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = v
				}
			}
			if withToken {
				pr.Out.Header.Set(accessTokenHeader, info.AccessToken)
			} else {
				// A guest's own server sees the name its client used.
				pr.Out.Host = pr.In.Host
			}
		},
		Transport: p.cfg.Transport,
		// Flush every write: envd's process output and guest event
		// streams must arrive as they are produced.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller left; nobody to answer
			}
			writeProxyError(w, http.StatusBadGateway, "unavailable", fmt.Sprintf("sandbox %s port %d: %v", id, port, err))
		},
		ErrorLog: p.errLog,
	}
	rp.ServeHTTP(rec, r)
	p.cfg.Metrics.proxied(kind, rec.status())
}

// forwardedHeaders are the control plane's account of the client, which
// the reverse proxy would otherwise drop.
var forwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// guestPath strips prefix from the request's path, keeping its escaping
// (an encoded slash in a file name must stay encoded).
func guestPath(in *http.Request, prefix string) (path, rawPath string) {
	if rest, ok := strings.CutPrefix(in.URL.EscapedPath(), prefix); ok {
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		// url.URL uses RawPath only where it differs from Path's default
		// encoding, so handing it back unconditionally is safe.
		if p, err := url.PathUnescape(rest); err == nil {
			return p, rest
		}
	}
	// The prefix was spelled with escapes of its own; the mux has decoded
	// the remainder.
	return "/" + in.PathValue("rest"), ""
}

// keepTouching counts the sandbox as used now, periodically while the
// request lasts, and once more when the returned stop is called.
func (p *proxy) keepTouching(id string) (stop func()) {
	_ = p.cfg.Manager.Touch(id)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(p.cfg.TouchInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = p.cfg.Manager.Touch(id)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		// A destroyed sandbox has nothing left to touch; that is fine.
		_ = p.cfg.Manager.Touch(id)
	}
}

// done answers a request the proxy refuses, and counts it. A Connect or
// gRPC call to envd gets the error in its own protocol, so the caller's
// client reads the code (failed_precondition for a paused sandbox,
// not_found for a gone one) instead of an error body it cannot parse.
func (p *proxy) done(w http.ResponseWriter, r *http.Request, kind string, err error) {
	status := errdefs.HTTPStatus(err)
	if kind == "envd" && r.Method == http.MethodPost && p.connectErrors.IsSupported(r) {
		_ = p.connectErrors.Write(w, r, errdefs.ToConnect(err))
	} else {
		writeProxyError(w, status, errdefs.Code(err), err.Error())
	}
	p.cfg.Metrics.proxied(kind, status)
}

// writeProxyError writes the REST error shape:
// {"error":{"code":"not_found","message":"..."}}.
func writeProxyError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// maxGuestHeaderBytes caps the response headers a guest server may send
// through the proxy (Go's default is 10 MiB). A tenant is root in its
// guest; envd sends a few short headers and web apps rarely more than
// common proxies allow (8-64 KiB). The control plane applies its own cap
// again. Bodies are streamed, never held, so they need no cap here.
const maxGuestHeaderBytes = 256 << 10

// newGuestTransport dials guests directly (never through an environment
// proxy) over HTTP/1.1, which every guest server speaks and which carries
// WebSocket upgrades.
func newGuestTransport() *http.Transport {
	return &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// A paused or destroyed guest silently kills pooled connections;
		// keep them briefly so a dead one is rarely reused.
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
		// A guest's headers are held whole before the proxy can answer.
		MaxResponseHeaderBytes: maxGuestHeaderBytes,
	}
}

// statusRecorder remembers the status written through it. Unwrap lets the
// reverse proxy reach the real writer's Flush and Hijack.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		// Hijacked (a WebSocket after its 101) or the caller left.
		return http.StatusSwitchingProtocols
	}
	return s.code
}
