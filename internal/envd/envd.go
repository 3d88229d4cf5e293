// Package envd is Wrenn's guest agent server: it wires the process and
// filesystem Connect services, the /files route and envd's own routes
// (/health, /init, /envs, /metrics) into one HTTP/1.1 + h2c server on TCP
// 49983, guards them with the access token that POST /init sets, and runs
// the port forwarder that makes loopback servers reachable from outside
// the guest. It speaks E2B's envd protocol.
package envd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/envd/files"
	"github.com/wrenn/wrenn/internal/envd/filesystem"
	"github.com/wrenn/wrenn/internal/envd/guestmetrics"
	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/internal/envd/portfwd"
	"github.com/wrenn/wrenn/internal/envd/process"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// DefaultPort is the TCP port envd listens on in every sandbox.
const DefaultPort = 49983

// Defaults for the zero values of Config.
const (
	DefaultMaxMessageBytes = 16 << 20
	DefaultMaxInitBytes    = 1 << 20
	DefaultShutdownTimeout = 5 * time.Second
)

// Config is everything Run needs. The zero value of each optional field
// means its default.
type Config struct {
	// Addr is the TCP address to listen on, e.g. ":49983". Ignored when
	// Listener is set.
	Addr string
	// Listener, when set, is served instead of listening on Addr. Run
	// closes it. Tests pass a listener on 127.0.0.1:0.
	Listener net.Listener

	// Dev marks envd running as an ordinary process on a developer's
	// machine rather than as root in a guest: it never touches the system
	// clock.
	Dev bool
	// User is the default user processes and file operations act as
	// until POST /init changes it. It must exist.
	User string
	// Workdir is the default working directory; "" means the user's home.
	Workdir string

	// ForwardAddrs are the addresses loopback-only servers are forwarded
	// to (the guest's eth0 address). Empty disables port forwarding.
	ForwardAddrs []netip.Addr
	// ForwardInterval is how often listening sockets are scanned.
	ForwardInterval time.Duration

	// MaxMessageBytes caps one Connect request message; larger messages
	// fail with resource_exhausted.
	MaxMessageBytes int
	// MaxInitBytes caps the POST /init body; larger bodies get 413.
	MaxInitBytes int64
	// KeepAliveInterval is how long a process output stream may stay idle
	// before it carries a keep-alive event; 0 keeps the process service's
	// default.
	KeepAliveInterval time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after ctx is done before connections are cut.
	ShutdownTimeout time.Duration
}

// Run serves envd until ctx is done, then stops accepting, ends the
// services' streams (killing the processes envd started), waits up to
// ShutdownTimeout for requests to finish and returns. It returns an error
// when the configuration is invalid or the listener fails.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	s, err := newServer(cfg, logger)
	if err != nil {
		return err
	}
	if !cfg.Dev && os.Geteuid() == 0 {
		// In the guest, a memory hog must be what the OOM killer picks, not
		// envd: without envd the sandbox is unreachable. Processes envd
		// starts get their default score back (process.resetOOMScore).
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
			logger.Warn("cannot protect envd from the OOM killer", "err", err)
		}
	}
	ln := cfg.Listener
	if ln == nil {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", s.cfg.Addr); err != nil {
			s.closeServices()
			return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
		}
	}
	return s.serve(ctx, ln)
}

// server is one envd instance: its state and the services it mounts.
type server struct {
	cfg     Config
	logger  *slog.Logger
	defs    *defaults.Defaults
	token   accessToken
	metrics *guestmetrics.Sampler
	proc    *process.Service
	fs      *filesystem.Service
	files   http.Handler

	// initMu serialises POST /init so a token rotation and the settings
	// that come with it apply as one step.
	initMu sync.Mutex
	// setClock and canSetClock are fields so tests can observe clock
	// changes without root.
	setClock    func(time.Time) error
	canSetClock bool
	now         func() time.Time
}

