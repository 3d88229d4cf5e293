// Package devstack brings up a single-node Wrenn on this machine: a private
// PostgreSQL cluster, wrenn-cp and wrenn-agent as child processes, the local
// host registered, and on first run an admin user (made platform admin with
// `wrenn-cp admin`), a team and an API key with platform rights. While it
// runs, a daemon that dies is restarted (RestartPolicy).
// `make up` runs it through cmd/wrenn-up; the end-to-end tests use it to
// start the same stack in a temporary WRENN_DIR.
//
// State lives under Dir and is reused by the next run: pg/ (the cluster),
// cp.env (the JWT secret), admin.json (the bootstrap user and API key),
// the agent's host credentials, logs/.
package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/pgcluster"
	"github.com/wrenn/wrenn/internal/tailfile"
)

// Config says where and how to run the stack. Zero fields take defaults.
type Config struct {
	// Dir is WRENN_DIR. Default /var/lib/wrenn.
	Dir string
	// BinDir holds wrenn-cp and wrenn-agent. Default ./builds.
	BinDir string
	// CPAddr is the control plane's listen address. Default 127.0.0.1:8000.
	CPAddr string
	// AgentAddr is where the agent listens and the control plane dials it.
	// Default 127.0.0.1:50051.
	AgentAddr string
	// DatabaseURL, when set, is used instead of the private cluster.
	DatabaseURL string
	// PGPort names the private cluster's Unix socket. Default 5432.
	PGPort int
	// AgentEnv is extra environment for the agent (e.g. network prefixes
	// so a test agent does not collide with another on the same host).
	AgentEnv []string
	// CPEnv is extra environment for the control plane.
	CPEnv []string
	// Out receives progress lines. Default os.Stdout.
	Out io.Writer
	// NoAgent starts PostgreSQL and the control plane only (make dev).
	NoAgent bool
	// ReadyTimeout bounds each wait (control plane healthy, host online).
	// Default 2 minutes.
	ReadyTimeout time.Duration
	// TLS runs the control plane with WRENN_TLS=self-signed: HTTPS with a
	// certificate from the cluster CA. The stack trusts it by the CA
	// fingerprint wrenn-cp logs, saves the CA as Dir/cp-ca.crt (for
	// `wrenn --ca-cert`), and the agent registers with a token pinning it.
	TLS bool
	// Restart says how wrenn-cp, wrenn-agent and the private PostgreSQL
	// are restarted when they stop on their own. Zero fields take
	// defaults (see RestartPolicy).
	Restart RestartPolicy
}

// RestartPolicy: a daemon that stops while the stack runs is started again
// with the same arguments and environment after Backoff, doubled for each
// earlier crash within Window (at most MaxBackoff), until it is healthy
// again; the MaxCrashes+1-th crash within Window gives up, and Stack.Wait
// returns the error.
type RestartPolicy struct {
	// Backoff is the wait before the first restart. Default 1s.
	Backoff time.Duration
	// MaxBackoff caps the growing wait. Default 30s.
	MaxBackoff time.Duration
	// Window is how long a crash counts against the daemon. Default 5m.
	Window time.Duration
	// MaxCrashes is how many crashes within Window are restarted.
	// Default 5.
	MaxCrashes int
}

func (p *RestartPolicy) defaults() {
	if p.Backoff == 0 {
		p.Backoff = time.Second
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = 30 * time.Second
	}
	if p.Window == 0 {
		p.Window = 5 * time.Minute
	}
	if p.MaxCrashes == 0 {
		p.MaxCrashes = 5
	}
}

func (c *Config) defaults() {
	if c.Dir == "" {
		c.Dir = "/var/lib/wrenn"
	}
	if c.BinDir == "" {
		c.BinDir = "builds"
	}
	if c.CPAddr == "" {
		c.CPAddr = "127.0.0.1:8000"
	}
	if c.AgentAddr == "" {
		c.AgentAddr = "127.0.0.1:50051"
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Minute
	}
	c.Restart.defaults()
}

