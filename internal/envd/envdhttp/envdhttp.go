// Package envdhttp writes envd's plain-HTTP responses (the routes that are
// not Connect RPC) in one shape.
//
// Errors keep E2B's envd body, {"code": <HTTP status>, "message": "..."}, so
// E2B's SDKs read them, and add "kind", the machine-readable error kind from
// errdefs.Code ("not_found", "invalid_argument", ...).
package envdhttp

import (
	"encoding/json"
	"net/http"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// ErrorBody is the JSON body of every envd HTTP error.
type ErrorBody struct {
	Code    int    `json:"code"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// WriteError writes err with the status its kind maps to. The caller must not
// write to w afterwards.
func WriteError(w http.ResponseWriter, err error) {
	status := errdefs.HTTPStatus(err)
	WriteJSON(w, status, ErrorBody{Code: status, Kind: errdefs.Code(err), Message: err.Error()})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
