// Package errdefs defines the kinds of error Wrenn components return and maps
// them, in one place each, to Connect codes and HTTP statuses.
//
// Code wraps a kind with context (fmt.Errorf("stat %s: %w", p, errdefs.ErrNotFound))
// or builds one with New; edges classify with errors.Is and never by message.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"syscall"

	"connectrpc.com/connect"
)

// Error kinds. Compare with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnavailable        = errors.New("unavailable")
	// ErrRateLimited: the caller sent too many requests; retry later.
	ErrRateLimited = errors.New("rate limited")
	// ErrTooLarge: a request body or upload exceeds its cap.
	ErrTooLarge = errors.New("payload too large")
	// ErrQuotaExceeded: the caller's team is at one of its limits (its
	// message names the limit and its value); free something or ask the
	// operator for more.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrIdempotencyKeyReused: an Idempotency-Key already used (within
	// its lifetime) for a different request of the same kind.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused")
)

// kindError carries a message for users and the kind for classification.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// New returns an error of the given kind whose message is the formatted text
// alone (the kind's own name is not appended).
func New(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// FromOS classifies an error from the os or syscall packages: a missing file
// becomes NotFound, EACCES/EPERM PermissionDenied, ENOSPC ResourceExhausted,
// and so on. The original error stays in the chain. Unknown errors are
// returned unchanged.
func FromOS(err error) error {
	if err == nil {
		return nil
	}
	var kind error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kind = ErrNotFound
	case errors.Is(err, fs.ErrExist):
		kind = ErrAlreadyExists
	case errors.Is(err, fs.ErrPermission):
		kind = ErrPermissionDenied
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		kind = ErrResourceExhausted
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR),
		errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EINVAL),
		errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP),
		errors.Is(err, syscall.EXDEV):
		kind = ErrInvalidArgument
	default:
		return err
	}
	return &wrapped{kind: kind, err: err}
}

// wrapped keeps both the kind and the original error reachable by errors.Is.
type wrapped struct {
	kind error
	err  error
}

func (w *wrapped) Error() string   { return w.err.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.kind, w.err} }

// ConnectCode maps an error to the Connect code clients see.
func ConnectCode(err error) connect.Code {
	switch {
	case errors.Is(err, ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, ErrAlreadyExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, ErrInvalidArgument):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrFailedPrecondition):
		return connect.CodeFailedPrecondition
	case errors.Is(err, ErrPermissionDenied):
		return connect.CodePermissionDenied
	case errors.Is(err, ErrUnauthenticated):
		return connect.CodeUnauthenticated
	case errors.Is(err, ErrResourceExhausted):
		return connect.CodeResourceExhausted
	case errors.Is(err, ErrUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, ErrRateLimited), errors.Is(err, ErrTooLarge), errors.Is(err, ErrQuotaExceeded):
		return connect.CodeResourceExhausted
	case errors.Is(err, ErrIdempotencyKeyReused):
		return connect.CodeFailedPrecondition
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeInternal
}

// ToConnect converts err to a *connect.Error with the matching code. Errors
// that are already Connect errors pass through unchanged.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(ConnectCode(err), err)
}

// FromConnect maps a Connect error received from a peer back to an error
// of the matching kind, so callers can keep using errors.Is.
func FromConnect(err error) error {
	if err == nil {
		return nil
	}
	var kind error
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		kind = ErrNotFound
	case connect.CodeAlreadyExists:
		kind = ErrAlreadyExists
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		kind = ErrInvalidArgument
	case connect.CodeFailedPrecondition:
		kind = ErrFailedPrecondition
	case connect.CodePermissionDenied:
		kind = ErrPermissionDenied
	case connect.CodeUnauthenticated:
		kind = ErrUnauthenticated
	case connect.CodeResourceExhausted:
		kind = ErrResourceExhausted
	case connect.CodeUnavailable:
		kind = ErrUnavailable
	case connect.CodeDeadlineExceeded:
		// The far side ran out of time: 504 deadline_exceeded, not 500.
		kind = context.DeadlineExceeded
	default:
		return err
	}
	return &wrapped{kind: kind, err: err}
}

// HTTPStatus maps an error to an HTTP status code.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrAlreadyExists):
		return http.StatusConflict
	case errors.Is(err, ErrInvalidArgument):
		return http.StatusBadRequest
	case errors.Is(err, ErrFailedPrecondition):
		return http.StatusConflict
	case errors.Is(err, ErrPermissionDenied):
		return http.StatusForbidden
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrResourceExhausted):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrRateLimited), errors.Is(err, ErrQuotaExceeded):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrIdempotencyKeyReused):
		return http.StatusUnprocessableEntity
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// Code is the machine-readable name of an error's kind, as used in REST
// bodies: {"error":{"code":"not_found","message":"..."}}.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrAlreadyExists):
		return "already_exists"
	case errors.Is(err, ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, ErrFailedPrecondition):
		return "failed_precondition"
	case errors.Is(err, ErrPermissionDenied):
		return "permission_denied"
	case errors.Is(err, ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, ErrResourceExhausted):
		return "resource_exhausted"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, ErrTooLarge):
		return "payload_too_large"
	case errors.Is(err, ErrQuotaExceeded):
		return "quota_exceeded"
	case errors.Is(err, ErrIdempotencyKeyReused):
		return "idempotency_key_reused"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	return "internal"
}

// FromCode rebuilds an error of the kind Code names with msg as its
// message (an unknown code is internal): a stored outcome, such as the
// error an idempotent request first answered, answered again alike.
func FromCode(code, msg string) error {
	for _, kind := range []error{ErrNotFound, ErrAlreadyExists, ErrInvalidArgument, ErrFailedPrecondition,
		ErrPermissionDenied, ErrUnauthenticated, ErrResourceExhausted, ErrUnavailable, ErrRateLimited,
		ErrTooLarge, ErrQuotaExceeded, ErrIdempotencyKeyReused, context.DeadlineExceeded} {
		if Code(kind) == code {
			return New(kind, "%s", msg)
		}
	}
	return errors.New(msg)
}