// Admin is the bootstrap account, saved in Dir/admin.json (0600).
type Admin struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	TeamID   string `json:"team_id"`
	APIKey   string `json:"api_key"`
	// E2BKey is a team key in E2B's shape (e2b_ + 40 hex) for E2B's
	// SDKs (E2B_API_KEY); it has no platform rights.
	E2BKey string `json:"e2b_api_key"`
}

// Stack is a running single-node Wrenn.
type Stack struct {
	cfg    Config
	URL    string
	Admin  Admin
	HostID string
	// CACertHash is the cluster CA's fingerprint (sha256:<hex>) and
	// CACert the file holding the CA, when Config.TLS.
	CACertHash string
	CACert     string
	cluster    *pgcluster.Cluster
	// cp and agent are the running daemons. Their supervisors replace
	// the child after a restart, under mu; Close reads them only after
	// the supervisors have returned.
	mu       sync.Mutex
	cp       *child
	agent    *child
	restarts map[string]int
	// client reaches the control plane (trusting its CA under TLS).
	client *http.Client

	outMu sync.Mutex // progress lines come from Up and the supervisors

	// Supervision: stopSupervising ends the supervisors and supervisors
	// waits for them; closed is closed by Close, failed (with failErr)
	// when a supervisor gives up.
	stopSupervising context.CancelFunc
	supervisors     sync.WaitGroup
	closeOnce       sync.Once
	closed          chan struct{}
	failOnce        sync.Once
	failed          chan struct{}
	failErr         error
}

