//go:build unix

package cli

import (
	"os"
	"syscall"
)

// resizeSignal is the signal a terminal window resize sends.
func resizeSignal() os.Signal { return syscall.SIGWINCH }
