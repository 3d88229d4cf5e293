package rest

// The port proxy: HTTP and WebSocket to a port in a sandbox, at
// /v1/sandboxes/{id}/ports/{port}/{path} or on the host name
// {port}-{id}.{domain}. A request passes with the sandbox's access token
// (X-Access-Token or ?access_token=, checked against the stored SHA-256 in
// constant time), with credentials of the sandbox's team, or with nothing
// when the port is one of the sandbox's public_ports. envd's port 49983 is
// never served. Credentials are stripped before the request reaches the
// guest. The agent's ports route resets the sandbox's idle timer.

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

const (
	headerAccessToken = "X-Access-Token"
	queryAccessToken  = "access_token"
)

func (s *Server) mountPortProxy(r chi.Router) {
	h := http.HandlerFunc(s.servePortRoute)
	r.Handle("/sandboxes/{sandboxID}/ports/{port}", h)
	r.Handle("/sandboxes/{sandboxID}/ports/{port}/*", h)
}

// servePortRoute is the path form of the proxy.
func (s *Server) servePortRoute(w http.ResponseWriter, r *http.Request) {
	id, port := chi.URLParam(r, "sandboxID"), chi.URLParam(r, "port")
	rest := "/"
	ep := r.URL.EscapedPath()
	marker := "/sandboxes/" + id + "/ports/" + port
	if i := strings.Index(ep, marker); i >= 0 && len(ep) > i+len(marker) {
		rest = ep[i+len(marker):]
	}
	s.proxyPort(w, r, id, port, rest)
}

// hostProxy serves {port}-{sandboxID}.{domain} (any port suffix on Host)
// with the proxy and passes everything else to next.
func (s *Server) hostProxy(next http.Handler) http.Handler {
	if s.deps.Domain == "" {
		return next
	}
	suffix := "." + strings.ToLower(strings.Trim(s.deps.Domain, "."))
	proxy := s.recoverPanics(s.logRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, port, _ := sandboxHost(r.Host, suffix)
		s.proxyPort(w, r, id, port, r.URL.EscapedPath())
	})))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := sandboxHost(r.Host, suffix); ok {
			proxy.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sandboxHost splits a Host header of the form {port}-{id}{suffix}[:N].
func sandboxHost(host, suffix string) (id, port string, ok bool) {
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, found := strings.CutSuffix(strings.TrimSuffix(host, "."), suffix)
	if !found || strings.Contains(label, ".") {
		return "", "", false
	}
	port, id, found = strings.Cut(label, "-")
	if !found || id == "" || port == "" || strings.Trim(port, "0123456789") != "" {
		return "", "", false
	}
	return id, port, true
}

// proxyPort authorizes a request for a sandbox's port and forwards it,
// with rest (escaped, starting with '/') as the guest path.
func (s *Server) proxyPort(w http.ResponseWriter, r *http.Request, id, portStr, rest string) {
	// The id reaches PostgreSQL; the guest path and query do not, and
	// belong to the guest.
	if err := checkText("sandbox id", id); err != nil {
		writeError(w, r, err)
		return
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		writeError(w, r, invalid("port %q: must be 1-65535", portStr))
		return
	}
	if port == envdPort {
		writeError(w, r, errdefs.New(errdefs.ErrPermissionDenied, "port %d is envd's and is never proxied", envdPort))
		return
	}
	sb, err := s.q.GetProxySandbox(r.Context(), id)
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, r, notFound("sandbox", id))
		return
	}
	if err != nil {
		writeError(w, r, fmt.Errorf("load sandbox %s: %w", id, err))
		return
	}
	forward := func(w http.ResponseWriter, r *http.Request) { s.forwardPort(w, r, sb, port, rest) }
	switch {
	case slices.Contains(sb.PublicPorts, int32(port)):
		forward(w, r)
	case r.Header.Get(headerAccessToken) != "" || r.URL.Query().Has(queryAccessToken):
		token := r.Header.Get(headerAccessToken)
		if token == "" {
			token = r.URL.Query().Get(queryAccessToken)
		}
		if len(sb.AccessTokenHash) == 0 || subtle.ConstantTimeCompare(hashToken(token), sb.AccessTokenHash) != 1 {
			writeError(w, r, errdefs.New(errdefs.ErrUnauthenticated, "invalid access token for sandbox %s", id))
			return
		}
		forward(w, r)
	default:
		// Team credentials, checked by the API's own authentication.
		s.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if principal(r.Context()).TeamID != sb.TeamID {
				writeError(w, r, notFound("sandbox", id))
				return
			}
			forward(w, r)
		})).ServeHTTP(w, r)
	}
}

