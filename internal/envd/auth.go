package envd

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
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

// signature is E2B's pre-signed /files URL scheme, computed from the token:
// "v1_" + unpadded base64 of sha256("path:operation:username:token[:exp]").
// Callers hold at least a read lock.
func (t *accessToken) signature(path, op, user string, exp string) string {
	parts := []string{path, op, user, string(t.value)}
	if exp != "" {
		parts = append(parts, exp)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, ":")))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// checkSignature accepts a /files request whose query carries a valid,
// unexpired signature for its path, operation and user.
func (t *accessToken) checkSignature(r *http.Request, now time.Time) bool {
	q := r.URL.Query()
	sig := q.Get("signature")
	if sig == "" {
		return false
	}
	var op string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		op = "read"
	case http.MethodPost:
		op = "write"
	default:
		return false
	}
	exp := q.Get("signature_expiration")
	if exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || n < now.Unix() {
			return false
		}
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.value == nil {
		return false
	}
	want := t.signature(q.Get("path"), op, q.Get("username"), exp)
	return subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1
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
