package process

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/process"
)

const (
	// basePath is the PATH a process gets unless /init or the request sets
	// one. envd's own environment is deliberately not inherited: it is
	// envd's configuration, not the sandbox user's.
	basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// ptyTerm is what E2B's terminals (xterm.js) understand.
	ptyTerm = "xterm-256color"
	// passwdFile is read only for the user's login shell.
	passwdFile = "/etc/passwd"
)

// command turns a StartRequest into an exec.Cmd that is ready to get its
// standard streams and start: user, environment, working directory and
// executable resolved, each failure with the kind a client can act on.
func (s *Service) command(h http.Header, req *pb.StartRequest) (*exec.Cmd, identity.User, error) {
	cfg := req.GetProcess()
	if cfg == nil {
		return nil, identity.User{}, errdefs.New(errdefs.ErrInvalidArgument, "start request has no process")
	}
	if cfg.GetCmd() == "" {
		return nil, identity.User{}, errdefs.New(errdefs.ErrInvalidArgument, "process cmd is empty")
	}
	u, err := s.user(h)
	if err != nil {
		return nil, identity.User{}, err
	}
	cred, err := u.Credential()
	if err != nil {
		return nil, identity.User{}, err
	}
	env := environment(u, s.defs.Env(), cfg.GetEnvs(), req.Pty != nil)
	dir, err := s.workdir(u, cfg.Cwd)
	if err != nil {
		return nil, identity.User{}, err
	}
	path, err := executable(cfg.GetCmd(), env["PATH"])
	if err != nil {
		return nil, identity.User{}, err
	}
	cmd := &exec.Cmd{
		Path: path,
		Args: append([]string{cfg.GetCmd()}, cfg.GetArgs()...),
		Env:  envList(env),
		Dir:  dir,
		// Its own session, so signals reach the whole process group and a
		// PTY can become its controlling terminal.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: cred},
	}
	return cmd, u, nil
}

// user resolves who the request acts as: the Authorization header, else
// the /init default, else whoever envd runs as.
func (s *Service) user(h http.Header) (identity.User, error) {
	name, err := identity.NameFromRequest(h, s.defs.User())
	if err != nil {
		return identity.User{}, err
	}
	if name == "" {
		return identity.Current()
	}
	return identity.Lookup(name)
}

// workdir picks the request's cwd, else the /init default, else the user's
// home. A directory someone asked for must exist; a home that does not
// (system accounts such as nobody have /nonexistent) falls back to "/".
func (s *Service) workdir(u identity.User, cwd *string) (string, error) {
	asked := ""
	switch {
	case cwd != nil && *cwd != "":
		asked = *cwd
	case s.defs.Workdir() != "":
		asked = s.defs.Workdir()
	}
	if asked == "" {
		if isDir(u.Home) {
			return u.Home, nil
		}
		return "/", nil
	}
	dir := u.Resolve(asked)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", errdefs.New(errdefs.ErrInvalidArgument, "working directory %s does not exist", dir)
	case err != nil:
		return "", fmt.Errorf("stat working directory %s: %w", dir, errdefs.FromOS(err))
	case !fi.IsDir():
		return "", errdefs.New(errdefs.ErrInvalidArgument, "working directory %s is not a directory", dir)
	}
	return dir, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// environment layers, later winning: a login-like base for u, the /init
// defaults, then the request's own variables.
func environment(u identity.User, defaults, request map[string]string, pty bool) map[string]string {
	env := map[string]string{
		"PATH":    basePath,
		"HOME":    u.Home,
		"USER":    u.Name,
		"LOGNAME": u.Name,
		"SHELL":   loginShell(passwdFile, u.Name),
	}
	if pty {
		env["TERM"] = ptyTerm
	}
	maps.Copy(env, defaults)
	maps.Copy(env, request)
	return env
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// loginShell reads name's shell from a passwd file; /bin/sh when it cannot.
func loginShell(passwd, name string) string {
	f, err := os.Open(passwd)
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) == 7 && fields[0] == name && fields[6] != "" {
			return fields[6]
		}
	}
	return "/bin/sh"
}

// executable finds cmd the way a shell would, but in the child's PATH rather
// than envd's. Names with a slash are used as given (relative ones resolve
// against the working directory when the process starts).
func executable(cmd, pathEnv string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, cmd)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errdefs.New(errdefs.ErrNotFound, "executable %q not found in PATH", cmd)
}
