package firecracker

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

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
	c, err := vmmproc.StartConsole(r, logPath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello from the guest\n")); err != nil {
		t.Fatal(err)
	}
	w.Close() // the last writer goes: the copy must reach EOF by itself
	select {
	case <-c.Done():
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
	c, err := vmmproc.StartConsole(r, filepath.Join(dir, ConsoleLogName), 1<<20)
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
