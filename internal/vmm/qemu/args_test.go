package qemu

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func baseSpec() vmm.Spec {
	return vmm.Spec{
		ID:       "sbx1",
		Dir:      "/var/lib/wrenn/sandboxes/sbx1",
		Kernel:   "/var/lib/wrenn/kernels/vmlinux-6.1.158",
		VCPUs:    1,
		MemoryMB: 512,
	}
}

func TestArgsGolden(t *testing.T) {
	tests := []struct {
		name     string
		spec     func() vmm.Spec
		accel    Accel
		incoming bool
	}{
		{name: "minimal_tcg", accel: AccelTCG, spec: func() vmm.Spec {
			s := baseSpec()
			s.ID = ""
			return s
		}},
		{name: "full_kvm", accel: AccelKVM, spec: func() vmm.Spec {
			s := baseSpec()
			s.VCPUs = 2
			s.MemoryMB = 1024
			s.KernelArgs = "  root=/dev/vda rw init=/sbin/wrenn-init  "
			s.RootDisk = vmm.Disk{Path: "/var/lib/wrenn/sandboxes/sbx1/root.qcow2", Format: "qcow2"}
			s.Net = &vmm.NetDevice{TAP: "tap0", MAC: "02:FC:00:00:00:01"}
			s.MemoryFile = "/dev/shm/wrenn/sbx1.mem"
			return s
		}},
		{name: "restore_readonly_disk", accel: AccelTCG, incoming: true, spec: func() vmm.Spec {
			s := baseSpec()
			s.RootDisk = vmm.Disk{Path: "/images/a,b/rootfs.ext4", Format: "raw", ReadOnly: true}
			s.MemoryFile = "/dev/shm/wrenn/sbx1.mem"
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := Args(tt.spec(), tt.accel, tt.incoming)
			if err != nil {
				t.Fatal(err)
			}
			// One argument per line keeps diffs readable; no argument here
			// contains a newline (validateSpec forbids it).
			got := strings.Join(args, "\n") + "\n"
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("args differ from %s (run with -update if intended)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestArgsInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*vmm.Spec)
		accel  Accel
		want   string
	}{
		{name: "relative dir", modify: func(s *vmm.Spec) { s.Dir = "sandboxes/x" }, want: "dir"},
		{name: "no kernel", modify: func(s *vmm.Spec) { s.Kernel = "" }, want: "kernel"},
		{name: "relative disk", modify: func(s *vmm.Spec) { s.RootDisk = vmm.Disk{Path: "root.img", Format: "raw"} }, want: "root disk"},
		{name: "bad disk format", modify: func(s *vmm.Spec) { s.RootDisk = vmm.Disk{Path: "/root.img", Format: "vmdk"} }, want: "format"},
		{name: "zero vcpus", modify: func(s *vmm.Spec) { s.VCPUs = 0 }, want: "vcpus"},
		{name: "tiny memory", modify: func(s *vmm.Spec) { s.MemoryMB = 1 }, want: "memory"},
		{name: "bad mac", modify: func(s *vmm.Spec) { s.Net = &vmm.NetDevice{TAP: "tap0", MAC: "zz"} }, want: "mac"},
		{name: "multicast mac", modify: func(s *vmm.Spec) { s.Net = &vmm.NetDevice{TAP: "tap0", MAC: "01:00:00:00:00:01"} }, want: "multicast"},
		{name: "tap with comma", modify: func(s *vmm.Spec) { s.Net = &vmm.NetDevice{TAP: "tap0,script=/x", MAC: "02:00:00:00:00:01"} }, want: "tap"},
		{name: "id with comma", modify: func(s *vmm.Spec) { s.ID = "a,b" }, want: "id"},
		{name: "newline in cmdline", modify: func(s *vmm.Spec) { s.KernelArgs = "a\nb" }, want: "kernel args"},
		{name: "init args separator", modify: func(s *vmm.Spec) { s.KernelArgs = "init=/bin/sh -- -c x" }, want: `"--"`},
		{name: "long dir", modify: func(s *vmm.Spec) { s.Dir = "/" + strings.Repeat("d", 100) }, want: "too long"},
		{name: "unknown accel", modify: func(s *vmm.Spec) {}, accel: "hvf", want: "accelerator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.modify(&s)
			accel := tt.accel
			if accel == "" {
				accel = AccelTCG
			}
			_, err := Args(s, accel, false)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %q does not name %q", err, tt.want)
			}
		})
	}
}
