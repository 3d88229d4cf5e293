package qemu

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// qemuFor recognises, by its command line, a QEMU started with pidFile as
// its -pidfile: the VMM of this sandbox and not an unrelated process that
// reused a stale pid.
func qemuFor(pidFile string) func(argv []string) bool {
	return func(argv []string) bool {
		return len(argv) > 0 && strings.Contains(filepath.Base(argv[0]), "qemu") &&
			vmmproc.HasFlag(argv, "-pidfile", pidFile)
	}
}

// logTail returns the last few non-empty lines of QEMU's log, for errors.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tailBytes = 2048
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-tailBytes, 0)
	b := make([]byte, tailBytes)
	n, _ := f.ReadAt(b, off)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b[:n])), "\n") {
		// The driver's own "--- time argv" header says nothing new.
		if strings.HasPrefix(l, "--- ") {
			lines = lines[:0]
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
