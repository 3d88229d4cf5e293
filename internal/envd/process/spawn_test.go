package process

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestLoginShell(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	content := "root:x:0:0:root:/root:/bin/bash\n" +
		"svc:x:1:1::/home/svc:\n" +
		"broken line\n" +
		"zed:x:2:2::/home/zed:/usr/bin/zsh\n"
	if err := os.WriteFile(passwd, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, user, want string
	}{
		{"first entry", passwd, "root", "/bin/bash"},
		{"after a malformed line", passwd, "zed", "/usr/bin/zsh"},
		{"empty shell falls back", passwd, "svc", "/bin/sh"},
		{"unknown user falls back", passwd, "nobody-here", "/bin/sh"},
		{"missing file falls back", filepath.Join(t.TempDir(), "none"), "root", "/bin/sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loginShell(tt.file, tt.user); got != tt.want {
				t.Fatalf("loginShell = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExecutable(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"tool": 0o755, "data": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "::" + filepath.Join(dir, "nothing") + ":" + dir
	tests := []struct {
		name, cmd, want string
		wantErr         error
	}{
		{name: "found in PATH", cmd: "tool", want: filepath.Join(dir, "tool")},
		{name: "not executable", cmd: "data", wantErr: errdefs.ErrNotFound},
		{name: "directory", cmd: "adir", wantErr: errdefs.ErrNotFound},
		{name: "missing", cmd: "none", wantErr: errdefs.ErrNotFound},
		{name: "slash used as given", cmd: "./x/y", want: "./x/y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := executable(tt.cmd, path)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("executable(%q) = %q, %v; want %q, %v", tt.cmd, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
