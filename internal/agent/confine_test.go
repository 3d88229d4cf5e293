//go:build linux

package agent_test

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
)

// TestVMMConfinement: two sandboxes' VMMs run as distinct unprivileged
// identities; each owns its VM's files and can open nothing of the other's,
// nor the agent's record, nor write the template; the guests still work.
func TestVMMConfinement(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 5*time.Minute)
	m := h.agent(ctx)

	type vm struct {
		id, dir  string
		uid, gid int
	}
	// The VMM group: "kvm", else the agent's own "wrenn-kvm".
	vmmGID := -1
	for _, name := range []string{"kvm", "wrenn-kvm"} {
		if g, err := user.LookupGroup(name); err == nil {
			vmmGID, _ = strconv.Atoi(g.Gid)
			break
		}
	}
	if vmmGID < 0 {
		t.Fatal("the agent started but neither group kvm nor wrenn-kvm exists")
	}
	var vms []vm
	for range 2 {
		info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		t.Cleanup(func() { _ = m.Destroy(ctx, info.ID) })
		uid, gid, groups := procIdentity(t, info.PID)
		t.Logf("sandbox %s: qemu pid %d runs as uid %d gid %d groups %q", info.ID, info.PID, uid, gid, groups)
		if uid < agent.DefaultVMMUIDBase || gid != uid || groups != strconv.Itoa(vmmGID) {
			t.Fatalf("qemu of %s runs as uid %d gid %d groups %q; want uid=gid >= %d and only the VMM group %d",
				info.ID, uid, gid, groups, agent.DefaultVMMUIDBase, vmmGID)
		}
		vms = append(vms, vm{id: info.ID, dir: filepath.Join(h.dir, "sandboxes", info.ID), uid: uid, gid: gid})
	}
	a, b := vms[0], vms[1]
	if a.uid == b.uid {
		t.Fatalf("both VMMs run as uid %d", a.uid)
	}

	for _, v := range vms {
		wantOwner(t, v.dir, 0, v.gid, 0o710)
		wantOwner(t, filepath.Join(v.dir, "sandbox.json"), 0, 0, 0o600)
		wantOwner(t, filepath.Join(v.dir, "vm"), v.uid, v.gid, 0o700)
		wantOwner(t, filepath.Join(v.dir, "vm", "rootfs.qcow2"), v.uid, v.gid, 0o600)
		for _, created := range []string{"qmp.sock", "console.sock", "vmm.pid"} {
			st := statT(t, filepath.Join(v.dir, "vm", created))
			if int(st.Uid) != v.uid {
				t.Errorf("%s/vm/%s is owned by uid %d, want the VMM's %d", v.id, created, st.Uid, v.uid)
			}
		}
	}
	kernel, base := h.images.Kernel.Path, h.images.Rootfs
	for _, p := range []string{kernel, base} {
		if st := statT(t, p); st.Uid != 0 || st.Mode&0o004 == 0 || st.Mode&0o022 != 0 {
			t.Errorf("%s: uid %d mode %04o; want root-owned, world-readable, writable by root only", p, st.Uid, st.Mode&0o777)
		}
	}

	// Direct attempts as a's VMM identity. The first two prove the probe
	// itself works: a reads its own overlay and the shared kernel.
	read := []string{"dd", "bs=512", "count=1", "status=none", "of=/dev/null", "if="}
	tests := []struct {
		name   string
		argv   []string
		denied bool
	}{
		{"own overlay", append(read[:5:5], read[5]+filepath.Join(a.dir, "vm", "rootfs.qcow2")), false},
		{"kernel", append(read[:5:5], read[5]+kernel), false},
		{"template base", append(read[:5:5], read[5]+base), false},
		{"neighbour overlay", append(read[:5:5], read[5]+filepath.Join(b.dir, "vm", "rootfs.qcow2")), true},
		{"neighbour dir listing", []string{"ls", b.dir}, true},
		{"neighbour vm dir listing", []string{"ls", filepath.Join(b.dir, "vm")}, true},
		{"neighbour qmp socket", []string{"stat", filepath.Join(b.dir, "vm", "qmp.sock")}, true},
		{"own agent record", append(read[:5:5], read[5]+filepath.Join(a.dir, "sandbox.json")), true},
		{"replace own agent record", []string{"mv", filepath.Join(a.dir, "sandbox.json"), filepath.Join(a.dir, "vm", "stolen")}, true},
		{"write the template base", []string{"dd", "if=/dev/zero", "of=" + base, "bs=1", "count=1", "conv=notrunc", "status=none"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := asUser(a.uid, a.gid, nil, tt.argv...)
			switch {
			case tt.denied && (err == nil || !strings.Contains(out, "Permission denied")):
				t.Errorf("as uid %d: %q = %v, %q; want Permission denied", a.uid, tt.argv, err, out)
			case !tt.denied && err != nil:
				t.Errorf("as uid %d: %q = %v, %q; want success", a.uid, tt.argv, err, out)
			}
		})
	}

	// /dev/kvm: only the VMM group may open it, not every local user
	// (before, the agent made it 0666 for the whole machine).
	if _, err := os.Stat("/dev/kvm"); err == nil {
		wantOwner(t, "/dev/kvm", 0, vmmGID, 0o660)
		openKVM := []string{"sh", "-c", "exec 3<>/dev/kvm"}
		if out, err := asUser(a.uid, a.gid, nil, openKVM...); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("open /dev/kvm as uid %d without the VMM group: %v, %q; want Permission denied", a.uid, err, out)
		}
		if out, err := asUser(a.uid, a.gid, []uint32{uint32(vmmGID)}, openKVM...); err != nil {
			t.Errorf("open /dev/kvm as uid %d in the VMM group: %v, %q; want success", a.uid, err, out)
		}
	} else {
		t.Logf("no /dev/kvm here (%v): its permissions are not checked", err)
	}

	// The guests are unaffected.
	for _, v := range vms {
		if out, _, code := run(ctx, t, m, v.id, "echo ok > f && cat f"); code != 0 || strings.TrimSpace(out) != "ok" {
			t.Errorf("exec in %s: code %d output %q", v.id, code, out)
		}
	}
	if err := m.Pause(ctx, a.id); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := m.Resume(ctx, a.id); err != nil {
		t.Fatalf("resume: %v", err)
	}
	for _, v := range vms {
		if err := m.Destroy(ctx, v.id); err != nil {
			t.Errorf("destroy %s: %v", v.id, err)
		}
	}
}