// forwardPort sends an authorized request to the guest port through the
// sandbox's host agent, streaming both ways (WebSocket upgrades included).
func (s *Server) forwardPort(w http.ResponseWriter, r *http.Request, sb store.GetProxySandboxRow, port int, rest string) {
	if sb.State != stRunning {
		writeError(w, r, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s, not running", sb.ID, sb.State))
		return
	}
	if sb.HostID == nil || s.deps.Agents == nil {
		writeError(w, r, errdefs.New(errdefs.ErrUnavailable, "sandbox %s has no reachable host", sb.ID))
		return
	}
	hc, base, err := s.deps.Agents.HTTP(r.Context(), sb.HostID.String())
	if err != nil {
		writeError(w, r, fmt.Errorf("reach host %s: %w", sb.HostID, err))
		return
	}
	target, err := url.Parse(strings.TrimRight(base, "/") + "/sandboxes/" + url.PathEscape(sb.ID) + "/ports/" + strconv.Itoa(port))
	if err != nil {
		writeError(w, r, fmt.Errorf("agent base URL %q: %w", base, err))
		return
	}
	restPath, err := url.PathUnescape(rest)
	if err != nil {
		writeError(w, r, invalid("path %q: %v", rest, err))
		return
	}
	transport := hc.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	if isUpgrade(r) {
		t := http1Transport(transport)
		defer t.CloseIdleConnections()
		transport = t
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
			out.URL.Path = target.Path + restPath
			out.URL.RawPath = target.EscapedPath() + rest
			q := out.URL.Query()
			if q.Has(queryAccessToken) {
				q.Del(queryAccessToken)
				out.URL.RawQuery = q.Encode()
			}
			// The guest sees the name the client used.
			out.Host = pr.In.Host
			for _, h := range []string{headerAccessToken, "Authorization", "X-API-Key", "X-Wrenn-Team"} {
				out.Header.Del(h)
			}
			pr.SetXForwarded()
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var b errorBody
			b.Error.Code = errdefs.Code(errdefs.ErrUnavailable)
			b.Error.Message = fmt.Sprintf("sandbox %s port %d did not answer", sb.ID, port)
			loggerFrom(r).Debug("port proxy", "sandbox_id", sb.ID, "port", port, "err", err)
			writeJSON(w, http.StatusBadGateway, b)
		},
	}
	rp.ServeHTTP(w, r)
}

// isUpgrade reports whether r asks to switch protocols (a WebSocket).
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// http1Transport returns a copy of rt limited to HTTP/1.1: an upgrade
// cannot travel over HTTP/2, which the agent connection otherwise
// negotiates. The copy keeps no idle connections (the upgraded one is
// taken over by the proxy).
func http1Transport(rt http.RoundTripper) interface {
	http.RoundTripper
	CloseIdleConnections()
} {
	t, ok := rt.(*http.Transport)
	if !ok {
		t = http.DefaultTransport.(*http.Transport)
	}
	c := t.Clone()
	c.ForceAttemptHTTP2 = false
	c.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if c.TLSClientConfig != nil {
		c.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	c.Protocols = new(http.Protocols)
	c.Protocols.SetHTTP1(true)
	c.DisableKeepAlives = true
	return c
}
