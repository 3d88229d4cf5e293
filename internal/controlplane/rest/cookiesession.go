package rest

// Cookie sessions for the dashboard (internal/controlplane/webui).
//
// POST /v1/auth/session logs in like /v1/auth/login but puts the session
// token in an HttpOnly cookie instead of the body, so page scripts never
// see it. DELETE /v1/auth/session logs out: the token is revoked on the
// server and the cookie cleared.
//
// A cookie is sent by the browser whoever made the request, so a request
// authenticated by the cookie alone is CSRF-checked: besides SameSite=Strict,
// every unsafe method must carry the X-Wrenn-CSRF header, which a
// cross-site form cannot send and a cross-site script cannot either
// without a CORS preflight this API never grants. Requests with an
// Authorization or X-API-Key header are not cookie-authenticated and are
// unaffected. WebSocket upgrades are GETs; they are covered by the origin
// check every WebSocket route makes.
//
// The team a cookie session acts for: the X-Wrenn-Team header, or else
// the wrenn_team cookie, which the dashboard sets when the user switches
// team (it is not a secret: membership is checked on every request). The
// cookie is what a WebSocket or a download link, which cannot send
// headers, carries.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

const (
	// SessionCookie holds the session token of a dashboard login.
	SessionCookie = "wrenn_session"
	// TeamCookie names the team a cookie session acts for.
	TeamCookie = "wrenn_team"
	// CSRFHeader must be present (any non-empty value) on unsafe requests
	// authenticated by SessionCookie.
	CSRFHeader = "X-Wrenn-CSRF"
)

// setSessionCookie answers a successful cookie login.
func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, sess api.Session) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: sess.Token, Path: "/",
		Expires: sess.ExpiresAt, HttpOnly: true, Secure: s.overTLS(r),
		SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	// The body is the Session without its token, which only the cookie carries.
	writeJSON(w, http.StatusOK, api.CookieSession{ExpiresAt: sess.ExpiresAt, User: sess.User, Team: sess.Team})
}

// logout revokes the cookie's (or the bearer's) session token and clears
// the cookie. It answers 204 even when the token was already invalid:
// the caller's goal, being logged out, holds either way.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	tok := ""
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		if r.Header.Get(CSRFHeader) == "" {
			writeError(w, r, errCSRF)
			return
		}
		tok = c.Value
	} else if h := r.Header.Get("Authorization"); h != "" {
		if t, err := credential(r); err == nil {
			tok = t
		}
	}
	if tok != "" {
		if _, err := s.sessions().Verify(tok, s.clk.Now()); err == nil {
			// The token's own expiry bounds how long it must be remembered.
			if err := s.revokeSession(r.Context(), tok); err != nil {
				writeError(w, r, err)
				return
			}
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.overTLS(r), SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
}

// overTLS reports whether the browser reached us over HTTPS: our own TLS,
// or a trusted reverse proxy (WRENN_TRUSTED_PROXIES) that says so in
// X-Forwarded-Proto. The session cookie is then Secure.
func (s *Server) overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.clientIP.TrustedPeer(r) && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

func (s *Server) sessionTTL() time.Duration {
	if t := s.sessions().TTL; t > 0 {
		return t
	}
	return auth.DefaultSessionTTL
}

// Guest content on the API's origin.
//
// The path form of the port proxy (/v1/sandboxes/{id}/ports/{port}/...)
// and file downloads serve bytes a sandbox chose on the very origin the
// dashboard's cookie belongs to. Unchecked, a page served by any tenant's
// sandbox (a public port needs no credentials to reach) could read the
// visitor's session through same-origin requests, or overwrite it with a
// Set-Cookie. So such responses are made a sandboxed, opaque origin
// (CSP sandbox without allow-same-origin: no cookies, no same-origin
// requests), cannot set this API's cookies, and requests to guests never
// carry them. The host-name form ({port}-{id}.{domain}) is another origin
// and keeps full powers.

// guestContentCSP is the policy of guest content on the API's origin.
const guestContentCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// apiCookie reports whether a cookie name is one of this API's.
func apiCookie(name string) bool {
	return strings.EqualFold(name, SessionCookie) || strings.EqualFold(name, TeamCookie)
}

// dropAPICookies removes this API's cookies from a request to a guest.
func dropAPICookies(h http.Header) {
	vals := h.Values("Cookie")
	if len(vals) == 0 {
		return
	}
	var keep []string
	for _, v := range vals {
		for _, part := range strings.Split(v, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name != "" && !apiCookie(name) {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
	}
	h.Del("Cookie")
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

// isolateGuestContent marks guest bytes served on the API's origin.
func isolateGuestContent(h http.Header) {
	h.Add("Content-Security-Policy", guestContentCSP)
	h.Set("X-Content-Type-Options", "nosniff")
}

// isolateGuestResponse is isolateGuestContent for a proxied guest
// response, which also may not set this API's cookies.
func isolateGuestResponse(resp *http.Response) error {
	if vals := resp.Header.Values("Set-Cookie"); len(vals) > 0 {
		resp.Header.Del("Set-Cookie")
		for _, v := range vals {
			name, _, _ := strings.Cut(strings.TrimSpace(v), "=")
			if !apiCookie(strings.TrimSpace(name)) {
				resp.Header.Add("Set-Cookie", v)
			}
		}
	}
	isolateGuestContent(resp.Header)
	return nil
}

var errCSRF = errdefs.New(errdefs.ErrPermissionDenied,
	"this request is authenticated by the session cookie and so must carry the "+CSRFHeader+" header (the dashboard sends it; other clients should use a bearer token or an API key)")

// cookieCredential returns the session cookie's token when the request
// carries no other credential, after the CSRF check for unsafe methods.
// ok is false when there is no cookie.
func cookieCredential(r *http.Request) (tok string, ok bool, err error) {
	if r.Header.Get("Authorization") != "" || r.Header.Get(apiKeyHeader) != "" {
		return "", false, nil
	}
	if _, ok, _ := wsBearer(r); ok {
		return "", false, nil // an explicit credential wins over the cookie
	}
	c, cerr := r.Cookie(SessionCookie)
	if cerr != nil || c.Value == "" {
		return "", false, nil
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if r.Header.Get(CSRFHeader) == "" {
			return "", true, errCSRF
		}
	}
	return c.Value, true, nil
}

// revokeSession records a logged-out session token (its hash) in the
// store until it would have expired anyway, for every replica and past
// restarts; expired records are dropped on the way.
func (s *Server) revokeSession(ctx context.Context, tok string) error {
	now := s.clk.Now()
	h := sha256.Sum256([]byte(tok))
	if err := s.q.RevokeSession(ctx, store.RevokeSessionParams{TokenHash: h[:], ExpiresAt: now.Add(s.sessionTTL())}); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if _, err := s.q.DeleteExpiredRevokedSessions(ctx, now); err != nil {
		s.log.Warn("drop expired session revocations", "err", err)
	}
	return nil
}
