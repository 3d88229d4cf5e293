package envd

import (
	"errors"
	"net/http"
	"strings"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// allow serves h for method (and HEAD alongside GET) and answers anything
// else with a JSON 405, so every envd route errs in the same shape.
func allow(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
			h(w, r)
			return
		}
		w.Header().Set("Allow", method)
		envdhttp.WriteJSON(w, http.StatusMethodNotAllowed, envdhttp.ErrorBody{
			Code:    http.StatusMethodNotAllowed,
			Kind:    errdefs.Code(errdefs.ErrInvalidArgument),
			Message: "method " + r.Method + " is not allowed on " + r.URL.Path + "; use " + method,
		})
	})
}

// handleHealth answers 204 whenever envd can serve at all; it needs no
// token because the host polls it before /init.
func handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func handleNotFound(w http.ResponseWriter, r *http.Request) {
	envdhttp.WriteError(w, errdefs.New(errdefs.ErrNotFound, "no route %s %s", r.Method, r.URL.Path))
}

// handleEnvs returns the environment variables /init set.
func (s *server) handleEnvs(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	envdhttp.WriteJSON(w, http.StatusOK, s.defs.Env())
}

// handleMetrics returns the guest's resource usage.
func (s *server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	m, err := s.metrics.Sample()
	if err != nil {
		// The cause (a /proc read) goes to the log; clients get an opaque 500.
		s.logger.Error("sample guest metrics", "err", err)
		envdhttp.WriteError(w, errors.New("could not sample guest metrics"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	envdhttp.WriteJSON(w, http.StatusOK, m)
}

// corsExposed are the response headers browsers may read: Connect's gRPC
// trailers-in-headers and the ones E2B's envd exposes.
var corsExposed = strings.Join([]string{
	"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin",
	"Location", "Cache-Control", "X-Content-Type-Options",
}, ", ")

// withCORS lets browser SDKs call envd from any origin, as E2B's envd
// does. It is safe with "*" because credentials travel in the
// X-Access-Token header, never in cookies. It sits outside the token check
// because preflight requests carry no custom headers.
func withCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "HEAD, GET, POST, PUT, PATCH, DELETE")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposed)
		next.ServeHTTP(w, r)
	})
}
