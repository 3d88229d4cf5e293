// Package pgcluster runs a private PostgreSQL cluster with Debian's own
// server binaries (/usr/lib/postgresql/<version>/bin): created on first use
// in a directory, listening only on a Unix socket in that directory, and
// run as an unprivileged user when the caller is root. make up uses it for
// the one-box install and tests use it when no database is given.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a private cluster in Dir.
type Cluster struct {
	Dir string
	// Port names the socket file (.s.PGSQL.<Port>); nothing listens on TCP.
	Port int
	// RunAs is the account the server runs as when the caller is root
	// (PostgreSQL refuses to run as root). Default "postgres".
	RunAs string
}

// ErrNoServer means PostgreSQL's server binaries are not installed.
var ErrNoServer = errors.New("postgresql server binaries not found under /usr/lib/postgresql (apt install postgresql)")

// BinDir returns the newest installed server's bin directory.
func BinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i], nil
		}
	}
	return "", ErrNoServer
}

// DSN is the connection string for database db as the superuser "wrenn".
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://wrenn@/%s?host=%s&port=%d&sslmode=disable", db, c.Dir, c.port())
}

func (c *Cluster) port() int {
	if c.Port == 0 {
		return 5432
	}
	return c.Port
}

// Start creates the cluster if needed, starts it unless it already runs,
// and makes sure database "wrenn" exists. It is idempotent.
func (c *Cluster) Start(ctx context.Context) error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	cred, uid, gid, err := c.credential()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("create cluster dir: %w", err)
	}
	if err := os.Chown(c.Dir, uid, gid); err != nil {
		return fmt.Errorf("hand cluster dir to uid %d: %w", uid, err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.run(ctx, cred, filepath.Join(bin, "initdb"), "-D", c.Dir, "-U", "wrenn",
			"--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"); err != nil {
			return fmt.Errorf("initdb: %w", err)
		}
	}
	if !c.running() {
		opts := fmt.Sprintf("-k %s -c listen_addresses='' -p %d -c fsync=on", c.Dir, c.port())
		if err := c.run(ctx, cred, filepath.Join(bin, "pg_ctl"), "-D", c.Dir, "-l", filepath.Join(c.Dir, "server.log"),
			"-o", opts, "-w", "-t", "60", "start"); err != nil {
			return fmt.Errorf("start postgresql: %w (log: %s)", err, filepath.Join(c.Dir, "server.log"))
		}
	}
	return c.ensureDB(ctx, "wrenn")
}

// Stop stops the server (fast shutdown). Stopping a stopped cluster is fine.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.running() {
		return nil
	}
	bin, err := BinDir()
	if err != nil {
		return err
	}
	cred, _, _, err := c.credential()
	if err != nil {
		return err
	}
	if err := c.run(ctx, cred, filepath.Join(bin, "pg_ctl"), "-D", c.Dir, "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("stop postgresql: %w", err)
	}
	return nil
}

// running reports whether postmaster.pid names a live process.
func (c *Cluster) running() bool { return c.PID() != 0 }

// PID is the server's process id when postmaster.pid names a live
// process, else 0 (a supervisor polls it; fault tests kill it).
func (c *Cluster) PID() int {
	b, err := os.ReadFile(filepath.Join(c.Dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// ensureDB creates database name unless it exists.
func (c *Cluster) ensureDB(ctx context.Context, name string) error {
	var conn *pgx.Conn
	var err error
	// The socket can lag pg_ctl's "ready" by a moment on a loaded machine.
	for deadline := time.Now().Add(30 * time.Second); ; {
		conn, err = pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("connect to private cluster: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// credential is who runs the server: RunAs when we are root, else us.
func (c *Cluster) credential() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, os.Geteuid(), os.Getegid(), nil
	}
	name := c.RunAs
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("look up user %s to run postgresql as: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

func (c *Cluster) run(ctx context.Context, cred *syscall.Credential, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	// The server must outlive us (make up's Ctrl-C stops it explicitly).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, strings.TrimSpace(string(out)))
	}
	return nil
}
