package firecracker

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

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
	must(t, "close", l.Close())
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if len(cur) > 100 || len(old) != 100 {
		t.Fatalf("sizes: current %d (max 100), rotated %d (want 100)", len(cur), len(old))
	}
	if !bytes.HasSuffix(cur, last) {
		t.Fatalf("newest output not at the end of the current log: %q", cur)
	}
}

func TestConsoleFollowsFIFOUntilWriterExits(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, ConsoleFIFOName)
	must(t, "mkfifo", makeConsoleFIFO(fifo))
	r, err := openConsoleReader(fifo)
	if err != nil {
		t.Fatal(err)
	}
	w, err := openConsoleWriter(fifo)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, ConsoleLogName)
	c, err := startConsole(r, logPath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello from the guest\n")); err != nil {
		t.Fatal(err)
	}
	w.Close() // the last writer goes: the copy must reach EOF by itself
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("console copy did not end at EOF")
	}
	must(t, "close", c.Close())
	got, _ := os.ReadFile(logPath)
	if string(got) != "hello from the guest\n" {
		t.Fatalf("console.log = %q", got)
	}
}

func TestConsoleCloseInterruptsRead(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, ConsoleFIFOName)
	must(t, "mkfifo", makeConsoleFIFO(fifo))
	r, err := openConsoleReader(fifo)
	if err != nil {
		t.Fatal(err)
	}
	w, err := openConsoleWriter(fifo) // a writer that never writes
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := startConsole(r, filepath.Join(dir, ConsoleLogName), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		must(t, "close", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a blocked read")
	}
}
