package disk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// noFileAt checks that path is free and its directory exists, so callers get
// AlreadyExists or NotFound rather than an error from deep in qemu-img.
func noFileAt(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "%s already exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", path, errdefs.FromOS(err))
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory of %s: %w", path, errdefs.FromOS(err))
	}
	if !fi.IsDir() {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s is not a directory", dir)
	}
	return nil
}

// tempName returns an unused-looking hidden name beside path, for building
// a file that is linked to path only once complete.
func tempName(path string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("temporary name for %s: %w", path, err)
	}
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(b[:])), nil
}
