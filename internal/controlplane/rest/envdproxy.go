package rest

// envd through the control plane, as E2B's SDKs reach it: on the host name
// 49983-{id}.{domain}, or on any path of wrenn-cp with the headers
// E2b-Sandbox-Id and E2b-Sandbox-Port: 49983 (the SDKs send both on every
// envd request; with E2B_SANDBOX_URL the headers are all that names the
// sandbox). The request goes to the agent's envd route, which adds envd's
// own token.
//
// The caller proves itself with the sandbox's access token in
// X-Access-Token (the SDKs' envdAccessToken, compared in constant time
// with the stored SHA-256), or with its team's credentials (X-API-Key, or
// Authorization: Bearer), or, on GET/POST /files only, with E2B's
// pre-signed URL (signature and signature_expiration in the query, made
// from the token; checked here when Deps.EnvdAccessToken can give the
// token). Authorization: Basic is envd's own (the SDKs name the guest
// user that way) and goes through untouched.
//
// Refusals are answered the way E2B's edge answers them, because the SDKs
// act on the status: a sandbox that does not exist, is gone, belongs to
// another team or is paused answers 502 (the SDKs' isRunning() reads 502
// as "not running", and Connect maps it to Unavailable, which they report
// as "sandbox not found / timed out"); Connect calls get Connect errors
// (Unavailable, Unauthenticated), plain HTTP a JSON body
// {"sandboxId", "message", "code"}.

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"

	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/envd/filesig"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

const (
	// headerSandboxID and headerSandboxPort name the sandbox and port when
	// the URL does not (E2B's SDKs send both, in this spelling, to envd).
	headerSandboxID   = "E2b-Sandbox-Id"
	headerSandboxPort = "E2b-Sandbox-Port"
	// headerTrafficToken carries E2B's traffic access token for a
	// sandbox's user ports (sandbox.trafficAccessToken; E2B documents it
	// in this lower-case spelling, which HTTP treats the same).
	headerTrafficToken = "E2b-Traffic-Access-Token"
	// autoResumeTimeout bounds one resume triggered by traffic, whoever
	// of the waiting callers is still there.
	autoResumeTimeout = 2 * time.Minute
)

// Sandbox states the proxy tells apart, as the store spells them.
const (
	statePaused  = "paused"
	stateStopped = "stopped"
)

// connectErrors writes Connect-protocol errors for envd's RPC calls.
var connectErrors = connect.NewErrorWriter()

// envdRefusal is a refusal of an envd request, in E2B's terms.
type envdRefusal struct {
	status int
	code   connect.Code
	msg    string
}

func (e *envdRefusal) Error() string { return e.msg }

// envdGone is the answer for a sandbox that cannot be reached: missing,
// another team's, stopped or paused.
func envdGone(id, why string) *envdRefusal {
	return &envdRefusal{status: http.StatusBadGateway, code: connect.CodeUnavailable, msg: fmt.Sprintf("sandbox %s %s", id, why)}
}

// writeEnvdError answers an envd request: a Connect error to a Connect
// call, else E2B's JSON error body.
func writeEnvdError(w http.ResponseWriter, r *http.Request, id string, e *envdRefusal) {
	if isConnectCall(r) {
		_ = connectErrors.Write(w, r, connect.NewError(e.code, errors.New(e.msg)))
		return
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wrenn"`)
	}
	writeJSON(w, e.status, struct {
		SandboxID string `json:"sandboxId"`
		Message   string `json:"message"`
		Code      int    `json:"code"`
	}{id, e.msg, e.status})
}

// isConnectCall reports whether r is a Connect RPC (envd's process and
// filesystem services: POST /{package.Service}/{Method}). The path matters:
// by content type alone envd's POST /files with application/octet-stream
// would pass for a Connect call of an "octet-stream" codec.
func isConnectCall(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	svc, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/") && connectErrors.IsSupported(r)
}

