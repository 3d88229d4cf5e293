package rest

// Authentication (API keys and session tokens), per-principal rate limits,
// and the public signup and login routes.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/controlplane/ratelimit"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

const (
	// teamHeader picks the team a session token acts for.
	teamHeader = "X-Wrenn-Team"
	// apiKeyHeader is the alternative to Authorization: Bearer for keys.
	apiKeyHeader = "X-API-Key"
	// apiKeyTouchEvery bounds last_used_at writes to one per key per minute.
	apiKeyTouchEvery = time.Minute
	// defaultRateLimit is requests per second per principal when
	// Deps.RateLimit is zero.
	defaultRateLimit = 50

	minPasswordLen = 8
	maxPasswordLen = 200
	maxNameLen     = 100
	maxEmailLen    = 254
	// accountFreeFailures is how many wrong passwords an account takes
	// from all addresses together before its logins are delayed; from one
	// address, ratelimit.DefaultFreeFailures.
	accountFreeFailures = 50
)

// sessions signs and checks session tokens with the server's secret.
func (s *Server) sessions() auth.Sessions {
	return auth.Sessions{Secret: s.deps.JWTSecret}
}

func unauthenticated(format string, args ...any) error {
	return errdefs.New(errdefs.ErrUnauthenticated, format, args...)
}

func permissionDenied(format string, args ...any) error {
	return errdefs.New(errdefs.ErrPermissionDenied, format, args...)
}

// mountPublicAuth mounts signup and login, which need no credentials.
// They are rate-limited per client address instead (each costs an
// argon2id hash).
func (s *Server) mountPublicAuth(r chi.Router) {
	// Unknown emails are checked against this hash so a login for an
	// unknown email takes as long as one with a wrong password.
	dummy, err := auth.HashPassword("wrenn timing equalizer", auth.DefaultParams)
	if err != nil {
		s.log.Error("hash dummy password", "err", err)
	}
	limit := s.newLimiter("client")
	// The client's address, from the trusted proxy header when the peer
	// is a trusted proxy (WRENN_TRUSTED_PROXIES).
	byAddr := func(r *http.Request) string { return "addr:" + s.clientIP.Of(r) }
	r.With(limit.middleware(byAddr)).Post("/auth/signup", s.signup)
	r.With(limit.middleware(byAddr)).Post("/auth/login", func(w http.ResponseWriter, r *http.Request) {
		s.login(w, r, dummy, func(w http.ResponseWriter, _ *http.Request, sess api.Session) {
			writeJSON(w, http.StatusOK, sess)
		})
	})
	// The dashboard's login: the same checks, the token in a cookie
	// (cookiesession.go).
	r.With(limit.middleware(byAddr)).Post("/auth/session", func(w http.ResponseWriter, r *http.Request) {
		s.login(w, r, dummy, s.setSessionCookie)
	})
	r.With(limit.middleware(byAddr)).Delete("/auth/session", s.logout)
}

type signupRequest struct {
	Email    string  `json:"email"`
	Password string  `json:"password"`
	Name     *string `json:"name"`
	TeamName *string `json:"team_name"`
	// InviteToken joins the team that invited this email (instead of
	// creating one); required when WRENN_SIGNUP=invite.
	InviteToken *string `json:"invite_token"`
}

// validEmail returns the address trimmed, or an invalid-argument error.
func validEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return "", invalid("email is required")
	}
	if len(email) > maxEmailLen {
		return "", invalid("email is longer than %d bytes", maxEmailLen)
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") {
		return "", invalid("email %q is not a valid address (want name@example.com)", email)
	}
	return email, nil
}

func validName(field string, v *string, def string) (string, error) {
	if v == nil {
		return def, nil
	}
	n := strings.TrimSpace(*v)
	if utf8.RuneCountInString(n) > maxNameLen {
		return "", invalid("%s is longer than %d characters", field, maxNameLen)
	}
	if n == "" {
		return def, nil
	}
	return n, nil
}

