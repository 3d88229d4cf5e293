package firecracker

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/firecracker/fctest"
)

// TestMain lets the test binary double as a stand-in firecracker: the
// driver under test runs it with fctest.ProcessEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(fctest.ProcessEnv) == "1" {
		os.Exit(fctest.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeConfig is a driver Config whose "firecracker" is this test binary
// serving fctest's fake API. extraEnv is added to its environment.
func fakeConfig(t *testing.T, extraEnv ...string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Binary:    self,
		Env:       append([]string{fctest.ProcessEnv + "=1"}, extraEnv...),
		StopGrace: 5 * time.Second,
	}
}

func testDriver(t *testing.T, extraEnv ...string) *Driver {
	return New(fakeConfig(t, extraEnv...))
}

// testSpec is a guest spec with its own Dir and stand-in kernel and disk.
func testSpec(t *testing.T) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	files := t.TempDir()
	kernel := filepath.Join(files, "vmlinux")
	disk := filepath.Join(files, "rootfs.ext4")
	for _, p := range []string{kernel, disk} {
		if err := os.WriteFile(p, []byte("stand-in"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return vmm.Spec{
		ID: "sb-1", Dir: dir, Kernel: kernel, KernelArgs: "init=/sbin/wrenn-init",
		RootDisk: vmm.Disk{Path: disk, Format: "raw"},
		VCPUs:    2, MemoryMB: 256,
		Net: &vmm.NetDevice{TAP: "tap0", MAC: "02:FC:00:00:00:01"},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requests reads what the stand-in firecracker(s) serving dir answered.
func requests(t *testing.T, dir string) []fctest.Request {
	t.Helper()
	reqs, err := fctest.ReadRequestLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}

// calls is reqs as "METHOD /path" strings, starting at index from.
func calls(reqs []fctest.Request, from int) []string {
	var out []string
	for _, r := range reqs[from:] {
		out = append(out, r.Call())
	}
	return out
}

func wantCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: requests\n got %q\nwant %q", what, got, want)
	}
}

// body decodes request r's JSON body.
func body(t *testing.T, r fctest.Request) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s body %s: %v", r.Call(), r.Body, err)
	}
	return m
}

func stopAtEnd(t *testing.T, m vmm.Machine) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
	})
}
