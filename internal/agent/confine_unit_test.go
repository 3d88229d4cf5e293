//go:build linux

package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestGiveToGroup: a device left open to everyone (0666, as the agent
// used to set /dev/kvm) ends root-group-owned 0660, and a second call
// changes nothing. A regular file stands in for the device.
func TestGiveToGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns a file to another group")
	}
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(dev, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	const gid = 4242
	log := slog.New(slog.DiscardHandler)
	for range 2 {
		if err := giveToGroup(dev, gid, log); err != nil {
			t.Fatalf("giveToGroup: %v", err)
		}
		st, err := os.Stat(dev)
		if err != nil {
			t.Fatal(err)
		}
		if g := st.Sys().(*syscall.Stat_t).Gid; g != gid || st.Mode().Perm() != 0o660 {
			t.Fatalf("after giveToGroup: gid %d mode %04o, want %d 0660", g, st.Mode().Perm(), gid)
		}
	}
	if err := giveToGroup(filepath.Join(t.TempDir(), "absent"), gid, log); err != nil {
		t.Errorf("giveToGroup of an absent device: %v, want nil (guests use TCG)", err)
	}
}
