package vmmproc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// DefaultConsoleLogMax is the size at which a console log is rotated to
// <log>.1 (the one older generation kept).
const DefaultConsoleLogMax = 1 << 20

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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o640)
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
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return fmt.Errorf("reopen console log: %w", err)
	}
	l.f, l.size = f, 0
	return nil
}

func (l *rotatingLog) Close() error { return l.f.Close() }

// Console copies a VMM's console output (a socket, a FIFO) into a rotated
// log. It owns one goroutine, which ends at EOF (the VMM is gone) or when
// Close is called.
type Console struct {
	src  io.Closer
	done chan struct{}
	err  error // set before done closes

	closeOnce sync.Once
}

// StartConsole copies src into logPath, rotating at max bytes. It takes
// ownership of src, also when it fails. Closing src must interrupt a pending
// Read, as it does for a net.Conn or a non-blocking *os.File.
func StartConsole(src io.ReadCloser, logPath string, max int64) (*Console, error) {
	log, err := openRotatingLog(logPath, max)
	if err != nil {
		src.Close()
		return nil, err
	}
	c := &Console{src: src, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		_, err := io.Copy(log, src)
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			err = nil // Close was called
		}
		c.err = errors.Join(err, log.Close())
	}()
	return c, nil
}

// Drain waits up to d for the copy to reach EOF (the VMM has exited and the
// socket or FIFO still holds its last output), then closes.
func (c *Console) Drain(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
	return c.Close()
}

// Done is closed once the copy has ended, at EOF or by Close.
func (c *Console) Done() <-chan struct{} { return c.done }

// Close stops copying and waits for the goroutine.
func (c *Console) Close() error {
	c.closeOnce.Do(func() { c.src.Close() })
	<-c.done
	return c.err
}
