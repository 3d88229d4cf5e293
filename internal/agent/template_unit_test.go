//go:build linux

package agent

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/snapshot"
)

// TestRestrictOldTemplates: the files of a snapshot template taken before
// templates were private (0755 directories, a 0444 disk, readable by any
// user on the host) are made root's alone at start, unless a sandbox made
// from it before still reads its disk directly; base images are left as
// they are, and so are sandboxes' own files.
func TestRestrictOldTemplates(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns files to root")
	}
	dir := t.TempDir()
	images := filepath.Join(dir, "images")
	mk := func(path string, mode fs.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"t-old", "t-used"} {
		mk(filepath.Join(images, name, "snapshot", snapshot.ManifestName), 0o644)
		mk(filepath.Join(images, name, "snapshot", snapshotDiskName), 0o444)
		for _, d := range []string{filepath.Join(images, name), filepath.Join(images, name, "snapshot")} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(filepath.Join(images, "minimal", "rootfs.ext4"), 0o644)
	// A sandbox from t-used whose disk lies directly over the template's
	// (no private base.qcow2), and one from t-old with its own copy.
	m := &Manager{cfg: Config{Dir: dir}, log: slog.New(slog.DiscardHandler), sandboxes: map[string]*sandbox{}}
	for id, tpl := range map[string]string{"sb-legacy": "t-used", "sb-new": "t-old"} {
		sb := &sandbox{dir: filepath.Join(dir, "sandboxes", id), rec: &record{ID: id, Template: tpl}}
		if err := os.MkdirAll(vmDir(sb.dir), 0o700); err != nil {
			t.Fatal(err)
		}
		if id == "sb-new" {
			mk(filepath.Join(vmDir(sb.dir), "base.qcow2"), 0o444)
		}
		m.sandboxes[id] = sb
	}

	if err := m.restrictOldTemplates(); err != nil {
		t.Fatal(err)
	}
	perm := func(p string) fs.FileMode {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	for p, want := range map[string]fs.FileMode{
		filepath.Join(images, "t-old"):                                    0o700,
		filepath.Join(images, "t-old", "snapshot"):                        0o700,
		filepath.Join(images, "t-old", "snapshot", snapshotDiskName):      0o600,
		filepath.Join(images, "t-old", "snapshot", snapshot.ManifestName): 0o600,
		filepath.Join(images, "t-used"):                                   0o755,
		filepath.Join(images, "t-used", "snapshot", snapshotDiskName):     0o444,
		filepath.Join(images, "minimal", "rootfs.ext4"):                   0o644,
	} {
		if got := perm(p); got != want {
			t.Errorf("%s is %s, want %s", p, got, want)
		}
	}
}