func (s *Server) signup(w http.ResponseWriter, r *http.Request) {
	if s.signupMode() == SignupClosed {
		writeError(w, r, s.signupAllowed(nil))
		return
	}
	var req signupRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.signupAllowed(req.InviteToken); err != nil {
		writeError(w, r, err)
		return
	}
	email, err := validEmail(req.Email)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if n := utf8.RuneCountInString(req.Password); n < minPasswordLen || n > maxPasswordLen {
		writeError(w, r, invalid("password must be %d to %d characters", minPasswordLen, maxPasswordLen))
		return
	}
	name, err := validName("name", req.Name, "")
	if err != nil {
		writeError(w, r, err)
		return
	}
	teamName, err := validName("team_name", req.TeamName, "Personal")
	if err != nil {
		writeError(w, r, err)
		return
	}
	hash, err := s.hashes.HashPassword(r.Context(), req.Password, auth.DefaultParams)
	if err != nil {
		writeHashError(w, r, err)
		return
	}

	ctx := r.Context()
	user, team, role, err := s.createAccount(ctx, email, name, hash, teamName, req.InviteToken)
	if err != nil {
		writeError(w, r, err)
		return
	}
	sess, err := s.newSession(user, team, role)
	if err != nil {
		writeError(w, r, err)
		return
	}
	actx := withPrincipal(ctx, Principal{TeamID: team.ID, Role: role, UserID: &user.ID})
	s.audit(actx, "user", user.ID.String(), "signup", nil, map[string]any{"team_id": team.ID.String()})
	writeJSON(w, http.StatusCreated, sess)
}

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// login checks an email and password and hands the new session to
// respond (which writes the answer: the token in the body, or in a cookie).
func (s *Server) login(w http.ResponseWriter, r *http.Request, dummyHash string, respond func(http.ResponseWriter, *http.Request, api.Session)) {
	var req loginRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		writeError(w, r, err)
		return
	}
	if strings.TrimSpace(req.Email) == "" || req.Password == "" {
		writeError(w, r, invalid("email and password are required"))
		return
	}
	if len(req.Email) > maxEmailLen || len(req.Password) > 4*maxPasswordLen {
		writeError(w, r, invalid("email or password too long"))
		return
	}
	// Throttle guessing per account, before any lookup: the same for
	// accounts that do not exist, so a 429 does not tell who has one.
	acct := ratelimit.AccountKey(req.Email)
	acctAddr := acct + "\x00" + s.clientIP.Of(r)
	for _, t := range []struct {
		th  *ratelimit.LoginThrottle
		key string
	}{{s.loginByAccountAddr, acctAddr}, {s.loginByAccount, acct}} {
		if ok, wait := t.th.Check(t.key); !ok {
			writeRateLimited(w, r, wait, "too many failed logins for this account")
			return
		}
	}
	// One message for an unknown email and a wrong password, so login
	// does not tell who has an account.
	badCreds := unauthenticated("wrong email or password")
	failed := func() {
		s.loginByAccountAddr.Fail(acctAddr)
		s.loginByAccount.Fail(acct)
		writeError(w, r, badCreds)
	}
	ctx := r.Context()
	user, err := s.q.GetUserByEmail(ctx, strings.TrimSpace(req.Email))
	if errors.Is(err, pgx.ErrNoRows) {
		if err := s.hashes.VerifyPassword(ctx, req.Password, dummyHash); err != nil && !errors.Is(err, auth.ErrMismatch) {
			writeHashError(w, r, err)
			return
		}
		failed()
		return
	}
	if err != nil {
		writeError(w, r, fmt.Errorf("look up user: %w", err))
		return
	}
	if err := s.hashes.VerifyPassword(ctx, req.Password, user.PasswordHash); err != nil {
		switch {
		case errors.Is(err, auth.ErrMismatch):
			failed()
		case errors.Is(err, auth.ErrHashBusy), ctx.Err() != nil:
			writeHashError(w, r, err)
		default:
			writeError(w, r, fmt.Errorf("check password of user %s: %w", user.ID, err))
		}
		return
	}
	s.loginByAccountAddr.Succeed(acctAddr)
	s.loginByAccount.Succeed(acct)
	// The session's team is the first one joined. A user in no team gets
	// a token with a zero team: they can still create one.
	teams, err := s.q.ListUserTeams(ctx, user.ID)
	if err != nil {
		writeError(w, r, fmt.Errorf("list teams of user %s: %w", user.ID, err))
		return
	}
	var team store.Team
	var role Role
	if len(teams) > 0 {
		team = store.Team{ID: teams[0].ID, Name: teams[0].Name, CreatedAt: teams[0].CreatedAt}
		role = Role(teams[0].Role)
	}
	sess, err := s.newSession(user, team, role)
	if err != nil {
		writeError(w, r, err)
		return
	}
	respond(w, r, sess)
}

// writeHashError answers a password hash that did not run: the gate was
// full (503 with Retry-After) or the client went away.
func writeHashError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = errdefs.New(errdefs.ErrUnavailable, "request cancelled while waiting to check the password")
	}
	if errors.Is(err, auth.ErrHashBusy) {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, r, err)
}

