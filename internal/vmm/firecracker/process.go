package firecracker

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// firecrackerFor recognises, by its command line, a firecracker started
// with sock as its --api-sock: this sandbox's VMM and not an unrelated
// process that reused a stale pid. The socket path is unique to the
// sandbox's Dir.
func firecrackerFor(sock string) func(argv []string) bool {
	return func(argv []string) bool { return vmmproc.HasFlag(argv, "--api-sock", sock) }
}

// Available reports whether binary exists and this process may execute it.
// The agent's driver selection uses it.
func Available(binary string) bool {
	st, err := os.Stat(binary)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	return unix.Access(binary, unix.X_OK) == nil
}