// proxyEnvd authorizes a request for a sandbox's envd and forwards it, with
// rest (escaped, starting with '/') as envd's path.
func (s *Server) proxyEnvd(w http.ResponseWriter, r *http.Request, id, rest string) {
	if err := checkText("sandbox id", id); err != nil {
		writeEnvdError(w, r, "", &envdRefusal{status: http.StatusBadRequest, code: connect.CodeInvalidArgument, msg: err.Error()})
		return
	}
	sb, err := s.q.GetProxySandbox(r.Context(), id)
	if errors.Is(err, pgx.ErrNoRows) {
		writeEnvdError(w, r, id, envdGone(id, "was not found"))
		return
	}
	if err != nil {
		s.log.Error("envd proxy: load sandbox", "sandbox_id", id, "err", err)
		writeEnvdError(w, r, id, &envdRefusal{status: http.StatusInternalServerError, code: connect.CodeInternal, msg: "internal error"})
		return
	}
	if refusal := s.authorizeEnvd(r, sb); refusal != nil {
		writeEnvdError(w, r, id, refusal)
		return
	}
	sb, err = s.resumeForTraffic(r.Context(), sb)
	if err != nil {
		writeEnvdError(w, r, id, envdGone(id, "is paused and did not resume: "+s.resumeFailure(r, id, err)))
		return
	}
	switch sb.State {
	case stRunning:
	case statePaused:
		writeEnvdError(w, r, id, envdGone(id, "is paused: resume it (Sandbox.connect) first"))
		return
	case stateStopped:
		writeEnvdError(w, r, id, envdGone(id, "was not found"))
		return
	default:
		writeEnvdError(w, r, id, envdGone(id, "is "+sb.State+", not running"))
		return
	}
	gt := guestTarget{
		agentPath: "/sandboxes/" + url.PathEscape(sb.ID) + "/envd", rest: rest, port: envdPort,
		// envd takes no Bearer credentials: one here was the API's.
		dropAuthorization: isBearer(r.Header.Get("Authorization")),
	}
	if !isConnectCall(r) {
		gt.modifyResponse = agentRefusalToE2B(sb.ID)
	}
	s.forwardGuest(w, r, sb, gt, func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		code := connect.CodeUnavailable
		switch {
		case status == http.StatusBadRequest:
			code = connect.CodeInvalidArgument
		case status == http.StatusInternalServerError:
			code = connect.CodeInternal
		}
		writeEnvdError(w, r, sb.ID, &envdRefusal{status: status, code: code, msg: msg})
	})
}

// agentRefusalToE2B rewrites the agent's refusal of a plain-HTTP envd
// request into E2B's answer. The store can lag behind the agent (its own
// idle timeout pauses or removes a sandbox before the control plane hears
// of it); the agent then answers 409 failed_precondition or 404 not_found
// in the REST shape {"error":{"code":...}}, where the SDKs expect 502
// (isRunning() is false on 502 and throws on anything else). envd itself
// never answers 409 over HTTP, and its own 404 (a missing file) has
// another shape ({"code":404,"kind":...}), which passes untouched.
// Connect calls are left alone: the agent answers those in Connect.
func agentRefusalToE2B(id string) func(*http.Response) error {
	return func(resp *http.Response) error {
		if resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusNotFound {
			return nil
		}
		// Refusals are small; a larger body is not one.
		head, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if err != nil {
			return fmt.Errorf("read the agent's %d: %w", resp.StatusCode, err)
		}
		var b errorBody
		refusal := json.Unmarshal(head, &b) == nil && (b.Error.Code == "not_found" || b.Error.Code == "failed_precondition")
		if !refusal {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
			return nil
		}
		resp.Body.Close()
		why := "was not found"
		if b.Error.Code == "failed_precondition" {
			why = "is not running"
		}
		body, _ := json.Marshal(struct {
			SandboxID string `json:"sandboxId"`
			Message   string `json:"message"`
			Code      int    `json:"code"`
		}{id, fmt.Sprintf("sandbox %s %s", id, why), http.StatusBadGateway})
		resp.StatusCode, resp.Status = http.StatusBadGateway, "502 "+http.StatusText(http.StatusBadGateway)
		resp.Header = http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}}
		resp.ContentLength = int64(len(body))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
}

// authorizeEnvd checks the caller's right to sb's envd: the sandbox's
// access token, or credentials of its team. Another team's credentials
// get the answer a missing sandbox gets.
func (s *Server) authorizeEnvd(r *http.Request, sb store.GetProxySandboxRow) *envdRefusal {
	if token := r.Header.Get(headerAccessToken); token != "" {
		if len(sb.AccessTokenHash) == 0 || subtle.ConstantTimeCompare(hashToken(token), sb.AccessTokenHash) != 1 {
			return &envdRefusal{status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, msg: "wrong access token in header " + headerAccessToken}
		}
		return nil
	}
	team, ok, err := s.teamCredentials(r)
	switch {
	case errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrInvalidArgument):
		return &envdRefusal{status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, msg: err.Error()}
	case errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrPermissionDenied):
		// A team header naming another team, a user in no team.
		return envdGone(sb.ID, "was not found")
	case err != nil:
		s.log.Error("envd proxy: team credentials", "sandbox_id", sb.ID, "err", err)
		return &envdRefusal{status: http.StatusInternalServerError, code: connect.CodeInternal, msg: "internal error"}
	case ok && team == sb.TeamID:
		return nil
	case ok:
		return envdGone(sb.ID, "was not found")
	}
	if r.URL.Path == "/files" && r.URL.Query().Has("signature") {
		return s.checkFileSignature(r, sb)
	}
	return &envdRefusal{status: http.StatusUnauthorized, code: connect.CodeUnauthenticated,
		msg: "missing access token: send the sandbox's envdAccessToken in header " + headerAccessToken}
}

