package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/rpclimit"
	"github.com/wrenn/wrenn/internal/store"
)

var (
	errNotFoundRoute    = errdefs.New(errdefs.ErrNotFound, "no such route")
	errMethodNotAllowed = errdefs.New(errdefs.ErrInvalidArgument, "method not allowed on this route")
	// errBackendUnavailable answers for a database that is away.
	errBackendUnavailable = errdefs.New(errdefs.ErrUnavailable, "the service is briefly unavailable (its database is restarting or unreachable); try again")
)

// unavailableRetryAfter is the Retry-After (seconds) of a 503 that did not
// set its own.
const unavailableRetryAfter = "5"

// maxJSONBody caps JSON request bodies (uploads are streamed separately).
const maxJSONBody = 1 << 20

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with the error's HTTP status and machine-readable
// code. Internal errors are logged and their text is not shown.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if bodyTimedOut(r) || errors.Is(err, errBodyTooSlow) {
		// Whatever the handler made of the failed read, the client was
		// too slow; an HTTP/1 connection cannot be reused. (On HTTP/2 the
		// stream alone failed; "Connection: close" would end every other
		// stream of the client's connection.)
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		if isE2BPath(r.URL.Path) {
			writeJSON(w, http.StatusRequestTimeout, e2bError(http.StatusRequestTimeout, errBodyTooSlow.Error(), "request_timeout"))
			return
		}
		var b errorBody
		b.Error.Code, b.Error.Message = "request_timeout", errBodyTooSlow.Error()
		writeJSON(w, http.StatusRequestTimeout, b)
		return
	}
	status := errdefs.HTTPStatus(err)
	if status == http.StatusInternalServerError && store.IsUnavailable(err) {
		// PostgreSQL restarting or a connection cut mid-statement: the
		// same request may work in a moment.
		loggerFrom(r).Warn("request failed: a backing service is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		err, status = errBackendUnavailable, http.StatusServiceUnavailable
	}
	var b errorBody
	b.Error.Code = errdefs.Code(err)
	b.Error.Message = err.Error()
	var overLimit *rpclimit.LimitError
	internal := status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout
	if errors.As(err, &overLimit) {
		// A guest or agent answered past a read cap: the cap is the
		// caller's answer (their own guest may be the culprit), and it
		// names nothing internal.
		loggerFrom(r).Warn("reply over a read limit", "method", r.Method, "path", r.URL.Path, "err", err)
		b.Error.Message = overLimit.Error()
	} else if internal {
		loggerFrom(r).Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		b.Error.Message = "internal error"
	} else if msg, hide := hostFailure(err); hide {
		loggerFrom(r).Warn("host agent unreachable", "method", r.Method, "path", r.URL.Path, "err", err)
		b.Error.Message = msg
	}
	if errors.Is(err, errMethodNotAllowed) {
		status = http.StatusMethodNotAllowed
	}
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		// Unavailable is transient (a host unreachable or full, the
		// database away): say when to try again, as the API promises.
		w.Header().Set("Retry-After", unavailableRetryAfter)
	}
	if isE2BPath(r.URL.Path) {
		// E2B's SDKs parse {"code": <status>, "message"} on every error
		// (a missing key crashes the Python SDK; the JS SDK tells a
		// missing sandbox by code 404).
		writeJSON(w, status, e2bError(status, b.Error.Message, b.Error.Code))
		return
	}
	writeJSON(w, status, b)
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a JSON body into v: at most maxJSONBody bytes, no
// unknown fields, exactly one value, and no key or string holding NUL or
// invalid UTF-8 (checkJSONText names the field). An empty body decodes as
// {} when optional is true.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeJSONBody(w, r, v, optional, true)
}

// decodeJSONBody is decodeJSON with the choice to refuse unknown fields
// (see decodeJSONStrict).
func decodeJSONBody(w http.ResponseWriter, r *http.Request, v any, optional, strict bool) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errdefs.New(errdefs.ErrInvalidArgument, "content type %q: send application/json", ct)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errdefs.New(errdefs.ErrTooLarge, "request body over %d bytes", maxJSONBody)
		}
		return bodyReadError(err)
	}
	return decodeJSONStrict(raw, v, optional, strict)
}

// decodeJSONBytes is decodeJSON's parsing and checking, on a body already
// read (the fuzz target drives it directly).
func decodeJSONBytes(raw []byte, v any, optional bool) error {
	return decodeJSONStrict(raw, v, optional, true)
}

// decodeJSONStrict is decodeJSONBytes with the choice to refuse unknown
// fields: /v1 refuses them; the E2B-compatible routes ignore them, as
// E2B's SDKs send fields a newer API version added.
func decodeJSONStrict(raw []byte, v any, optional, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		switch {
		case errors.Is(err, io.EOF) && optional:
			return nil
		case errors.Is(err, io.EOF):
			return errdefs.New(errdefs.ErrInvalidArgument, "request body required")
		}
		return errdefs.New(errdefs.ErrInvalidArgument, "invalid JSON body: %s", jsonErrorText(err))
	}
	if dec.More() {
		return errdefs.New(errdefs.ErrInvalidArgument, "invalid JSON body: more than one value")
	}
	return checkJSONText(raw)
}

// jsonErrorText is a decode error's text made safe to show: the decoder
// quotes parts of the input, which may be invalid UTF-8.
func jsonErrorText(err error) string {
	return strings.ToValidUTF8(err.Error(), "\ufffd")
}

// bodyReadError classifies a failure to read a request body: the client
// went away or was too slow (see bodyTimeout), never a server fault.
func bodyReadError(err error) error {
	if errors.Is(err, errBodyTooSlow) {
		return errBodyTooSlow
	}
	return errdefs.New(errdefs.ErrInvalidArgument, "read request body: %v", err)
}

// invalid is a shorthand for an invalid-argument error.
func invalid(format string, args ...any) error {
	return errdefs.New(errdefs.ErrInvalidArgument, format, args...)
}

// notFound is what every missing or other-team resource answers.
func notFound(kind, id string) error {
	return errdefs.New(errdefs.ErrNotFound, "%s %q not found", kind, id)
}
