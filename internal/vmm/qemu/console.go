package qemu

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// DefaultConsoleLogMax is the size at which console.log is rotated to
// console.log.1 (the one older generation kept).
const DefaultConsoleLogMax = vmmproc.DefaultConsoleLogMax

// dialConsole connects to the guest serial console QEMU serves on
// socketPath.
func dialConsole(socketPath string) (net.Conn, error) {
	conn, err := net.Dial("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("connect console %s: %w", socketPath, err)
	}
	return conn, nil
}

// startConsole copies m's guest serial console into its console.log.
func (m *Machine) startConsole(max int64) error {
	conn, err := dialConsole(filepath.Join(m.spec.Dir, ConsoleSocketName))
	if err != nil {
		return err
	}
	return m.proc.StartConsole(conn, m.ConsoleLogPath(), max)
}
