package vmmproc

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestPIDFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vmm.pid")
	if err := WritePIDFile(p, 4242); err != nil {
		t.Fatal(err)
	}
	if pid, err := ReadPIDFile(p); err != nil || pid != 4242 {
		t.Fatalf("ReadPIDFile = %d, %v; want 4242", pid, err)
	}
	if _, err := os.Stat(p + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestReadPIDFileNotFound(t *testing.T) {
	tests := []struct {
		name    string
		content *string // nil: no file
	}{
		{name: "missing"},
		{name: "empty", content: new("")},
		{name: "not a number", content: new("qemu\n")},
		{name: "zero", content: new("0\n")},
		{name: "negative", content: new("-7\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "vmm.pid")
			if tt.content != nil {
				if err := os.WriteFile(p, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if pid, err := ReadPIDFile(p); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("ReadPIDFile = %d, %v; want NotFound", pid, err)
			}
		})
	}
}

func TestHasFlag(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want bool
	}{
		{name: "flag and value", argv: []string{"fc", "--api-sock", "/d/s", "--id", "x"}, want: true},
		{name: "value elsewhere", argv: []string{"fc", "--id", "/d/s", "--api-sock", "/e/s"}},
		{name: "flag last, no value", argv: []string{"fc", "--api-sock"}},
		{name: "program name is not a flag", argv: []string{"--api-sock", "/d/s"}},
		{name: "empty", argv: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HasFlag(tt.argv, "--api-sock", "/d/s"); got != tt.want {
				t.Fatalf("HasFlag(%q) = %t, want %t", tt.argv, got, tt.want)
			}
		})
	}
}

// TestNoFollow: the VMM's directory is writable by the VMM's own identity;
// a link it plants where root writes the pid file or the console log must
// not redirect root's writes elsewhere.
func TestNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vmm.pid.tmp", "console.log"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WritePIDFile(filepath.Join(dir, "vmm.pid"), 42); err != nil {
		t.Fatalf("pid file with a planted link at its temporary name: %v", err)
	}
	if _, err := StartConsole(io.NopCloser(strings.NewReader("guest output")), filepath.Join(dir, "console.log"), 1<<20); err == nil {
		t.Fatal("console log opened through a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("the link's target was written: %q", b)
	}
}
