package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTB records how a check gave up. Skip and Fatal do not stop the
// caller, so a check carries on and returns its zero value.
type fakeTB struct {
	testing.TB // nil: any other method panics, which the test would see
	skipped    string
	fatal      string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skip(args ...any)                  { f.skipped = args[0].(string) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }

func TestKernelAndRootfs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("WRENN_DIR", dir)
	t.Setenv("WRENN_TEST_REQUIRE_VM", "")

	t.Run("none installed skips naming what", func(t *testing.T) {
		tb := &fakeTB{}
		Kernel(tb)
		if !strings.Contains(tb.skipped, "guest kernel") || tb.fatal != "" {
			t.Fatalf("skipped %q, fatal %q; want a skip naming the kernel", tb.skipped, tb.fatal)
		}
		tb = &fakeTB{}
		Rootfs(tb)
		if !strings.Contains(tb.skipped, "minimal rootfs") {
			t.Fatalf("skipped %q; want a skip naming the rootfs", tb.skipped)
		}
	})
	t.Run("fails instead when a VM is required", func(t *testing.T) {
		t.Setenv("WRENN_TEST_REQUIRE_VM", "1")
		tb := &fakeTB{}
		Kernel(tb)
		// A real Fatalf stops the test; the fake carries on into Skip.
		if !strings.Contains(tb.fatal, "WRENN_TEST_REQUIRE_VM=1 but needs a guest kernel") {
			t.Fatalf("fatal %q; want a failure naming the kernel", tb.fatal)
		}
	})

	for _, p := range []string{"kernels/vmlinux-6.1.9", "kernels/vmlinux-6.1.10", "kernels/vmlinux-5.15.200", "images/minimal/rootfs.ext4"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("newest kernel by semver", func(t *testing.T) {
		tb := &fakeTB{}
		k := Kernel(tb)
		if k.Version != "6.1.10" || k.Path != filepath.Join(dir, "kernels", "vmlinux-6.1.10") || tb.skipped != "" {
			t.Fatalf("Kernel = %+v (skipped %q), want 6.1.10", k, tb.skipped)
		}
		if r := Rootfs(tb); r != filepath.Join(dir, "images", "minimal", "rootfs.ext4") || tb.skipped != "" {
			t.Fatalf("Rootfs = %q (skipped %q)", r, tb.skipped)
		}
	})
}
