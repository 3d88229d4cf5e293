// Package filesig is E2B's pre-signed /files URL scheme, which envd checks
// and wrenn-cp's envd proxy checks again before a request reaches the
// agent: "v1_" + unpadded base64 of
// sha256("path:operation:username:token[:expiration]"), operation "read"
// for GET and HEAD and "write" for POST, expiration (Unix seconds, query
// signature_expiration) not passed.
package filesig

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sign is the signature of a /files URL for path, op ("read" or "write"),
// user and exp ("" for none) under token.
func Sign(path, op, user, token, exp string) string {
	parts := []string{path, op, user, token}
	if exp != "" {
		parts = append(parts, exp)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, ":")))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Operation is the signed operation a method performs ("" for a method no
// signature admits).
func Operation(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "read"
	case http.MethodPost:
		return "write"
	}
	return ""
}

// Valid reports whether query q of a method request carries a signature
// made with token, unexpired at now. Comparison is in constant time.
func Valid(method string, q url.Values, token string, now time.Time) bool {
	sig, op := q.Get("signature"), Operation(method)
	if sig == "" || op == "" || token == "" {
		return false
	}
	exp := q.Get("signature_expiration")
	if exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || n < now.Unix() {
			return false
		}
	}
	want := Sign(q.Get("path"), op, q.Get("username"), token, exp)
	return subtle.ConstantTimeCompare([]byte(want), []byte(sig)) == 1
}
