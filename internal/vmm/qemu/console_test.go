package qemu

import (
	"bytes"
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

func TestConsoleCopies(t *testing.T) {
	dir := sandboxDir(t)
	sock := filepath.Join(dir, "console.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	logPath := filepath.Join(dir, "console.log")
	c, err := startConsole(sock, logPath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if _, err := srv.Write([]byte("Linux version 6.1\n")); err != nil {
		t.Fatal(err)
	}
	srv.Close() // QEMU exiting ends the copy on its own
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("console copy did not end when the socket closed")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(logPath)
	if !bytes.Equal(b, []byte("Linux version 6.1\n")) {
		t.Fatalf("console.log = %q", b)
	}
}
