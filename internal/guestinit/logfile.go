package guestinit

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// cappedFile is an append-only log file that never grows past max bytes:
// when a write would overflow it, the file moves to path+".1" (replacing the
// previous one) and a new file starts. A guest's disk belongs to the user, so
// envd's log may take at most 2*max of it.
type cappedFile struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

func openCappedFile(path string, max int64) (*cappedFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat log %s: %w", path, err)
	}
	return &cappedFile{path: path, max: max, f: f, size: st.Size()}, nil
}

func (c *cappedFile) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return 0, fmt.Errorf("write log %s: closed", c.path)
	}
	if c.size > 0 && c.size+int64(len(p)) > c.max {
		if err := c.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write log %s: %w", c.path, err)
	}
	return n, nil
}

func (c *cappedFile) rotate() error {
	if err := c.f.Close(); err != nil {
		c.f = nil
		return fmt.Errorf("close log %s: %w", c.path, err)
	}
	c.f = nil
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		return fmt.Errorf("rotate log %s: %w", c.path, err)
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("reopen log %s: %w", c.path, err)
	}
	c.f, c.size = f, 0
	return nil
}

func (c *cappedFile) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// teeWriter writes to every writer and reports success whatever they say: a
// supervised process must never stall or lose its output because the console
// or the disk failed.
type teeWriter []io.Writer

func (t teeWriter) Write(p []byte) (int, error) {
	for _, w := range t {
		if w != nil {
			_, _ = w.Write(p)
		}
	}
	return len(p), nil
}
