package envd

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// maxClockSkew is how far the guest clock may drift from the host's before
// /init resets it; smaller corrections are left to chrony.
const maxClockSkew = time.Second

// initRequest is the body of POST /init, with E2B's field names. Fields
// E2B defines that Wrenn has no use for (volumeMounts, hyperloopIP) are
// accepted and ignored.
type initRequest struct {
	EnvVars map[string]string `json:"envVars"`
	// AccessToken sets or rotates the token; "" removes it and opens every
	// route again; absent leaves it unchanged.
	AccessToken *string `json:"accessToken"`
	// DefaultUser, when not empty, becomes the default user.
	DefaultUser string `json:"defaultUser"`
	// DefaultWorkdir sets the default working directory; "" resets it to
	// the user's home; absent leaves it unchanged.
	DefaultWorkdir *string    `json:"defaultWorkdir"`
	Timestamp      *time.Time `json:"timestamp"`
}

// handleInit applies the settings the host sends right after boot or
// resume. It validates the whole body before changing anything, so a bad
// request leaves envd as it was, and applying the same body twice leaves
// the same state.
func (s *server) handleInit(w http.ResponseWriter, r *http.Request) {
	req, err := s.decodeInit(w, r)
	if err != nil {
		if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
			envdhttp.WriteJSON(w, http.StatusRequestEntityTooLarge, envdhttp.ErrorBody{
				Code:    http.StatusRequestEntityTooLarge,
				Kind:    errdefs.Code(errdefs.ErrResourceExhausted),
				Message: err.Error(),
			})
			return
		}
		envdhttp.WriteError(w, err)
		return
	}
	if err := validateInit(req); err != nil {
		envdhttp.WriteError(w, err)
		return
	}

	s.initMu.Lock()
	defer s.initMu.Unlock()
	if req.Timestamp != nil {
		s.syncClock(*req.Timestamp)
	}
	if len(req.EnvVars) > 0 {
		s.defs.MergeEnv(req.EnvVars)
	}
	if req.DefaultUser != "" {
		s.defs.SetUser(req.DefaultUser)
	}
	if req.DefaultWorkdir != nil {
		s.defs.SetWorkdir(*req.DefaultWorkdir)
	}
	if req.AccessToken != nil {
		s.token.set(*req.AccessToken)
	}
	s.logger.Info("envd initialised", "env_vars", len(req.EnvVars), "default_user", s.defs.User(),
		"default_workdir", s.defs.Workdir(), "token_changed", req.AccessToken != nil)

	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// decodeInit reads one JSON object of at most MaxInitBytes. An empty body
// is an empty request, as E2B's host sometimes sends none.
func (s *server) decodeInit(w http.ResponseWriter, r *http.Request) (initRequest, error) {
	var req initRequest
	if r.ContentLength > s.cfg.MaxInitBytes {
		return req, &http.MaxBytesError{Limit: s.cfg.MaxInitBytes}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxInitBytes))
	if err := dec.Decode(&req); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return initRequest{}, nil
		case isMaxBytes(err):
			return req, err
		}
		return req, errdefs.New(errdefs.ErrInvalidArgument, "decode /init body: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if isMaxBytes(err) {
			return req, err
		}
		return req, errdefs.New(errdefs.ErrInvalidArgument, "decode /init body: trailing data after the JSON object")
	}
	return req, nil
}

func isMaxBytes(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

// validateInit checks everything /init would apply.
func validateInit(req initRequest) error {
	for k, v := range req.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return errdefs.New(errdefs.ErrInvalidArgument, "invalid environment variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return errdefs.New(errdefs.ErrInvalidArgument, "environment variable %s contains a NUL byte", k)
		}
	}
	if req.DefaultUser != "" {
		if _, err := identity.Lookup(req.DefaultUser); err != nil {
			return err
		}
	}
	if req.DefaultWorkdir != nil && *req.DefaultWorkdir != "" && !isAbs(*req.DefaultWorkdir) {
		return errdefs.New(errdefs.ErrInvalidArgument, "defaultWorkdir %q must be an absolute path", *req.DefaultWorkdir)
	}
	if req.AccessToken != nil && strings.ContainsAny(*req.AccessToken, "\r\n\x00") {
		return errdefs.New(errdefs.ErrInvalidArgument, "accessToken must be sendable as an HTTP header")
	}
	return nil
}

// syncClock sets the system clock to the host's time when it is more than
// maxClockSkew away: a resumed snapshot wakes with the clock of the moment
// it was paused. Only root in a guest may do this; elsewhere (--dev) the
// timestamp is ignored. A failure is logged, not returned: the host cannot
// fix it and the rest of /init still applies.
func (s *server) syncClock(ts time.Time) {
	if !s.canSetClock {
		return
	}
	skew := ts.Sub(s.now())
	if skew.Abs() <= maxClockSkew {
		return
	}
	if err := s.setClock(ts); err != nil {
		s.logger.Warn("set system clock from /init", "skew", skew.String(), "err", err)
		return
	}
	s.logger.Info("system clock set from /init", "skew", skew.String())
}
