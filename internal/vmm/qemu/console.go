package qemu

import (
	"fmt"
	"net"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// DefaultConsoleLogMax is the size at which console.log is rotated to
// console.log.1 (the one older generation kept).
const DefaultConsoleLogMax = vmmproc.DefaultConsoleLogMax

// startConsole connects to the guest serial console QEMU serves on
// socketPath and copies it into logPath until QEMU closes the socket.
func startConsole(socketPath, logPath string, max int64) (*vmmproc.Console, error) {
	conn, err := net.Dial("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("connect console %s: %w", socketPath, err)
	}
	return vmmproc.StartConsole(conn, logPath, max)
}
