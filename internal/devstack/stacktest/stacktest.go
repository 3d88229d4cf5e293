// Package stacktest prepares what a test package needs to run a whole
// stack with internal/devstack: a temporary directory that PostgreSQL and
// the VMMs can enter, the binaries built from this checkout, and a
// WRENN_DIR that shares the machine's guest kernel and base image
// read-only. tests/e2e and tests/security use it.
package stacktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/testenv"
)

// Workspace is one test package's stack directory.
type Workspace struct {
	// Root holds everything; remove it when done.
	Root string
	// Bin holds the built commands.
	Bin string
	// Dir is the stack's WRENN_DIR.
	Dir string
	// BuildTime is how long building the commands took.
	BuildTime time.Duration
}

// New makes a workspace under a fresh temporary directory named with
// prefix and builds cmds (names under ./cmd) into its Bin.
func New(ctx context.Context, images testenv.Images, prefix string, cmds ...string) (ws Workspace, err error) {
	root, err := os.MkdirTemp("", prefix)
	if err != nil {
		return ws, fmt.Errorf("make stack directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(root)
		}
	}()
	// PostgreSQL (as postgres) and the VMMs (their own uids) pass through.
	if err := os.Chmod(root, 0o755); err != nil {
		return ws, err
	}
	ws = Workspace{Root: root, Bin: filepath.Join(root, "bin"), Dir: filepath.Join(root, "wrenn")}
	for _, d := range []string{ws.Bin, filepath.Join(ws.Dir, "images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return ws, err
		}
	}
	// Kernels and the base image are shared read-only with the machine's
	// WRENN_DIR; templates the tests make stay in the temporary one.
	for link, target := range map[string]string{
		filepath.Join(ws.Dir, "kernels"):           filepath.Join(images.Dir, "kernels"),
		filepath.Join(ws.Dir, "images", "minimal"): filepath.Dir(images.Rootfs),
	} {
		if err := os.Symlink(target, link); err != nil {
			return ws, err
		}
	}
	repo, err := RepoRoot()
	if err != nil {
		return ws, err
	}
	start := time.Now()
	for _, c := range cmds {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(ws.Bin, c), "./cmd/"+c)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return ws, fmt.Errorf("build %s: %v\n%s", c, err, out)
		}
	}
	ws.BuildTime = time.Since(start)
	return ws, nil
}

// RepoRoot is the checkout's top directory: the nearest parent of the
// working directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("listen on a free loopback port: %v", err))
	}
	defer l.Close()
	return l.Addr().String()
}