// Up starts everything and returns once the local host is online.
func Up(ctx context.Context, cfg Config) (_ *Stack, err error) {
	cfg.defaults()
	// Some children run in another directory (wrenn-cp admin in Dir), so
	// a relative BinDir (make up's ./builds) must not stay relative.
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	s := &Stack{cfg: cfg, URL: "http://" + cfg.CPAddr, client: &http.Client{},
		restarts: map[string]int{}, closed: make(chan struct{}), failed: make(chan struct{})}
	if cfg.TLS {
		s.URL = "https://" + cfg.CPAddr
	}
	defer func() {
		if err != nil {
			s.Close(context.WithoutCancel(ctx))
		}
	}()
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	for _, b := range []string{"wrenn-cp", "wrenn-agent"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not built (run make build): %w", b, err)
		}
	}

	dsn := cfg.DatabaseURL
	if dsn == "" {
		start := time.Now()
		s.cluster = &pgcluster.Cluster{Dir: filepath.Join(cfg.Dir, "pg"), Port: cfg.PGPort}
		if err := s.cluster.Start(ctx); err != nil {
			return nil, fmt.Errorf("start postgresql: %w", err)
		}
		dsn = s.cluster.DSN("wrenn")
		s.step("postgresql ready (%s)", since(start))
	}

	secret, err := loadOrCreateSecret(filepath.Join(cfg.Dir, "cp.env"))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	cpEnv := append([]string{
		"DATABASE_URL=" + dsn,
		"WRENN_JWT_SECRET=" + secret,
		"WRENN_CP_LISTEN_ADDR=" + cfg.CPAddr,
		"WRENN_CP_URL=" + s.URL,
		// A loopback stack for one person: open signup, and byoc agents
		// (like this machine's, in tests) may be on loopback. CPEnv may
		// override both.
		"WRENN_SIGNUP=open",
		"WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=true",
	}, cfg.CPEnv...)
	if cfg.TLS {
		cpEnv = append(cpEnv, "WRENN_TLS=self-signed")
	}
	cpLog := filepath.Join(cfg.Dir, "logs", "cp.log")
	var logStart int64
	if fi, err := os.Stat(cpLog); err == nil {
		logStart = fi.Size()
	}
	startCP := func() (*child, error) {
		return startChild(filepath.Join(cfg.BinDir, "wrenn-cp"), nil, cpEnv, cpLog)
	}
	if s.cp, err = startCP(); err != nil {
		return nil, err
	}
	if cfg.TLS {
		if err := s.trustCA(ctx, logStart); err != nil {
			return nil, err
		}
	}
	if err := s.waitHealthy(ctx, s.cp); err != nil {
		return nil, err
	}
	cpd := &daemon{name: CP, start: startCP, ready: func(ctx context.Context, c *child, _ time.Time) error {
		// The cluster CA lives in the database: a restarted wrenn-cp
		// serves a certificate the stack's client already trusts.
		return s.waitHealthy(ctx, c)
	}}
	s.step("control plane ready at %s (%s)", s.URL, since(start))

	if err := s.bootstrapAdmin(ctx, dsn); err != nil {
		return nil, err
	}

	if cfg.NoAgent {
		s.supervise(ctx, cpd)
		return s, nil
	}
	start = time.Now()
	args := []string{}
	hostToken := filepath.Join(cfg.Dir, "host-token")
	if _, err := os.Stat(hostToken); errors.Is(err, os.ErrNotExist) {
		token, hostID, err := s.addHost(ctx)
		if err != nil {
			return nil, err
		}
		s.HostID = hostID
		args = append(args, "--register", token, "--address", cfg.AgentAddr)
	}
	agentEnv := append([]string{
		"WRENN_DIR=" + cfg.Dir,
		"WRENN_CP_URL=" + s.URL,
		"WRENN_HOST_LISTEN_ADDR=" + cfg.AgentAddr,
	}, cfg.AgentEnv...)
	startAgent := func() (*child, error) {
		a := args
		// The registration token is good once: an agent that registered
		// before it died restarts with the credential it saved.
		if _, err := os.Stat(hostToken); err == nil {
			a = nil
		}
		return startChild(filepath.Join(cfg.BinDir, "wrenn-agent"), a, agentEnv, filepath.Join(cfg.Dir, "logs", "agent.log"))
	}
	if s.agent, err = startAgent(); err != nil {
		return nil, err
	}
	if err := s.waitHostOnline(ctx, s.agent, start, false); err != nil {
		return nil, err
	}
	s.step("host agent online (%s)", since(start))
	s.supervise(ctx, cpd, &daemon{name: Agent, start: startAgent, ready: func(ctx context.Context, c *child, start time.Time) error {
		// The control plane may be restarting too: until the deadline,
		// an API that does not answer is only not ready yet.
		return s.waitHostOnline(ctx, c, start, true)
	}})
	return s, nil
}

// Wait returns nil when ctx ends or the stack is closed, and an error when
// a daemon crashed more often than Config.Restart allows; the caller then
// calls Close. A daemon that exits otherwise is restarted (see
// RestartPolicy), which the stack reports on Config.Out.
func (s *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.closed:
		return nil
	case <-s.failed:
		return s.failErr
	}
}

// DestroySandboxes deletes the admin team's live sandboxes, so that
// stopping the stack leaves no VM behind.
func (s *Stack) DestroySandboxes(ctx context.Context) (int, error) {
	var list struct {
		Sandboxes []struct {
			ID string `json:"id"`
		} `json:"sandboxes"`
	}
	if err := s.call(ctx, http.MethodGet, "/v1/sandboxes?limit=1000", s.Admin.APIKey, nil, http.StatusOK, &list); err != nil {
		return 0, err
	}
	n := 0
	for _, sb := range list.Sandboxes {
		if err := s.call(ctx, http.MethodDelete, "/v1/sandboxes/"+sb.ID, s.Admin.APIKey, nil, http.StatusNoContent, nil); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Close stops the agent, then the control plane, then the private
// PostgreSQL cluster. Sandboxes still running are left to the agent's next
// start (call DestroySandboxes first to remove them).
func (s *Stack) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closed) })
	// The supervisors first, so that stopping a daemon below is not taken
	// for a crash and nothing is restarted behind Close's back.
	if s.stopSupervising != nil {
		s.stopSupervising()
	}
	s.supervisors.Wait()
	var errs []error
	for _, c := range []*child{s.agent, s.cp} {
		if c != nil {
			errs = append(errs, c.stop(30*time.Second))
		}
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.Stop(ctx))
	}
	return errors.Join(errs...)
}

