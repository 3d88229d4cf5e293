package qemu

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name       string
		facts      probeFacts
		want       Accel
		wantReason string
	}{
		{name: "no device", facts: probeFacts{devErr: &fs.PathError{Op: "open", Path: "/dev/kvm", Err: fs.ErrNotExist}},
			want: AccelTCG, wantReason: "/dev/kvm missing"},
		{name: "device not permitted", facts: probeFacts{devErr: &fs.PathError{Op: "open", Path: "/dev/kvm", Err: fs.ErrPermission}},
			want: AccelTCG, wantReason: "/dev/kvm unusable: open /dev/kvm: permission denied"},
		{name: "pvm and guest failed", facts: probeFacts{pvm: true, bootErr: errors.New("qemu exited before the kernel booted: error: failed to set MSR 0x10a")},
			want: AccelTCG, wantReason: "/dev/kvm is PVM (/sys/module/kvm_pvm exists) and the probe guest failed: qemu exited before the kernel booted: error: failed to set MSR 0x10a"},
		{name: "kvm present but guest hangs", facts: probeFacts{bootErr: errors.New("no boot message before the deadline")},
			want: AccelTCG, wantReason: "/dev/kvm exists but the probe guest failed: no boot message before the deadline"},
		{name: "kvm works", facts: probeFacts{marker: "VFS: Unable to mount root", elapsed: 180 * time.Millisecond},
			want: AccelKVM, wantReason: `KVM probe guest reached "VFS: Unable to mount root" in 180ms`},
		{name: "pvm that works is still kvm", facts: probeFacts{pvm: true, marker: "Kernel panic", elapsed: time.Second},
			want: AccelKVM, wantReason: `KVM probe guest reached "Kernel panic" in 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decide(tt.facts)
			if got.Accel != tt.want || got.Reason != tt.wantReason {
				t.Fatalf("decide = %+v, want %s %q", got, tt.want, tt.wantReason)
			}
		})
	}
}

// fakeQEMU writes a shell script standing in for qemu-system-x86_64.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeBoot(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh for the fake qemu")
	}
	tests := []struct {
		name       string
		script     string
		timeout    time.Duration
		wantMarker string
		wantErr    string
	}{
		{name: "reaches root mount panic", timeout: 10 * time.Second,
			script:     `echo "Linux version 6.1"; echo "VFS: Unable to mount root fs on unknown-block(0,0)"; exec sleep 30`,
			wantMarker: "VFS: Unable to mount root"},
		{name: "qemu fails at once", timeout: 10 * time.Second,
			script:  `echo "error: failed to set MSR 0x10a to 0x69" >&2; echo "second line" >&2; exit 1`,
			wantErr: "qemu exited before the kernel booted: error: failed to set MSR 0x10a to 0x69"},
		{name: "guest hangs", timeout: 300 * time.Millisecond,
			script:  `echo "KVM internal error. Suberror: 1" >&2; echo "Booting from ROM"; exec sleep 30`,
			wantErr: "no boot message before the deadline: context deadline exceeded (KVM internal error. Suberror: 1)"},
		{name: "silent exit", timeout: 10 * time.Second, script: `exit 0`,
			wantErr: "qemu exited before the kernel booted: no output on stderr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			marker, err := probeBoot(ctx, fakeQEMU(t, tt.script), probeArgs("/k"))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || marker != tt.wantMarker {
				t.Fatalf("probeBoot = %q, %v; want %q", marker, err, tt.wantMarker)
			}
		})
	}
}
