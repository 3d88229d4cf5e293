package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// MakeDirs creates dir and any missing parents with mode 0755. Every
// directory it creates is owned by u when envd runs as root; directories
// that already exist keep their owner. A non-directory in the way is an
// InvalidArgument error.
func MakeDirs(dir string, u identity.User) error {
	dir = filepath.Clean(dir)
	// Collect the missing components from dir upwards, then create them
	// top-down so each one can be chowned as soon as it exists.
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return errdefs.New(errdefs.ErrInvalidArgument, "create directory %s: %s is not a directory", dir, p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create directory %s: %w", dir, errdefs.FromOS(err))
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		if err := os.Mkdir(p, 0o755); err != nil {
			// Someone else may have created it meanwhile; that is fine
			// as long as it is a directory.
			if fi, serr := os.Stat(p); serr == nil && fi.IsDir() {
				continue
			}
			return fmt.Errorf("create directory %s: %w", p, errdefs.FromOS(err))
		}
		if err := Chown(p, u); err != nil {
			return err
		}
	}
	return nil
}

// Chown gives p (not following a final symlink) to u when envd runs as
// root. An unprivileged envd can only create files as itself, so it leaves
// ownership alone.
func Chown(p string, u identity.User) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(p, int(u.UID), int(u.GID)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", p, u.Name, errdefs.FromOS(err))
	}
	return nil
}
