package kernels

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestLatest(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		want    string
		wantVer string
		wantErr error
	}{
		{name: "highest semver, numerically", files: []string{"vmlinux-6.1.9", "vmlinux-6.1.192", "vmlinux-6.0.300"}, want: "vmlinux-6.1.192", wantVer: "6.1.192"},
		{name: "versioned beats plain", files: []string{"vmlinux", "vmlinux-5.10.1"}, want: "vmlinux-5.10.1", wantVer: "5.10.1"},
		{name: "plain only", files: []string{"vmlinux"}, want: "vmlinux"},
		{name: "junk names ignored", files: []string{"vmlinux-abc", "vmlinux-1.2", ".tmp-vmlinux-9.9.9", "vmlinux"}, want: "vmlinux"},
		{name: "none", files: nil, wantErr: errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			k, err := Latest(dir)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Path != filepath.Join(dir, tt.want) || k.Version != tt.wantVer {
				t.Fatalf("got %+v, want %s version %q", k, tt.want, tt.wantVer)
			}
		})
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmlinux-6.1.192"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if k, err := Find(dir, "6.1.192"); err != nil || k.Version != "6.1.192" {
		t.Fatalf("Find = %+v, %v", k, err)
	}
	if _, err := Find(dir, "6.1.1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Find of a missing version = %v, want NotFound", err)
	}
}
