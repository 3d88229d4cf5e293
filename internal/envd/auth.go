package envd

import (
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/envd/filesig"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// accessTokenHeader carries the token POST /init set, as in E2B's envd.
const accessTokenHeader = "X-Access-Token"

// accessToken is the secret every request must present once /init set it.
type accessToken struct {
	mu    sync.RWMutex
	value []byte // nil: no token, every route open
}

func (t *accessToken) set(v string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v == "" {
		t.value = nil
		return
	}
	t.value = []byte(v)
}

// check reports whether a request presenting got may pass: always while
// no token is set, E2B's behaviour, since the host calls /init first.
func (t *accessToken) check(got string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.value == nil {
		return true
	}
	return subtle.ConstantTimeCompare(t.value, []byte(got)) == 1
}

// checkSignature accepts a /files request whose query carries a valid,
// unexpired signature for its path, operation and user (filesig).
func (t *accessToken) checkSignature(r *http.Request, now time.Time) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.value == nil {
		return false
	}
	return filesig.Valid(r.Method, r.URL.Query(), string(t.value), now)
}

// requireToken rejects requests without the access token once one is set.
// Requests under rpcPrefixes get a Connect unauthenticated error in their
// own protocol; others get envd's JSON 401. A /files request may instead
// carry a signature made with the token, for E2B's pre-signed URLs.
func (s *server) requireToken(next http.Handler, rpcPrefixes []string) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get(accessTokenHeader)
		ok := s.token.check(header)
		signed := header == "" && r.URL.Path == "/files" && r.URL.Query().Has("signature")
		if !ok && signed {
			ok = s.token.checkSignature(r, s.now())
		}
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		msg := "missing access token: send header " + accessTokenHeader
		switch {
		case header != "":
			msg = "wrong access token in header " + accessTokenHeader
		case signed:
			msg = "invalid or expired signature"
		}
		err := errdefs.New(errdefs.ErrUnauthenticated, "%s", msg)
		if slices.ContainsFunc(rpcPrefixes, func(p string) bool { return strings.HasPrefix(r.URL.Path, p) }) {
			_ = errw.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
			return
		}
		envdhttp.WriteError(w, err)
	})
}
