package vmmproc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRotatingLog(t *testing.T) {
	tests := []struct {
		name     string
		existing string
		writes   []string
		wantCur  string
		wantOld  string
	}{
		{name: "under the cap", writes: []string{"abc", "de"}, wantCur: "abcde"},
		{name: "rotates at the cap", writes: []string{"0123456789", "ab"}, wantCur: "ab", wantOld: "0123456789"},
		{name: "one write spanning the cap", writes: []string{"0123456789abc"}, wantCur: "abc", wantOld: "0123456789"},
		{name: "keeps only one old generation", writes: []string{strings.Repeat("x", 10), strings.Repeat("y", 10), "z"},
			wantCur: "z", wantOld: strings.Repeat("y", 10)},
		{name: "counts what was already there", existing: "12345678", writes: []string{"abcd"},
			wantCur: "cd", wantOld: "12345678ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "console.log")
			if tt.existing != "" {
				if err := os.WriteFile(p, []byte(tt.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, err := openRotatingLog(p, 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			cur, _ := os.ReadFile(p)
			old, _ := os.ReadFile(p + ".1")
			if string(cur) != tt.wantCur || string(old) != tt.wantOld {
				t.Fatalf("console.log = %q, .1 = %q; want %q, %q", cur, old, tt.wantCur, tt.wantOld)
			}
		})
	}
}

func TestRotatingLogBoundsDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := openRotatingLog(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 30)
	for range 20 { // 600 bytes through a 100-byte cap
		if _, err := l.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	last := []byte("the end\n")
	if _, err := l.Write(last); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if len(cur) > 100 || len(old) != 100 {
		t.Fatalf("sizes: current %d (max 100), rotated %d (want 100)", len(cur), len(old))
	}
	if !bytes.HasSuffix(cur, last) {
		t.Fatalf("newest output not at the end of the current log: %q", cur)
	}
}

// socketPair is a connected unix stream socket: the VMM's end and ours.
func socketPair(t *testing.T) (vmm, agent net.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "vp-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	agent, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	vmm, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vmm.Close() })
	return vmm, agent
}

func TestConsole(t *testing.T) {
	tests := []struct {
		name string
		// src returns the end StartConsole reads, a writer for the VMM's
		// side, and a function that closes the VMM's side.
		src func(t *testing.T) (r io.ReadCloser, w io.Writer, closeW func() error)
	}{
		{name: "socket", src: func(t *testing.T) (io.ReadCloser, io.Writer, func() error) {
			v, a := socketPair(t)
			return a, v, v.Close
		}},
		{name: "pipe", src: func(t *testing.T) (io.ReadCloser, io.Writer, func() error) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			return r, w, w.Close
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/copies until the vmm closes", func(t *testing.T) {
			r, w, closeW := tt.src(t)
			logPath := filepath.Join(t.TempDir(), "console.log")
			c, err := StartConsole(r, logPath, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("Linux version 6.1\n")); err != nil {
				t.Fatal(err)
			}
			if err := closeW(); err != nil { // the VMM exiting ends the copy by itself
				t.Fatal(err)
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("console copy did not end at EOF")
			}
			if err := c.Drain(time.Second); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(logPath); string(b) != "Linux version 6.1\n" {
				t.Fatalf("console.log = %q", b)
			}
		})
		t.Run(tt.name+"/close interrupts a blocked read", func(t *testing.T) {
			r, _, _ := tt.src(t) // a VMM that never writes
			c, err := StartConsole(r, filepath.Join(t.TempDir(), "console.log"), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("close: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close hung on a blocked read")
			}
		})
	}
}

func TestStartConsoleClosesSourceOnError(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	bad := filepath.Join(t.TempDir(), "missing", "console.log")
	if _, err := StartConsole(r, bad, 1<<20); err == nil {
		t.Fatal("StartConsole with an unwritable log succeeded")
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("source not closed after a failed start: read err = %v", err)
	}
}
