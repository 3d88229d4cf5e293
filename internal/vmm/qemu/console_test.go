package qemu

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

func TestConsoleCopies(t *testing.T) {
	dir, err := os.MkdirTemp("", "wq-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
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
	conn, err := dialConsole(sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vmmproc.StartConsole(conn, logPath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if _, err := srv.Write([]byte("Linux version 6.1\n")); err != nil {
		t.Fatal(err)
	}
	srv.Close() // QEMU exiting ends the copy on its own
	select {
	case <-c.Done():
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
