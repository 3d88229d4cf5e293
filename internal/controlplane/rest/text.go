package rest

// Text validation at the edge. PostgreSQL's text columns reject NUL and
// its jsonb rejects \u0000; protobuf strings (the agent calls) must be
// valid UTF-8. A string that breaks either used to travel to the store or
// the agent and come back as a 500. Every string the API reads from a
// request (path parameters, query parameters, JSON keys and values) is
// checked here instead, and a bad one answers 400 invalid_argument naming
// where it was.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
)

// maxJSONDepth bounds the nesting of a JSON body. No request type comes
// close; a deeper document is an attack on the parser, not a request.
const maxJSONDepth = 64

// textProblem says what is wrong with s for the store, or "" when nothing.
func textProblem(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return "contains a NUL byte"
	}
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	return ""
}

// checkText returns an invalid-argument error naming field when v
// contains NUL or invalid UTF-8.
func checkText(field, v string) error {
	if p := textProblem(v); p != "" {
		return invalid("%s %s", field, p)
	}
	return nil
}

// checkRequestText rejects a request whose path or query holds NUL or
// invalid UTF-8, naming the path parameter (found by matching the route)
// or the query parameter. The port proxy's guest path and query belong to
// the guest and are passed through untouched; its sandbox id is checked by
// proxyPort itself.
func checkRequestText(mux *chi.Mux) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := requestTextError(mux, r); err != nil {
				writeError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func requestTextError(mux *chi.Mux, r *http.Request) error {
	pathBad := textProblem(r.URL.Path) != "" || textProblem(r.URL.RawPath) != ""
	queryBad := !queryClean(r.URL.RawQuery)
	if !pathBad && !queryBad {
		return nil
	}
	// Only a bad request pays for a second route match.
	rctx := chi.NewRouteContext()
	routePath := r.URL.Path
	if r.URL.RawPath != "" {
		routePath = r.URL.RawPath
	}
	pattern := mux.Find(rctx, r.Method, routePath)
	proxied := strings.Contains(pattern, "/ports/{port}")
	if pathBad {
		// Named parameters first; "*" keys are mounts' remainders, and
		// only the route's own trailing wildcard is a parameter.
		keys, vals := rctx.URLParams.Keys, rctx.URLParams.Values
		for i, k := range keys {
			if k == "*" {
				continue
			}
			if err := checkText("path parameter "+k, unescapeParam(r, vals[i])); err != nil {
				return err
			}
		}
		if n := len(keys); n > 0 && keys[n-1] == "*" && strings.HasSuffix(pattern, "*") && !proxied {
			if err := checkText("path", unescapeParam(r, vals[n-1])); err != nil {
				return err
			}
		}
		if !proxied {
			return invalid("request path %s", textProblem(r.URL.Path+r.URL.RawPath))
		}
	}
	if queryBad && !proxied {
		return queryTextError(r.URL.RawQuery)
	}
	return nil
}

// unescapeParam is a path parameter as the handler will use it: chi
// matches on the escaped path when the URL has one.
func unescapeParam(r *http.Request, v string) string {
	if r.URL.RawPath != "" {
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
	}
	return v
}

// queryClean reports whether every key and value of a raw query decodes to
// clean text (the common case: no escapes, plain ASCII, checked without
// allocating).
func queryClean(raw string) bool {
	if raw == "" {
		return true
	}
	if !strings.ContainsAny(raw, "%\x00") && utf8.ValidString(raw) {
		return true
	}
	return queryTextError(raw) == nil
}

// queryTextError names the first query parameter whose name or value is
// not clean text. Pairs that do not decode are left to the handlers
// (url.Values drops them).
func queryTextError(raw string) error {
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			continue
		}
		if p := textProblem(key); p != "" {
			return invalid("a query parameter name %s", p)
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			continue
		}
		if err := checkText("query parameter "+strconv.Quote(key), val); err != nil {
			return err
		}
	}
	return nil
}

// checkJSONText walks a JSON document that has already decoded and returns
// an invalid-argument error naming the first key or string value that
// holds NUL (sent as \u0000) or invalid UTF-8 (which encoding/json would
// otherwise silently turn into U+FFFD), or that nests deeper than
// maxJSONDepth.
func checkJSONText(raw []byte) error {
	badByte := -1
	if !utf8.Valid(raw) {
		badByte = firstInvalidUTF8(raw)
	}
	if badByte < 0 && !bytes.Contains(raw, []byte(`\u0000`)) && maxDepthOK(raw) {
		return nil
	}
	type frame struct {
		obj     bool
		wantKey bool
		key     string
		idx     int
	}
	var stack []frame
	// path names the value inside frames (each frame's current key or
	// index), or top when frames is empty.
	path := func(frames []frame, top string) string {
		var b strings.Builder
		for _, f := range frames {
			if f.obj {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(fieldName(f.key))
			} else {
				b.WriteString("[" + strconv.Itoa(f.idx) + "]")
			}
		}
		if b.Len() == 0 {
			return top
		}
		return "field " + strconv.Quote(b.String())
	}
	// afterValue moves the innermost container past a complete value.
	afterValue := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].obj {
				stack[n-1].wantKey = true
			} else {
				stack[n-1].idx++
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// Decode accepted the document; a walk error means nothing
			// more to check here.
			return nil
		}
		end := dec.InputOffset()
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return invalid("request body nests deeper than %d levels", maxJSONDepth)
				}
				stack = append(stack, frame{obj: t == '{', wantKey: true})
				continue
			case '}', ']':
				stack = stack[:len(stack)-1]
				afterValue()
				continue
			}
		case string:
			isKey := len(stack) > 0 && stack[len(stack)-1].obj && stack[len(stack)-1].wantKey
			p := textProblem(t)
			if p == "" && badByte >= int(start) && badByte < int(end) {
				p = "is not valid UTF-8"
			}
			if isKey {
				if p != "" {
					return invalid("a key in %s %s", path(stack[:len(stack)-1], "the top-level object"), p)
				}
				stack[len(stack)-1].key = t
				stack[len(stack)-1].wantKey = false
				continue
			}
			if p != "" {
				return invalid("%s %s", path(stack, "the request body"), p)
			}
		}
		afterValue()
	}
}

// maxDepthOK reports whether raw nests at most maxJSONDepth containers
// deep, counting brackets outside strings.
func maxDepthOK(raw []byte) bool {
	depth, inStr, esc := 0, false, false
	for _, c := range raw {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
			if depth > maxJSONDepth {
				return false
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return true
}

// fieldName shows a JSON key in a field path: as is when it is a plain
// identifier, quoted otherwise.
func fieldName(k string) string {
	for _, c := range k {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return strconv.Quote(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}
