//go:build !linux

package vmmproc

import (
	"os"
	"os/exec"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// errUnsupported is what every process operation returns off Linux: there
// is no pidfd and no network namespace to start a VMM in.
var errUnsupported = errdefs.New(errdefs.ErrFailedPrecondition, "vmm processes need linux (pidfd, network namespaces)")

func start(Command) (*exec.Cmd, error)      { return nil, errUnsupported }
func pidfdOpen(int) (int, error)            { return -1, errUnsupported }
func pidfdSignal(int, syscall.Signal) error { return errUnsupported }
func closeFD(int)                           {}
func waitExit(int, *os.File) (bool, error)  { return false, errUnsupported }
func cmdline(int) ([]string, error)         { return nil, errUnsupported }
