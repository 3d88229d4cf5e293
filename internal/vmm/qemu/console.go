package qemu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultConsoleLogMax is the size at which console.log is rotated to
// console.log.1 (the one older generation kept).
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

// console copies a guest serial console from QEMU's socket into a
// rotatingLog. It owns one goroutine, which ends when QEMU closes the
// socket or Close is called.
type console struct {
	conn net.Conn
	done chan struct{}
	err  error // set before done closes

	closeOnce sync.Once
}

func startConsole(socketPath, logPath string, max int64) (*console, error) {
	conn, err := net.Dial("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("connect console %s: %w", socketPath, err)
	}
	log, err := openRotatingLog(logPath, max)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &console{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		_, err := io.Copy(log, conn)
		if errors.Is(err, net.ErrClosed) {
			err = nil // Close was called
		}
		c.err = errors.Join(err, log.Close())
	}()
	return c, nil
}

// drain waits up to d for the copy to reach EOF (QEMU has exited and the
// socket buffer still holds the guest's last words), then closes.
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
	c.closeOnce.Do(func() { c.conn.Close() })
	<-c.done
	return c.err
}
