// Package kernels finds guest kernels in $WRENN_DIR/kernels: files named
// vmlinux-<semver> (the highest version wins) or a plain vmlinux.
package kernels

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Kernel is one guest kernel image.
type Kernel struct {
	Path string
	// Version is the semver from the file name, "" for a plain vmlinux.
	Version string
}

// Latest returns the kernel to boot new sandboxes with: the highest
// vmlinux-<semver> in dir, else dir/vmlinux. No kernel is NotFound.
func Latest(dir string) (Kernel, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return Kernel{}, fmt.Errorf("list kernels in %s: %w", dir, err)
	}
	var best Kernel
	var bestV []int
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), "vmlinux-")
		if !ok || e.IsDir() {
			continue
		}
		parts, ok := parseSemver(v)
		if !ok {
			continue
		}
		if bestV == nil || less(bestV, parts) {
			best, bestV = Kernel{Path: filepath.Join(dir, e.Name()), Version: v}, parts
		}
	}
	if bestV != nil {
		return best, nil
	}
	plain := filepath.Join(dir, "vmlinux")
	if _, err := os.Stat(plain); err == nil {
		return Kernel{Path: plain}, nil
	}
	return Kernel{}, errdefs.New(errdefs.ErrNotFound, "no guest kernel in %s (run make images)", dir)
}

// Find returns the kernel with exactly this version, so a snapshot resumes
// on the kernel it was taken with. An empty version means the plain vmlinux.
func Find(dir, version string) (Kernel, error) {
	name := "vmlinux"
	if version != "" {
		name += "-" + version
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return Kernel{}, errdefs.New(errdefs.ErrNotFound, "guest kernel %s is not installed in %s", name, dir)
	}
	return Kernel{Path: p, Version: version}, nil
}

// parseSemver parses "MAJOR.MINOR.PATCH" with an optional "-suffix" ignored
// for ordering.
func parseSemver(s string) ([]int, bool) {
	core, _, _ := strings.Cut(s, "-")
	fields := strings.Split(core, ".")
	if len(fields) != 3 {
		return nil, false
	}
	out := make([]int, 3)
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

func less(a, b []int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
