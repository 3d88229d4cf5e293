package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/tailfile"
)

// Bounds of one ConsoleLog read.
const (
	DefaultConsoleTail = 64 << 10
	MaxConsoleTail     = 1 << 20
)

// ConsoleLog returns the last n bytes of a sandbox's serial console (kernel,
// init and envd messages). n <= 0 means DefaultConsoleTail; n is capped at
// MaxConsoleTail. The VMM rotates console.log to console.log.1 when it
// grows, so a tail longer than the current file continues into the older
// generation. A sandbox without a console log yet (or any more: a
// hibernated one has none until it resumes) has an empty log.
//
// The VMM owns vm/ and could put a symbolic link or a FIFO where its log
// should be; tailfile.Read follows no link and reads regular files only, so
// such a log is an error (failed precondition), never another file.
//
// It takes no sandbox lock: the log is the VMM's file and reading it must
// not wait behind a long boot, which is exactly when one wants to read it.
func (m *Manager) ConsoleLog(ctx context.Context, id string, n int64) ([]byte, error) {
	if n <= 0 {
		n = DefaultConsoleTail
	}
	n = min(n, MaxConsoleTail)
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	dir := vmDir(sb.dir)
	cur, err := tailfile.Read(filepath.Join(dir, "console.log"), n)
	if err != nil {
		return nil, fmt.Errorf("console log of %s: %w", id, err)
	}
	if int64(len(cur)) < n {
		older, err := tailfile.Read(filepath.Join(dir, "console.log.1"), n-int64(len(cur)))
		if err != nil {
			return nil, fmt.Errorf("console log of %s: %w", id, err)
		}
		cur = append(older, cur...)
	}
	return cur, ctx.Err()
}