func (s *Stack) step(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.cfg.Out, "==> "+format+"\n", args...)
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

// loadOrCreateSecret keeps the JWT secret across runs (sessions survive a
// restart) in a KEY=VALUE file readable by root only.
func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "WRENN_JWT_SECRET="); ok && len(v) >= 32 {
				return v, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	secret := randomHex(32)
	if err := atomicfile.WriteFile(path, []byte("WRENN_JWT_SECRET="+secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save %s: %w", path, err)
	}
	return secret, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// bootstrapAdmin makes the admin user a platform admin with
// `wrenn-cp admin` (signing up never does), and on the first run logs in
// and creates a team "default" and an API key with platform rights (it
// adds this machine as a regular host); later runs load admin.json. An
// admin.json from before platform keys existed holds a key that lost its
// platform rights: it keeps working as a team key and a platform key
// replaces it in admin.json.
func (s *Stack) bootstrapAdmin(ctx context.Context, dsn string) error {
	path := filepath.Join(s.cfg.Dir, "admin.json")
	var a Admin
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &a); err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		a = Admin{Email: "admin@wrenn.local", Password: randomHex(12)}
	default:
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := s.runAdmin(ctx, dsn, a); err != nil {
		return err
	}
	if a.APIKey != "" {
		platform, err := s.keyHasPlatformRights(ctx, a.APIKey)
		if err != nil {
			return err
		}
		if platform {
			return s.saveAdmin(ctx, path, a, false)
		}
	}
	var sess struct {
		Token string `json:"token"`
		Team  *struct {
			ID string `json:"id"`
		} `json:"team"`
	}
	if err := s.call(ctx, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": a.Email, "password": a.Password}, http.StatusOK, &sess); err != nil {
		return fmt.Errorf("log in as admin %s: %w", a.Email, err)
	}
	if sess.Team == nil {
		return fmt.Errorf("admin %s belongs to no team", a.Email)
	}
	a.TeamID = sess.Team.ID
	var key struct {
		Key string `json:"key"`
	}
	if err := s.call(ctx, http.MethodPost, "/v1/api-keys", sess.Token, map[string]any{"name": "make up", "platform": true}, http.StatusCreated, &key); err != nil {
		return fmt.Errorf("create admin api key: %w", err)
	}
	a.APIKey = key.Key
	a.E2BKey = "" // the database may be new: make the E2B key afresh too
	if err := s.saveAdmin(ctx, path, a, true); err != nil {
		return err
	}
	s.step("admin user %s (platform admin), team \"default\" and a platform API key saved in %s", a.Email, path)
	return nil
}

// saveAdmin makes sure a has a working E2B-format key and saves a when it
// changed (or changed is already true).
func (s *Stack) saveAdmin(ctx context.Context, path string, a Admin, changed bool) error {
	if a.E2BKey == "" || s.call(ctx, http.MethodGet, "/v1/me", a.E2BKey, nil, http.StatusOK, nil) != nil {
		var key struct {
			Key string `json:"key"`
		}
		if err := s.call(ctx, http.MethodPost, "/v1/api-keys", a.APIKey, map[string]any{"name": "e2b sdk", "format": "e2b"}, http.StatusCreated, &key); err != nil {
			return fmt.Errorf("create the E2B-format api key: %w", err)
		}
		a.E2BKey, changed = key.Key, true
	}
	if changed {
		b, _ := json.MarshalIndent(a, "", "  ")
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("save %s: %w", path, err)
		}
	}
	s.Admin = a
	return nil
}

