// Package atomicfile helps build a file under a temporary name and put it in
// place only once complete, so a reader never sees half a file and a crash
// never leaves one under the final name.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// CheckFree checks that path is free and its directory exists, so callers
// get AlreadyExists or NotFound up front rather than from deep in a copy or
// an external tool.
func CheckFree(path string) error {
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

// TempName returns a hidden, unused-looking name beside path, for a file
// that becomes path only once complete. Hidden, so that directory listings
// that skip dot files never take a crash's leftover for a real file.
func TempName(path string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("temporary name for %s: %w", path, err)
	}
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(b[:])), nil
}

// SyncDir fsyncs a directory so that names created, renamed or removed in
// it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, errdefs.FromOS(err))
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, errdefs.FromOS(err))
	}
	return nil
}
