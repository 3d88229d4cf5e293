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
	s.proxyPort(w, r, id, port, rest, true)
}

// hostProxy serves requests addressed to a sandbox rather than to the
// API, and passes everything else to next. Two forms address one:
//   - the headers E2b-Sandbox-Id and E2b-Sandbox-Port, both present, on any
//     path (E2B's SDKs with E2B_SANDBOX_URL: the URL is wrenn-cp's own, so
//     the headers win over the API's routes);
//   - when Domain is set, the host name {port}-{sandboxID}.{domain} (any
//     port suffix on Host).
//
// Port 49983 is envd's (see envdproxy.go); any other is a user port.
func (s *Server) hostProxy(next http.Handler) http.Handler {
	suffix := ""
	if s.deps.Domain != "" {
		suffix = "." + strings.ToLower(strings.Trim(s.deps.Domain, "."))
	}
	proxy := s.recoverPanics(s.logRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, port, _ := sandboxTarget(r, suffix)
		rest := r.URL.EscapedPath()
		if n, err := strconv.Atoi(port); err == nil && n == envdPort {
			s.proxyEnvd(w, r, id, rest)
			return
		}
		s.proxyPort(w, r, id, port, rest, false)
	})))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := sandboxTarget(r, suffix); ok {
			proxy.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sandboxTarget reports which sandbox and port r is addressed to, by its
// headers or (suffix not empty) its host name.
func sandboxTarget(r *http.Request, suffix string) (id, port string, ok bool) {
	id, port = strings.TrimSpace(r.Header.Get(headerSandboxID)), strings.TrimSpace(r.Header.Get(headerSandboxPort))
	if id != "" && port != "" {
		return id, port, true
	}
	if suffix == "" {
		return "", "", false
	}
	return sandboxHost(r.Host, suffix)
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

// proxyPort authorizes a request for a sandbox's user port and forwards
// it, with rest (escaped, starting with '/') as the guest path. pathForm
// is the /v1/sandboxes/{id}/ports/{port} route, where envd's port is
// refused; on the host and header forms envd is served by proxyEnvd and
// never reaches here.
//
// Who passes, first match wins:
//   - anyone, on a port in the sandbox's public_ports, or on any port of a
//     sandbox created with public traffic (E2B's allowPublicTraffic);
//   - a caller with E2B's traffic access token (E2b-Traffic-Access-Token,
//     checked against traffic_token_hash);
//   - a caller with the sandbox's access token (X-Access-Token or
//     ?access_token=);
//   - a caller with credentials of the sandbox's team.
//
// A sandbox that carries a traffic token answers a caller with none of
// these 403 in E2B's words (its SDK users expect that); others 401.
func (s *Server) proxyPort(w http.ResponseWriter, r *http.Request, id, portStr, rest string, pathForm bool) {
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
		// Only the path form gets here with envd's port: its credentials
		// and its rules are a user port's, not envd's.
		writeError(w, r, errdefs.New(errdefs.ErrPermissionDenied, "port %d is envd's and is never proxied here: use the host name %d-%s.{domain} or the %s and %s headers",
			envdPort, envdPort, id, headerSandboxID, headerSandboxPort))
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
	forward := func(w http.ResponseWriter, r *http.Request) { s.forwardPort(w, r, sb, port, rest, false, pathForm) }
	switch {
	case slices.Contains(sb.PublicPorts, int32(port)) || sb.PublicTraffic:
		forward(w, r)
	case r.Header.Get(headerTrafficToken) != "":
		if len(sb.TrafficTokenHash) == 0 || subtle.ConstantTimeCompare(hashToken(r.Header.Get(headerTrafficToken)), sb.TrafficTokenHash) != 1 {
			writeTrafficRefusal(w, id, "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is invalid")
			return
		}
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
	case len(sb.TrafficTokenHash) > 0 && r.Header.Get(apiKeyHeader) == "" && !isBearer(r.Header.Get("Authorization")):
		writeTrafficRefusal(w, id, "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing")
	default:
		// Team credentials, checked by the API's own authentication.
		s.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if principal(r.Context()).TeamID != sb.TeamID {
				writeError(w, r, notFound("sandbox", id))
				return
			}
			// The credentials were the API's, not the guest's.
			s.forwardPort(w, r, sb, port, rest, true, pathForm)
		})).ServeHTTP(w, r)
	}
}

// writeTrafficRefusal answers as E2B's edge does a request to a sandbox's
// port without its traffic token.
func writeTrafficRefusal(w http.ResponseWriter, id, msg string) {
	writeJSON(w, http.StatusForbidden, struct {
		SandboxID string `json:"sandboxId"`
		Message   string `json:"message"`
		Code      int    `json:"code"`
	}{id, msg, http.StatusForbidden})
}

