package buildctx

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWriteTarExtractsWithGNUTar runs the extraction command the package
// documents on a WriteTar output, into a directory standing in for the
// guest's /, to check the layout and that existing directories keep their
// owner and mode.
func TestWriteTarExtractsWithGNUTar(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar binary on this machine: the extraction command cannot be checked")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: tar cannot set the numeric owners this test checks")
	}
	c := mustUnpack(t, sample...)
	guest := t.TempDir()
	home := filepath.Join(guest, "home", "user")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(guest, "home"), 0o711); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.WriteTar(context.Background(), &buf, []string{"app"}, "/home/user/app", UIDGID{1000, 1001}, 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tarBin, "-x", "-p", "--numeric-owner", "--no-overwrite-dir", "-C", guest, "-f", "-")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	check := func(rel string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(guest, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	check("home", os.ModeDir|0o711, 0, 0)
	check("home/user", os.ModeDir|0o700, 1000, 1000)
	check("home/user/app", os.ModeDir|0o755, 1000, 1001)
	check("home/user/app/run.sh", 0o755, 1000, 1001)
	check("home/user/app/lib/util.py", 0o644, 1000, 1001)
	check("home/user/app/current", os.ModeSymlink|0o777, 1000, 1001)
	if b, err := os.ReadFile(filepath.Join(guest, "home/user/app/main.py")); err != nil || string(b) != "print('hi')\n" {
		t.Fatalf("main.py: %q %v", b, err)
	}
}