// asUser runs argv as uid:gid with only the given supplementary groups
// and returns its combined output.
func asUser(uid, gid int, groups []uint32, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// procIdentity reads a process's real/effective/saved/fs uid and gid from
// /proc and insists each set agrees.
func procIdentity(t *testing.T, pid int) (uid, gid int, groups string) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	uid, gid = -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(fields) != 4 || fields[0] != fields[1] || fields[1] != fields[2] || fields[2] != fields[3] {
				t.Fatalf("pid %d %s: %q; want four equal ids", pid, key, val)
			}
			n, err := strconv.Atoi(fields[0])
			if err != nil {
				t.Fatal(err)
			}
			if key == "Uid" {
				uid = n
			} else {
				gid = n
			}
		case "Groups":
			groups = strings.Join(fields, " ")
		}
	}
	if uid < 0 || gid < 0 {
		t.Fatalf("pid %d: no Uid/Gid in /proc status", pid)
	}
	return uid, gid, groups
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func wantOwner(t *testing.T, p string, uid, gid int, perm fs.FileMode) {
	t.Helper()
	st := statT(t, p)
	if int(st.Uid) != uid || int(st.Gid) != gid || fs.FileMode(st.Mode)&fs.ModePerm != perm {
		t.Errorf("%s: %d:%d %04o, want %d:%d %04o", p, st.Uid, st.Gid, st.Mode&0o777, uid, gid, perm)
	}
}