// runAdmin runs `wrenn-cp admin`, which creates the admin (owner of a team
// "default") or, when it exists, makes sure it is a platform admin.
func (s *Stack) runAdmin(ctx context.Context, dsn string, a Admin) error {
	pw, err := os.CreateTemp(s.cfg.Dir, ".admin-password-*")
	if err != nil {
		return fmt.Errorf("write admin password: %w", err)
	}
	defer os.Remove(pw.Name())
	_, werr := pw.WriteString(a.Password + "\n")
	if err := errors.Join(werr, pw.Close()); err != nil {
		return fmt.Errorf("write admin password: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(s.cfg.BinDir, "wrenn-cp"), "admin",
		"--email", a.Email, "--password-file", pw.Name(), "--team", "default")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	cmd.Dir = s.cfg.Dir // no stray ./.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("wrenn-cp admin --email %s: %w: %s", a.Email, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// keyHasPlatformRights reports whether key is listed as a platform key.
func (s *Stack) keyHasPlatformRights(ctx context.Context, key string) (bool, error) {
	var me struct {
		APIKeyID string `json:"api_key_id"`
	}
	if err := s.call(ctx, http.MethodGet, "/v1/me", key, nil, http.StatusOK, &me); err != nil {
		// E.g. a database made afresh under an old admin.json: make a
		// new key (logging in reports a real problem).
		return false, nil
	}
	var list struct {
		Keys []struct {
			ID       string `json:"id"`
			Platform bool   `json:"platform"`
		} `json:"api_keys"`
	}
	if err := s.call(ctx, http.MethodGet, "/v1/api-keys", key, nil, http.StatusOK, &list); err != nil {
		return false, fmt.Errorf("check admin api key: %w", err)
	}
	for _, k := range list.Keys {
		if k.ID == me.APIKeyID {
			return k.Platform, nil
		}
	}
	return false, nil
}

// addHost creates the host record for this machine and returns its
// one-time registration token.
func (s *Stack) addHost(ctx context.Context) (token, id string, err error) {
	var out struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
		Token string `json:"registration_token"`
	}
	if err := s.call(ctx, http.MethodPost, "/v1/hosts", s.Admin.APIKey, map[string]string{"type": "regular"}, http.StatusCreated, &out); err != nil {
		return "", "", fmt.Errorf("add local host: %w", err)
	}
	return out.Token, out.Host.ID, nil
}

// waitHealthy waits until the control plane c answers /healthz.
func (s *Stack) waitHealthy(ctx context.Context, c *child) error {
	return s.poll(ctx, "control plane healthy", c, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/healthz", nil)
		resp, err := s.client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// waitHostOnline waits for a heartbeat from the agent started at since:
// after a restart the host may still look online from the previous run.
// Registration alone marks a host online, but the scheduler admits nothing
// until a heartbeat has reported the host's free memory and disk, so that
// is waited for too (a create right after Up answered "no host with room").
// With transient, an API call that fails is retried until the deadline
// instead of ending the wait (a restarting control plane).
func (s *Stack) waitHostOnline(ctx context.Context, c *child, since time.Time, transient bool) error {
	return s.poll(ctx, "host online", c, func(ctx context.Context) (bool, error) {
		var list struct {
			Hosts []struct {
				ID                   string    `json:"id"`
				Status               string    `json:"status"`
				LastHeartbeatAt      time.Time `json:"last_heartbeat_at"`
				MemoryAvailableBytes int64     `json:"memory_available_bytes"`
			} `json:"hosts"`
		}
		if err := s.call(ctx, http.MethodGet, "/v1/hosts", s.Admin.APIKey, nil, http.StatusOK, &list); err != nil {
			if transient && ctx.Err() == nil {
				return false, nil
			}
			return false, err
		}
		for _, h := range list.Hosts {
			// Sent since this child started: a restarted agent's host may
			// still show the killed agent's last heartbeat as online.
			fresh := !h.LastHeartbeatAt.Before(since)
			if h.Status == "online" && fresh && h.MemoryAvailableBytes > 0 && (s.HostID == "" || h.ID == s.HostID) {
				if s.HostID == "" { // set in Up only: tests read it while supervisors run
					s.HostID = h.ID
				}
				return true, nil
			}
		}
		return false, nil
	})
}

// poll calls ok every 200 ms until it reports true, the child exits, or
// the ready timeout passes.
func (s *Stack) poll(ctx context.Context, what string, c *child, ok func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	for {
		done, err := ok(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (see %s)", what, ctx.Err(), c.logPath)
		case <-c.done:
			return fmt.Errorf("wait for %s: %s exited: %v; last log lines:\n%s", what, filepath.Base(c.path), c.err, tailString(c.logPath, 2048))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// call does one JSON request against the control plane.
func (s *Stack) call(ctx context.Context, method, path, cred string, body any, want int, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// CACertFile is where a TLS stack saves the control plane's CA.
const CACertFile = "cp-ca.crt"

// trustCA learns the cluster CA's fingerprint from what this wrenn-cp
// logs (as an operator would), then takes the CA itself from a TLS
// handshake verified against that fingerprint, saves it for the CLI, and
// makes the stack's client trust it.
func (s *Stack) trustCA(ctx context.Context, logStart int64) error {
	logPath := s.cp.logPath
	err := s.poll(ctx, "control plane CA fingerprint", s.cp, func(context.Context) (bool, error) {
		b, err := os.ReadFile(logPath)
		if err != nil || int64(len(b)) < logStart {
			return false, nil
		}
		for _, line := range strings.Split(string(b[logStart:]), "\n") {
			var rec struct {
				Hash string `json:"ca_cert_hash"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Hash != "" {
				s.CACertHash = rec.Hash
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	var ca *x509.Certificate
	err = s.poll(ctx, "control plane TLS", s.cp, func(ctx context.Context) (bool, error) {
		cfg, err := capin.TLSConfig(capin.Trust{Pin: s.CACertHash}, hostOf(s.cfg.CPAddr))
		if err != nil {
			return false, err
		}
		d := tls.Dialer{Config: cfg}
		conn, err := d.DialContext(ctx, "tcp", s.cfg.CPAddr)
		if err != nil {
			if errors.Is(err, capin.ErrMismatch) {
				return false, err
			}
			return false, nil // not listening yet
		}
		defer conn.Close()
		for _, c := range conn.(*tls.Conn).ConnectionState().PeerCertificates {
			if c.IsCA && capin.Hash(c) == s.CACertHash {
				ca = c
			}
		}
		if ca == nil {
			return false, fmt.Errorf("the control plane's TLS chain does not carry its CA %s", s.CACertHash)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	s.CACert = filepath.Join(s.cfg.Dir, CACertFile)
	if err := atomicfile.WriteFile(s.CACert, caPEM, 0o644); err != nil {
		return fmt.Errorf("save %s: %w", s.CACert, err)
	}
	if s.client, err = capin.Client(capin.Trust{CAPEM: caPEM}, s.URL, 0); err != nil {
		return err
	}
	s.step("control plane CA %s saved in %s", s.CACertHash, s.CACert)
	return nil
}

// hostOf is the host of a host:port address, localhost for an empty one.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// child is a daemon we started; its output goes to a log file.
type child struct {
	path    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

func startChild(path string, args, env []string, logPath string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", logPath, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: the terminal's Ctrl-C reaches us, and we stop
	// the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	c := &child{path: path, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM and waits up to grace before SIGKILL.
func (c *child) stop(grace time.Duration) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within %s; killed", filepath.Base(c.path), grace)
	}
}

// tailString is the end of a daemon's log, to explain why it exited.
func tailString(path string, n int64) string {
	b, _ := tailfile.Read(path, n)
	return string(b)
}
