package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultConsoleLogMax is the size at which console.log is rotated to
// console.log.1 (the one older generation kept).
const DefaultConsoleLogMax = 1 << 20

// Firecracker writes the guest's serial console (and its own log) to its
// stdout. That stdout is a FIFO in Spec.Dir rather than a pipe to the agent,
// so a later agent can open it again after Attach; while no agent reads,
// Firecracker's writes fail with EPIPE and that output is lost, but the
// guest never blocks on a full pipe.

// makeConsoleFIFO creates a fresh FIFO at path, replacing a stale one.
func makeConsoleFIFO(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale console fifo: %w", err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("create console fifo %s: %w", path, err)
	}
	return nil
}

// openConsoleReader opens the FIFO's read end without waiting for a writer.
// The fd is non-blocking, so the os.File uses the runtime poller and Close
// interrupts a pending Read.
func openConsoleReader(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open console fifo %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openConsoleWriter opens the FIFO's write end for firecracker's stdout. A
// reader must be open already (else open would block). The fd stays in
// blocking mode, as a program expects of its stdout.
func openConsoleWriter(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open console fifo %s for writing: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// rotatingLog is an append-only file capped at max bytes: when a write would
// pass the cap, the file becomes path.1 (replacing the older one) and a new
// file starts. A guest printing forever costs at most 2*max of disk.
type rotatingLog struct {
	path string
	max  int64
	f    *os.File
	size int64
}

func openRotatingLog(path string, max int64) (*rotatingLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat console log: %w", err)
	}
	return &rotatingLog{path: path, max: max, f: f, size: st.Size()}, nil
}

func (l *rotatingLog) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if l.size >= l.max {
			if err := l.rotate(); err != nil {
				return written, err
			}
		}
		chunk := p[:min(int64(len(p)), l.max-l.size)]
		n, err := l.f.Write(chunk)
		written += n
		l.size += int64(n)
		if err != nil {
			return written, fmt.Errorf("write console log: %w", err)
		}
		p = p[n:]
	}
	return written, nil
}

func (l *rotatingLog) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close console log: %w", err)
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("reopen console log: %w", err)
	}
	l.f, l.size = f, 0
	return nil
}

func (l *rotatingLog) Close() error { return l.f.Close() }

// console copies firecracker's output from the FIFO into a rotatingLog. It
// owns one goroutine, which ends at EOF (every writer, i.e. firecracker, is
// gone) or when Close is called.
type console struct {
	r    *os.File
	done chan struct{}
	err  error // set before done closes

	closeOnce sync.Once
}

// startConsole copies from r (as opened by openConsoleReader) to logPath.
// It takes ownership of r.
func startConsole(r *os.File, logPath string, max int64) (*console, error) {
	log, err := openRotatingLog(logPath, max)
	if err != nil {
		r.Close()
		return nil, err
	}
	c := &console{r: r, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		_, err := io.Copy(log, r)
		if errors.Is(err, os.ErrClosed) {
			err = nil // Close was called
		}
		c.err = errors.Join(err, log.Close())
	}()
	return c, nil
}

// drain waits up to d for the copy to reach EOF (firecracker has exited and
// the FIFO still holds its last output), then closes.
func (c *console) drain(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
	return c.Close()
}

// Close stops copying and waits for the goroutine.
func (c *console) Close() error {
	c.closeOnce.Do(func() { c.r.Close() })
	<-c.done
	return c.err
}
