package vmmproc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// WritePIDFile records pid at path for a later Adopt. It writes a temporary
// name and renames it, so a reader never sees half a pid.
func WritePIDFile(path string, pid int) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	// The directory may be writable by the VMM's own identity: never
	// follow a link it planted, never write through an existing file.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// ReadPIDFile returns the pid recorded at path. A missing file, or one that
// holds no positive pid, is errdefs.ErrNotFound.
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, errdefs.FromOS(fmt.Errorf("read pid file: %w", err))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, errdefs.New(errdefs.ErrNotFound, "pid file %s: no pid in %.20q", path, b)
	}
	return pid, nil
}

// HasFlag reports whether argv (a command line, program name first) passes
// flag immediately followed by value. Drivers recognise their VMM by a flag
// whose value is unique to the sandbox, such as its socket or pid file.
func HasFlag(argv []string, flag, value string) bool {
	for i := 1; i+1 < len(argv); i++ {
		if argv[i] == flag && argv[i+1] == value {
			return true
		}
	}
	return false
}