func newServer(cfg Config, logger *slog.Logger) (*server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = ":" + strconv.Itoa(DefaultPort)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxInitBytes <= 0 {
		cfg.MaxInitBytes = DefaultMaxInitBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.User == "" {
		return nil, errors.New("envd config: default user is required")
	}
	if _, err := identity.Lookup(cfg.User); err != nil {
		return nil, fmt.Errorf("envd config: default user: %w", err)
	}
	if cfg.Workdir != "" && !isAbs(cfg.Workdir) {
		return nil, fmt.Errorf("envd config: default workdir %q is not absolute", cfg.Workdir)
	}

	defs := defaults.New(cfg.User, cfg.Workdir)
	proc := process.NewService(logger.With("service", "process"), defs)
	if cfg.KeepAliveInterval > 0 {
		proc.KeepAliveInterval = cfg.KeepAliveInterval
	}
	return &server{
		cfg:         cfg,
		logger:      logger,
		defs:        defs,
		metrics:     guestmetrics.New(guestmetrics.Config{}),
		proc:        proc,
		fs:          filesystem.NewService(logger.With("service", "filesystem"), defs),
		files:       files.NewHandler(logger.With("service", "files"), defs),
		setClock:    setSystemClock,
		canSetClock: !cfg.Dev && os.Geteuid() == 0,
		now:         time.Now,
	}, nil
}

// handler routes every request: CORS preflights and /health are always
// open, everything else passes the access-token check first.
func (s *server) handler() http.Handler {
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(s.cfg.MaxMessageBytes)}
	procPath, procHandler := processconnect.NewProcessHandler(s.proc, opts...)
	fsPath, fsHandler := filesystemconnect.NewFilesystemHandler(s.fs, opts...)

	mux := http.NewServeMux()
	mux.Handle(procPath, procHandler)
	mux.Handle(fsPath, fsHandler)
	mux.Handle("/files", s.files)
	mux.Handle("/init", allow(http.MethodPost, s.handleInit))
	mux.Handle("/envs", allow(http.MethodGet, s.handleEnvs))
	mux.Handle("/metrics", allow(http.MethodGet, s.handleMetrics))
	mux.HandleFunc("/", handleNotFound)

	health := allow(http.MethodGet, handleHealth)
	authed := s.requireToken(mux, []string{procPath, fsPath})
	return withCORS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			health.ServeHTTP(w, r)
			return
		}
		authed.ServeHTTP(w, r)
	}))
}

// serve runs the HTTP server on ln until ctx is done or ln fails.
func (s *server) serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	// Prior-knowledge h2c: the host agent and SDKs run Connect over
	// cleartext HTTP/2 to multiplex streams on one connection.
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.handler(),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		// Longer than the idle timeout of the proxies in front (agent,
		// control plane) so they, not envd, close idle connections and
		// never reuse one envd is closing.
		IdleTimeout: 640 * time.Second,
		ErrorLog:    slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}

	var fwd sync.WaitGroup
	fwdCtx, stopFwd := context.WithCancel(ctx)
	defer stopFwd()
	if len(s.cfg.ForwardAddrs) > 0 {
		f, err := portfwd.New(portfwd.Config{
			Addrs:    s.cfg.ForwardAddrs,
			Exclude:  []uint16{listenPort(ln)},
			Interval: s.cfg.ForwardInterval,
		}, s.logger.With("component", "portfwd"))
		if err != nil {
			_ = ln.Close()
			s.closeServices()
			return fmt.Errorf("start port forwarding: %w", err)
		}
		fwd.Go(func() { _ = f.Run(fwdCtx) })
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.logger.Info("envd serving", "addr", ln.Addr().String(), "dev", s.cfg.Dev,
		"user", s.cfg.User, "forward_addrs", fmt.Sprint(s.cfg.ForwardAddrs))

	var err error
	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve envd: %w", err)
	case <-ctx.Done():
	}

	// Stop accepting first, then end the long-lived streams (process
	// output, directory watches) that would otherwise hold Shutdown until
	// its deadline.
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	shutDone := make(chan error, 1)
	go func() { shutDone <- srv.Shutdown(shutCtx) }()
	s.closeServices()
	if serr := <-shutDone; serr != nil {
		s.logger.Warn("envd shutdown deadline passed, closing connections", "err", serr)
		_ = srv.Close()
	}
	if err == nil {
		// Serve returned ErrServerClosed because of Shutdown.
		<-serveErr
	}
	stopFwd()
	fwd.Wait()
	s.logger.Info("envd stopped")
	return err
}

func (s *server) closeServices() {
	s.proc.Close()
	if err := s.fs.Close(); err != nil {
		s.logger.Warn("close filesystem service", "err", err)
	}
}

func listenPort(ln net.Listener) uint16 {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

func isAbs(p string) bool { return len(p) > 0 && p[0] == '/' }
