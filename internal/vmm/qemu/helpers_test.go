package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	kernelDir  = "/var/lib/wrenn/kernels"
	rootfsPath = "/var/lib/wrenn/images/minimal/rootfs.ext4"
)

// requireVM skips (or fails, with WRENN_TEST_REQUIRE_VM=1) a test that
// needs what a real guest needs.
func requireVM(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("WRENN_TEST_REQUIRE_VM") == "1" {
		t.Fatalf("WRENN_TEST_REQUIRE_VM=1 but %s", why)
	}
	t.Skip(why)
}

func findQEMU(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(DefaultBinary)
	if err != nil {
		requireVM(t, "needs "+DefaultBinary+" in PATH (apt-get install qemu-system-x86)")
	}
	return p
}

// findKernel returns the highest-version vmlinux-* in kernelDir.
func findKernel(t *testing.T) string {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(kernelDir, "vmlinux-*"))
	if len(paths) == 0 {
		requireVM(t, "needs a guest kernel at "+kernelDir+"/vmlinux-* (images/kernel/build.sh)")
	}
	slices.SortFunc(paths, func(a, b string) int { return compareVersions(kernelVersion(a), kernelVersion(b)) })
	return paths[len(paths)-1]
}

func kernelVersion(p string) []int {
	var v []int
	for _, part := range strings.Split(strings.TrimPrefix(filepath.Base(p), "vmlinux-"), ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			break
		}
		v = append(v, n)
	}
	return v
}

func compareVersions(a, b []int) int { return slices.Compare(a, b) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireVM(t, "needs root (netns, tap, pidfd of other users)")
	}
}
