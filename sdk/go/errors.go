package wrenn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is an error answered by the Wrenn API: the HTTP status and the
// machine-readable code and message from its {"error":{"code","message"}}
// body. Compare kinds with errors.Is(err, wrenn.ErrNotFound) or the IsXxx
// helpers; compare codes exactly with Code.
type Error struct {
	// Status is the HTTP status (0 for an error frame on a WebSocket).
	Status int
	// Code is the API's machine-readable code, e.g. "not_found". When the
	// body had none (a proxy's HTML page, say) it is derived from Status.
	Code string
	// Message is the server's human-readable explanation.
	Message string
	// RetryAfter is how long the server asked the caller to wait (the
	// Retry-After header), zero when it did not say.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// Is reports whether target is the sentinel for e's kind, so that
// errors.Is(err, wrenn.ErrNotFound) works through wrapping.
func (e *Error) Is(target error) bool {
	k, ok := target.(kind)
	if !ok {
		return false
	}
	if k == ErrConflict {
		return e.Status == http.StatusConflict || e.Code == "already_exists" || e.Code == "failed_precondition"
	}
	return string(k) == e.Code
}

// kind is the type of the sentinel errors; an *Error matches the sentinel
// named by its code.
type kind string

func (k kind) Error() string { return strings.ReplaceAll(string(k), "_", " ") }

// Sentinel errors, one per API error code. Match them with errors.Is.
const (
	ErrInvalidArgument    kind = "invalid_argument"
	ErrUnauthorized       kind = "unauthenticated"
	ErrPermissionDenied   kind = "permission_denied"
	ErrNotFound           kind = "not_found"
	ErrAlreadyExists      kind = "already_exists"
	ErrFailedPrecondition kind = "failed_precondition"
	ErrResourceExhausted  kind = "resource_exhausted"
	ErrRateLimited        kind = "rate_limited"
	ErrPayloadTooLarge    kind = "payload_too_large"
	ErrUnavailable        kind = "unavailable"
	ErrDeadlineExceeded   kind = "deadline_exceeded"
	ErrInternal           kind = "internal"
	// ErrIdempotencyKeyReused: the idempotency key was already used for a
	// different request (422).
	ErrIdempotencyKeyReused kind = "idempotency_key_reused"
	// ErrConflict matches any 409: already_exists or failed_precondition
	// (e.g. pausing a sandbox that is not running).
	ErrConflict kind = "conflict"
)

// IsNotFound reports whether err is a not_found API error (a missing
// resource or another team's, which the API does not tell apart).
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsUnauthorized reports whether the API rejected the credentials.
func IsUnauthorized(err error) bool { return errors.Is(err, ErrUnauthorized) }

// IsPermissionDenied reports whether the caller lacks the role for the call.
func IsPermissionDenied(err error) bool { return errors.Is(err, ErrPermissionDenied) }

// IsConflict reports whether err is a 409: the resource already exists or
// is in the wrong state for the call.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsInvalidArgument reports whether the API rejected the request's input.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsUnavailable reports whether the API could not serve the call now (no
// host with room, a host unreachable); retrying later may succeed.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsRateLimited reports whether the API refused the call for sending too
// many; RetryAfter says how long it asked to wait.
func IsRateLimited(err error) bool { return errors.Is(err, ErrRateLimited) }

// RetryAfter returns the wait the API asked for with its Retry-After
// header, and whether it gave one.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return 0, false
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// errorFromResponse builds an *Error from a non-2xx response. It reads at
// most maxErrorBody bytes and does not close the body.
func errorFromResponse(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var b struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &b) == nil && b.Error != nil {
		e.Code, e.Message = b.Error.Code, b.Error.Message
	} else {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
	}
	if e.Code == "" {
		e.Code = codeForStatus(resp.StatusCode)
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// errorFromFrame decodes the error member of a WebSocket error frame. The
// member is the Error schema ({"error":{"code","message"}}); a bare
// {"code","message"} is accepted too because the route text shows that
// shape.
func errorFromFrame(raw json.RawMessage) *Error {
	var wrapped struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	e := &Error{}
	if err := json.Unmarshal(raw, &wrapped); err != nil {
		return &Error{Code: "internal", Message: "undecodable error frame: " + string(raw)}
	}
	if wrapped.Error != nil {
		e.Code, e.Message = wrapped.Error.Code, wrapped.Error.Message
	} else {
		e.Code, e.Message = wrapped.Code, wrapped.Message
	}
	if e.Code == "" {
		e.Code = "internal"
	}
	return e
}

// codeForStatus is the API code a status most likely carries, for error
// bodies that had none.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_argument"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "permission_denied"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "already_exists"
	case http.StatusRequestEntityTooLarge:
		return "payload_too_large"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return "deadline_exceeded"
	}
	return "internal"
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