// checkFileSignature admits a pre-signed /files URL (the SDKs' uploadUrl
// and downloadUrl) as envd would: "v1_" + unpadded base64 of
// sha256("path:operation:username:token[:expiration]"), operation "read"
// for GET and HEAD and "write" for POST, expiration (Unix seconds) not
// passed. The agent's route admits whatever reaches it with envd's token,
// so the check must happen here; it needs the token in clear, which only
// Deps.EnvdAccessToken can give.
func (s *Server) checkFileSignature(r *http.Request, sb store.GetProxySandboxRow) *envdRefusal {
	refuse := func(msg string) *envdRefusal {
		return &envdRefusal{status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, msg: msg}
	}
	if s.deps.EnvdAccessToken == nil {
		return refuse("pre-signed file URLs are not accepted by this control plane: send header " + headerAccessToken)
	}
	if filesig.Operation(r.Method) == "" {
		return refuse("invalid or expired signature")
	}
	token, err := s.deps.EnvdAccessToken(r.Context(), sb.ID)
	if err != nil || token == "" || len(sb.AccessTokenHash) == 0 || subtle.ConstantTimeCompare(hashToken(token), sb.AccessTokenHash) != 1 {
		// A token that is not the one on record signs nothing.
		if err != nil {
			s.log.Warn("envd proxy: access token for a signed URL", "sandbox_id", sb.ID, "err", err)
		}
		return refuse("invalid or expired signature")
	}
	if !filesig.Valid(r.Method, r.URL.Query(), token, s.clk.Now()) {
		return refuse("invalid or expired signature")
	}
	return nil
}

// teamCredentials resolves the caller's team from an API key or session
// token, if the request carries one. ok is false when it carries none.
// An Authorization header other than Bearer is left out: on the envd
// route it is envd's own (Basic, naming the guest user).
func (s *Server) teamCredentials(r *http.Request) (team uuid.UUID, ok bool, err error) {
	bearer := isBearer(r.Header.Get("Authorization"))
	if !bearer && r.Header.Get(apiKeyHeader) == "" {
		return uuid.Nil, false, nil
	}
	rr := r
	if !bearer && r.Header.Get("Authorization") != "" {
		rr = r.Clone(r.Context())
		rr.Header.Del("Authorization")
	}
	p, err := s.resolvePrincipal(rr)
	if err != nil {
		return uuid.Nil, false, err
	}
	return p.TeamID, true, nil
}

// isBearer reports whether an Authorization value uses the Bearer scheme
// (the API's credentials), as opposed to one the guest may need.
func isBearer(v string) bool {
	scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	return strings.EqualFold(scheme, "Bearer")
}

// isAPIKeyBearer reports whether an Authorization value carries one of
// the API's keys (never meant for a guest).
func isAPIKeyBearer(v string) bool {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(v), " ")
	return strings.EqualFold(scheme, "Bearer") && auth.HasAPIKeyPrefix(strings.TrimSpace(tok))
}

// resumeForTraffic resumes sb when it is paused and asked to resume on
// traffic (auto_resume, memory kept) and Deps.AutoResume is set, and
// returns its row as it is afterwards. Concurrent requests for one
// sandbox share one resume; each waits only as long as its own request
// lasts, and the resume itself is not cut short by the caller that
// started it leaving.
func (s *Server) resumeForTraffic(ctx context.Context, sb store.GetProxySandboxRow) (store.GetProxySandboxRow, error) {
	resume := s.deps.AutoResume
	if sb.State != statePaused || !sb.AutoResume || sb.MemoryDropped || resume == nil {
		return sb, nil
	}
	ch := s.resumes.DoChan(sb.ID, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), autoResumeTimeout)
		defer cancel()
		// Another group of callers may have resumed it a moment ago.
		cur, err := s.q.GetProxySandbox(ctx, sb.ID)
		if err != nil {
			return nil, fmt.Errorf("reload sandbox %s: %w", sb.ID, err)
		}
		if cur.State != statePaused {
			return nil, nil
		}
		if err := resume(ctx, sb.TeamID, sb.ID); err != nil {
			return nil, fmt.Errorf("resume sandbox %s: %w", sb.ID, err)
		}
		return nil, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return sb, res.Err
		}
	case <-ctx.Done():
		return sb, ctx.Err()
	}
	cur, err := s.q.GetProxySandbox(ctx, sb.ID)
	if err != nil {
		return sb, fmt.Errorf("reload sandbox %s: %w", sb.ID, err)
	}
	return cur, nil
}

// resumeFailure is what a caller is told of a failed auto-resume: the
// error's own words when it is one meant for clients, else (logged) a
// generic phrase.
func (s *Server) resumeFailure(r *http.Request, id string, err error) string {
	if errdefs.HTTPStatus(err) == http.StatusInternalServerError {
		loggerFrom(r).Error("auto-resume", "sandbox_id", id, "err", err)
		return "internal error"
	}
	return err.Error()
}

// resumeGroup deduplicates traffic-triggered resumes per sandbox id.
type resumeGroup = singleflight.Group
