// Package identity resolves the guest user a request acts as: who it is
// (uid, gid, groups, home), how a process runs as them, and how their
// relative paths resolve.
package identity

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// User is a resolved guest account.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
}

// Lookup resolves a user name from the guest's passwd and group databases.
// An unknown name is an InvalidArgument error.
func Lookup(name string) (User, error) {
	if name == "" {
		return User{}, errdefs.New(errdefs.ErrInvalidArgument, "empty user name")
	}
	u, err := user.Lookup(name)
	if err != nil {
		return User{}, errdefs.New(errdefs.ErrInvalidArgument, "unknown user %q", name)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("parse uid of %s: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("parse gid of %s: %w", name, err)
	}
	out := User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				out.Groups = append(out.Groups, uint32(n))
			}
		}
	}
	if out.Home == "" {
		out.Home = "/"
	}
	return out, nil
}

// Current returns the account envd itself runs as.
func Current() (User, error) {
	u, err := user.Current()
	if err != nil {
		return User{}, fmt.Errorf("look up current user: %w", err)
	}
	return Lookup(u.Username)
}

// Credential returns the credential a child process needs to run as u, or
// nil when envd already runs as u. A non-root envd cannot switch users, so
// asking it for anyone else is PermissionDenied.
func (u User) Credential() (*syscall.Credential, error) {
	if uint32(os.Geteuid()) == u.UID {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, errdefs.New(errdefs.ErrPermissionDenied, "envd runs unprivileged and cannot act as %q", u.Name)
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}, nil
}

// Resolve turns a path as a client wrote it into an absolute, clean path:
// relative paths and "~" are taken from the user's home directory.
func (u User) Resolve(p string) string {
	switch {
	case p == "" || p == "~":
		return u.Home
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(u.Home, p[2:])
	case !filepath.IsAbs(p):
		return filepath.Join(u.Home, p)
	}
	return filepath.Clean(p)
}

// NameFromRequest returns the user a request asks to act as: the user name
// in an `Authorization: Basic base64(user:)` header, which is how E2B's SDKs
// send it, else fallback.
func NameFromRequest(h http.Header, fallback string) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return fallback, nil
	}
	scheme, payload, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "Authorization header must be Basic base64(user:)")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "Authorization header is not valid base64")
	}
	name, _, _ := strings.Cut(string(raw), ":")
	if name == "" {
		return fallback, nil
	}
	return name, nil
}