func (s *Server) newSession(user store.User, team store.Team, role Role) (api.Session, error) {
	tok, exp, err := s.sessions().Issue(user.ID, s.clk.Now())
	if err != nil {
		return api.Session{}, err
	}
	sess := api.Session{Token: tok, ExpiresAt: exp, User: apiUser(user)}
	if team.ID != uuid.Nil { // a user in no team has none
		t := apiTeam(team, role)
		sess.Team = &t
	}
	return sess, nil
}

// authenticate resolves the request's credentials to a Principal:
// Authorization: Bearer <API key | session token>, or X-API-Key.
//
// An API key acts as admin of its team. A session token acts as the user
// for the team in X-Wrenn-Team, or else the team they joined first, with
// their role there. X-Wrenn-Team naming a team the caller is not in
// answers 404 not_found, as for any other team's resource. A user in no
// team may only list and create teams (anything else is 403).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.resolvePrincipal(r)
		if err != nil {
			if errors.Is(err, errdefs.ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="wrenn"`)
			}
			writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

func (s *Server) resolvePrincipal(r *http.Request) (Principal, error) {
	cred, fromCookie, err := cookieCredential(r)
	if err != nil {
		return Principal{}, err
	}
	if !fromCookie {
		if cred, err = credential(r); err != nil {
			return Principal{}, err
		}
	}
	var team *uuid.UUID
	h := r.Header.Get(teamHeader)
	if c, err := r.Cookie(TeamCookie); fromCookie && h == "" && err == nil {
		// A WebSocket or a link cannot send the header (cookiesession.go).
		h = c.Value
	}
	if h != "" {
		id, err := uuid.Parse(strings.TrimSpace(h))
		if err != nil {
			return Principal{}, invalid("%s %q is not a team id", teamHeader, h)
		}
		team = &id
	}
	if auth.HasAPIKeyPrefix(cred) && !fromCookie {
		return s.apiKeyPrincipal(r.Context(), cred, team)
	}
	p, err := s.sessionPrincipal(r.Context(), cred, team)
	if err != nil {
		return Principal{}, err
	}
	if p.TeamID == uuid.Nil && !(r.URL.Path == "/v1/teams" && (r.Method == http.MethodGet || r.Method == http.MethodPost)) {
		return Principal{}, permissionDenied("you are not a member of any team: create one with POST /v1/teams or ask a team admin to add you")
	}
	return p, nil
}

// credential returns the bearer token or API key the request carries.
func credential(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return "", unauthenticated("Authorization must be \"Bearer <API key or session token>\"")
		}
		return tok, nil
	}
	if k := strings.TrimSpace(r.Header.Get(apiKeyHeader)); k != "" {
		if !auth.HasAPIKeyPrefix(k) {
			return "", unauthenticated("%s must be an API key (wrn_… or e2b_…)", apiKeyHeader)
		}
		return k, nil
	}
	if tok, ok, err := wsBearer(r); ok {
		return tok, err
	}
	return "", unauthenticated("credentials required: send Authorization: Bearer <API key or session token>, or %s", apiKeyHeader)
}

// wsBearerPrefix marks the WebSocket subprotocol that carries a
// credential: a browser cannot set headers on a WebSocket, so a page
// holding an API key offers "wrenn.bearer.<base64url of the key>" beside
// wsProtocol (Kubernetes passes bearer tokens the same way). The server
// selects wsProtocol, never echoing the credential.
const (
	wsBearerPrefix = "wrenn.bearer."
	wsProtocol     = "wrenn.v1"
)

// wsBearer finds a credential in a WebSocket upgrade's offered
// subprotocols.
func wsBearer(r *http.Request) (string, bool, error) {
	if !isWebSocket(r) {
		return "", false, nil
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), wsBearerPrefix)
			if !ok {
				continue
			}
			tok, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
			if err != nil || len(tok) == 0 {
				return "", true, unauthenticated("the %s… WebSocket subprotocol must carry a base64url credential", wsBearerPrefix)
			}
			return string(tok), true, nil
		}
	}
	return "", false, nil
}

func (s *Server) apiKeyPrincipal(ctx context.Context, key string, team *uuid.UUID) (Principal, error) {
	if !auth.IsAPIKey(key) {
		return Principal{}, unauthenticated("invalid API key")
	}
	k, err := s.q.GetAPIKeyByHash(ctx, auth.HashAPIKey(key))
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, unauthenticated("invalid API key")
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up api key: %w", err)
	}
	if k.RevokedAt != nil {
		return Principal{}, unauthenticated("API key %s was revoked", k.ID)
	}
	if team != nil && *team != k.TeamID {
		return Principal{}, notFound("team", team.String())
	}
	now := s.clk.Now()
	if k.LastUsedAt == nil || now.Sub(*k.LastUsedAt) >= apiKeyTouchEvery {
		// Recording use is best effort: never fail the request for it.
		if err := s.q.TouchAPIKey(ctx, store.TouchAPIKeyParams{Now: now, ID: k.ID}); err != nil {
			s.log.Warn("record api key use", "api_key_id", k.ID, "err", err)
		}
	}
	// PlatformAdmin: the key was made with "platform": true and its
	// creator is still a platform admin (GetAPIKeyByHash); other keys have
	// only their team's rights, whoever made them.
	return Principal{TeamID: k.TeamID, Role: RoleAdmin, APIKeyID: &k.ID, PlatformAdmin: k.PlatformAdmin}, nil
}

func (s *Server) sessionPrincipal(ctx context.Context, tok string, team *uuid.UUID) (Principal, error) {
	userID, err := s.sessions().Verify(tok, s.clk.Now())
	if err != nil {
		return Principal{}, err
	}
	h := sha256.Sum256([]byte(tok))
	revoked, err := s.q.SessionRevoked(ctx, h[:])
	if err != nil {
		return Principal{}, fmt.Errorf("check session revocation: %w", err)
	}
	if revoked {
		return Principal{}, unauthenticated("this session was logged out: log in again")
	}
	rows, err := s.q.GetUserSessionTeam(ctx, store.GetUserSessionTeamParams{TeamID: team, UserID: userID})
	if err != nil {
		return Principal{}, fmt.Errorf("look up session user %s: %w", userID, err)
	}
	if len(rows) == 0 {
		return Principal{}, unauthenticated("the session's user no longer exists")
	}
	row := rows[0]
	if row.TeamID == uuid.Nil && team != nil {
		return Principal{}, notFound("team", team.String())
	}
	return Principal{TeamID: row.TeamID, Role: Role(row.Role), UserID: &userID, PlatformAdmin: row.PlatformAdmin}, nil
}

// rateLimit allows each principal (API key or user) Deps.RateLimit
// requests per second with bursts of twice that; beyond, 429 rate_limited
// with Retry-After.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	l := s.newLimiter("principal")
	return l.middleware(func(r *http.Request) string {
		p := principal(r.Context())
		switch {
		case p.APIKeyID != nil:
			return "key:" + p.APIKeyID.String()
		case p.UserID != nil:
			return "user:" + p.UserID.String()
		}
		return "anonymous"
	})(next)
}

// newLimiter returns the server's limiter for kind, at the server's
// rate. chi builds a group's middleware once per route, so rateLimit runs
// once per route and routes() may run more than once: the limiter is made
// on first use and found again after. Its metrics go on the server's
// registry.
func (s *Server) newLimiter(kind string) *limiter {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	if l, ok := s.limiters[kind]; ok {
		return l
	}
	rps := s.deps.RateLimit
	if rps <= 0 {
		rps = defaultRateLimit
	}
	rejected := registerCollector(s.deps.Metrics, ratelimit.RejectedCounter())
	l := &limiter{registerCollector(s.deps.Metrics, ratelimit.NewLimiter(kind, rps, s.clk, rejected))}
	s.limiters[kind] = l
	return l
}

// limiter is a ratelimit.Limiter answering refusals as the API does.
type limiter struct{ *ratelimit.Limiter }

func (l *limiter) middleware(keyOf func(*http.Request) string) func(http.Handler) http.Handler {
	return l.Middleware(keyOf, func(w http.ResponseWriter, r *http.Request, wait time.Duration) {
		writeRateLimited(w, r, wait, "too many requests")
	})
}

// writeRateLimited answers 429 rate_limited with Retry-After (whole
// seconds, at least 1).
func writeRateLimited(w http.ResponseWriter, r *http.Request, wait time.Duration, what string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, r, errdefs.New(errdefs.ErrRateLimited, "%s: retry in %d s", what, secs))
}

// inTx runs fn in a transaction, committed when fn returns nil.
func (s *Server) inTx(ctx context.Context, fn func(q *store.Queries) error) error {
	return store.InTx(ctx, s.deps.Pool, fn)
}

func isUniqueViolation(err error) bool { return store.IsUniqueViolation(err) }
