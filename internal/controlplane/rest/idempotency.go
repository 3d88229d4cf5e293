package rest

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// idempotencyHeader names the key that makes a create, fork or snapshot
// idempotent (api/openapi.yaml, IdempotencyKey).
const idempotencyHeader = "Idempotency-Key"

// idempotencyOf reads a request's Idempotency-Key (nil when it has none)
// with the hash of the request's canonical form: method, route pattern,
// path parameters and body bytes. The body is read here (under the JSON
// cap) and put back for the handler to decode.
func idempotencyOf(w http.ResponseWriter, r *http.Request) (*sandboxes.Idempotency, error) {
	vals := r.Header.Values(idempotencyHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	if len(vals) > 1 {
		return nil, invalid("%s: send one", idempotencyHeader)
	}
	if err := sandboxes.CheckIdempotencyKey(vals[0]); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errdefs.New(errdefs.ErrTooLarge, "request body over %d bytes", maxJSONBody)
		}
		return nil, bodyReadError(err)
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	route, params := r.URL.Path, []string(nil)
	if rc := chi.RouteContext(r.Context()); rc != nil {
		route, params = rc.RoutePattern(), rc.URLParams.Values
	}
	return &sandboxes.Idempotency{Key: vals[0], RequestHash: sandboxes.HashRequest(r.Method, route, params, raw)}, nil
}