// forwardPort sends an authorized request to a user port, resuming a
// paused sandbox first when it asked for that. teamAuth: the request's
// Authorization header (if any) was the team's credential, which the
// guest must not see; otherwise it may be the guest app's own.
//
// apiOrigin: the request came by the path form, on the API's own origin,
// so the response is isolated from it (cookiesession.go).
func (s *Server) forwardPort(w http.ResponseWriter, r *http.Request, sb store.GetProxySandboxRow, port int, rest string, teamAuth, apiOrigin bool) {
	sb, err := s.resumeForTraffic(r.Context(), sb)
	if err != nil {
		writeError(w, r, errdefs.New(errdefs.ErrUnavailable, "sandbox %s is paused and did not resume: %s", sb.ID, s.resumeFailure(r, sb.ID, err)))
		return
	}
	if sb.State != stRunning {
		writeError(w, r, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s, not running", sb.ID, sb.State))
		return
	}
	gt := guestTarget{agentPath: "/sandboxes/" + url.PathEscape(sb.ID) + "/ports/" + strconv.Itoa(port), rest: rest, port: port, keepHost: true, dropAuthorization: teamAuth}
	if apiOrigin {
		gt.modifyResponse = isolateGuestResponse
	}
	s.forwardGuest(w, r, sb, gt,
		func(w http.ResponseWriter, r *http.Request, status int, msg string) {
			var b errorBody
			b.Error.Code = errdefs.Code(errdefs.ErrUnavailable)
			if status < 500 {
				b.Error.Code = errdefs.Code(errdefs.ErrInvalidArgument)
			}
			b.Error.Message = msg
			writeJSON(w, status, b)
		})
}

// guestTarget is where on the sandbox's agent a request goes.
type guestTarget struct {
	// agentPath is the agent's route (escaped), rest the guest path
	// (escaped, starting with '/').
	agentPath, rest string
	port            int
	// keepHost passes the client's Host on (a guest's web server sees the
	// name its client used).
	keepHost bool
	// dropAuthorization removes the Authorization header (it carried the
	// API's credentials). An API key in it is removed in any case.
	dropAuthorization bool
	// modifyResponse, if set, may rewrite the agent's response.
	modifyResponse func(*http.Response) error
}

// proxyCredentialHeaders are the control plane's credentials, which no
// guest sees. (The agent sets envd's X-Access-Token itself.)
var proxyCredentialHeaders = []string{headerAccessToken, apiKeyHeader, teamHeader, headerTrafficToken, headerSandboxID, headerSandboxPort}

// forwardGuest sends an authorized request for a running sandbox through
// its host agent, streaming both ways (WebSocket upgrades included, every
// write flushed, no deadline of its own). fail answers the failures met
// here.
func (s *Server) forwardGuest(w http.ResponseWriter, r *http.Request, sb store.GetProxySandboxRow, gt guestTarget, fail func(w http.ResponseWriter, r *http.Request, status int, msg string)) {
	if sb.HostID == nil || s.deps.Agents == nil {
		fail(w, r, http.StatusServiceUnavailable, fmt.Sprintf("sandbox %s has no reachable host", sb.ID))
		return
	}
	hc, base, err := s.deps.Agents.HTTP(r.Context(), sb.HostID.String())
	if err != nil {
		loggerFrom(r).Warn("guest proxy: reach host", "host_id", sb.HostID, "err", err)
		fail(w, r, http.StatusBadGateway, fmt.Sprintf("sandbox %s: its host is unreachable", sb.ID))
		return
	}
	target, err := url.Parse(strings.TrimRight(base, "/") + gt.agentPath)
	if err != nil {
		loggerFrom(r).Error("guest proxy: agent base URL", "base", base, "err", err)
		fail(w, r, http.StatusInternalServerError, "internal error")
		return
	}
	restPath, err := url.PathUnescape(gt.rest)
	if err != nil {
		fail(w, r, http.StatusBadRequest, fmt.Sprintf("path %q: %v", gt.rest, err))
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
			out.URL.RawPath = target.EscapedPath() + gt.rest
			q := out.URL.Query()
			if q.Has(queryAccessToken) {
				q.Del(queryAccessToken)
				out.URL.RawQuery = q.Encode()
			}
			if gt.keepHost {
				out.Host = pr.In.Host
			}
			for _, h := range proxyCredentialHeaders {
				out.Header.Del(h)
			}
			// The dashboard's session is never a guest's business.
			dropAPICookies(out.Header)
			// Other Authorization values (envd's Basic naming the guest
			// user, a guest app's own token) belong to the guest.
			if gt.dropAuthorization || isAPIKeyBearer(out.Header.Get("Authorization")) {
				out.Header.Del("Authorization")
			}
			pr.SetXForwarded()
		},
		Transport:      transport,
		FlushInterval:  -1,
		ModifyResponse: gt.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller left; nobody to answer
			}
			loggerFrom(r).Debug("guest proxy", "sandbox_id", sb.ID, "port", gt.port, "err", err)
			fail(w, r, http.StatusBadGateway, fmt.Sprintf("sandbox %s port %d did not answer", sb.ID, gt.port))
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
