package leakcheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTree builds a fake machine and WRENN_DIR holding one of everything.
type fakeTree struct {
	root string
	r    Roots
	s    Scope
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func proc(t *testing.T, root string, pid, uid int, args ...string) {
	t.Helper()
	d := filepath.Join(root, "proc", fmt.Sprint(pid))
	write(t, filepath.Join(d, "cmdline"), strings.Join(args, "\x00")+"\x00")
	write(t, filepath.Join(d, "status"), fmt.Sprintf("Name:\tx\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid))
}

const ipOut = `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 00:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff
7: ws-3@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 00:00:00:00:00:02 brd ff:ff:ff:ff:ff:ff link-netns ws-3
8: ws2-4@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 00:00:00:00:00:03 brd ff:ff:ff:ff:ff:ff
9: ws-x: <BROADCAST> mtu 1500
`

const nftOut = `table inet wrenn
table inet ws
table ip ws
table inet ws2
`

func newFake(t *testing.T, v2 bool) fakeTree {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "wrenn")
	f := fakeTree{
		root: root,
		r: Roots{
			Proc: filepath.Join(root, "proc"), Cgroup: filepath.Join(root, "cgroup"),
			Shm: filepath.Join(root, "shm"), NetNSDir: filepath.Join(root, "netns"),
			Run: func(_ context.Context, name string, args ...string) ([]byte, error) {
				switch name + " " + strings.Join(args, " ") {
				case "ip -o link show":
					return []byte(ipOut), nil
				case "nft list tables":
					return []byte(nftOut), nil
				}
				return nil, fmt.Errorf("unexpected command %s %v", name, args)
			},
		},
		s: Scope{Dir: dir, AgentName: "ws", VMMUIDBase: 430000},
	}
	// Processes: a VMM by uid (its name not qemu), a VMM by command line
	// (another base), a helper for a sandbox, and bystanders: another
	// agent's qemu, PostgreSQL under Dir/pg, an unrelated process.
	proc(t, root, 100, 430003, "/usr/bin/some-vmm", "-x")
	proc(t, root, 101, 0, "/usr/bin/qemu-system-x86_64", "-name", "guest=sb1", "-kernel", dir+"/kernels/vmlinux", "-qmp", "unix:"+dir+"/sandboxes/sb1/vm/qmp.sock,server=on")
	proc(t, root, 102, 0, "/bin/cp", dir+"/snapshots/fork-sb2-abcdefghijklmnop/mem", "/tmp/x")
	proc(t, root, 103, 200001, "/usr/bin/qemu-system-x86_64", "-qmp", "unix:/var/lib/wrenn/sandboxes/other/vm/qmp.sock")
	proc(t, root, 104, 105, "/usr/lib/postgresql/15/bin/postgres", "-D", dir+"/pg/data")
	proc(t, root, 105, 1000, "bash")
	proc(t, root, 106, 431024, "/usr/bin/qemu-system-x86_64") // top of the range
	proc(t, root, 107, 431025, "/usr/bin/qemu-system-x86_64") // just above it
	mkdir(t, filepath.Join(root, "proc", "self"))
	// Namespaces.
	for _, n := range []string{"ws-1", "ws-2g", "ws2-1", "wrenn-1", "ws-a"} {
		write(t, filepath.Join(root, "netns", n), "")
	}
	// Cgroups.
	cg := filepath.Join(root, "cgroup")
	if v2 {
		write(t, filepath.Join(cg, "cgroup.controllers"), "cpu memory pids")
		mkdir(t, filepath.Join(cg, "ws", "sb1"))
		mkdir(t, filepath.Join(cg, "wrenn", "other"))
	} else {
		// cpu and cpuacct co-mounted, as distributions do.
		mkdir(t, filepath.Join(cg, "cpu,cpuacct", "ws", "sb1"))
		for _, l := range []string{"cpu", "cpuacct"} {
			if err := os.Symlink("cpu,cpuacct", filepath.Join(cg, l)); err != nil {
				t.Fatal(err)
			}
		}
		mkdir(t, filepath.Join(cg, "memory", "ws", "sb1"))
		mkdir(t, filepath.Join(cg, "pids", "ws"))
		mkdir(t, filepath.Join(cg, "memory", "wrenn", "other"))
	}
	// Guest memory.
	write(t, filepath.Join(root, "shm", "ws", "sb1.mem"), "")
	write(t, filepath.Join(root, "shm", "wrenn", "other.mem"), "")
	// WRENN_DIR.
	mkdir(t, filepath.Join(dir, "sandboxes", "sb1", "vm"))
	mkdir(t, filepath.Join(dir, "snapshots", "sb3"))
	mkdir(t, filepath.Join(dir, "snapshots", "fork-sb2-abcdefghijklmnop"))
	mkdir(t, filepath.Join(dir, "snapshots", ".trash-sb4-abcdefghijklmnop"))
	write(t, filepath.Join(dir, "images", "minimal", "rootfs.ext4"), "")
	mkdir(t, filepath.Join(dir, "images", "mytpl", "snapshot"))
	mkdir(t, filepath.Join(dir, "images", ".next.tmp-abcdefghijklmnop"))
	mkdir(t, filepath.Join(dir, "kernels"))
	mkdir(t, filepath.Join(dir, "pg"))
	return f
}

func TestListFakeV1(t *testing.T) {
	f := newFake(t, false)
	rs, err := f.r.List(context.Background(), f.s)
	if err != nil {
		t.Fatal(err)
	}
	dir, cg := f.s.Dir, filepath.Join(f.root, "cgroup")
	want := []Resource{
		{KindCgroup, filepath.Join(cg, "cpu,cpuacct", "ws", "sb1"), "sb1"},
		{KindCgroup, filepath.Join(cg, "memory", "ws", "sb1"), "sb1"},
		{KindCgroupParent, filepath.Join(cg, "cpu,cpuacct", "ws"), ""},
		{KindCgroupParent, filepath.Join(cg, "memory", "ws"), ""},
		{KindCgroupParent, filepath.Join(cg, "pids", "ws"), ""},
		{KindLink, "ws-3", ""},
		{KindMemoryDir, filepath.Join(f.root, "shm", "ws"), ""},
		{KindMemoryFile, filepath.Join(f.root, "shm", "ws", "sb1.mem"), "sb1"},
		{KindNetNS, "ws-1", ""},
		{KindNetNS, "ws-2g", ""},
		{KindNFTTable, "inet ws", ""},
		{KindProcess, "pid 102 uid 0: /bin/cp " + dir + "/snapshots/fork-sb2-abcdefghijklmnop/mem /tmp/x", "sb2"},
		{KindSandboxDir, filepath.Join(dir, "sandboxes", "sb1"), "sb1"},
		{KindSnapshotDir, filepath.Join(dir, "snapshots", "fork-sb2-abcdefghijklmnop"), "sb2"},
		{KindSnapshotDir, filepath.Join(dir, "snapshots", "sb3"), "sb3"},
		{KindTemplate, filepath.Join(dir, "images", "mytpl"), ""},
		{KindTemplateTmp, filepath.Join(dir, "images", ".next.tmp-abcdefghijklmnop"), ""},
		{KindTrashDir, filepath.Join(dir, "snapshots", ".trash-sb4-abcdefghijklmnop"), ""},
		{KindVMMProcess, "pid 100 uid 430003: /usr/bin/some-vmm -x", ""},
		{KindVMMProcess, "pid 101 uid 0: /usr/bin/qemu-system-x86_64 -name guest=sb1 -kernel " + dir + "/kernels/vmlinux -qmp unix:" + dir + "/sandboxes/sb1/vm/qmp.sock,server=on", "sb1"},
		{KindVMMProcess, "pid 106 uid 431024: /usr/bin/qemu-system-x86_64", ""},
	}
	if !slices.Equal(rs, want) {
		t.Errorf("List:\n%s\nwant:\n%s", Format(rs), Format(want))
	}

	leaks := Leaks(rs, true)
	for _, r := range leaks {
		if r.PerAgent() || r.Kind == KindTemplate {
			t.Errorf("Leaks(running) kept %v", r)
		}
	}
	if got, want := len(leaks), len(want)-6; got != want { // 5 per-agent, 1 template
		t.Errorf("Leaks(running) kept %d, want %d:\n%s", got, want, Format(leaks))
	}
	if got, want := len(Leaks(rs, false)), len(want)-1; got != want {
		t.Errorf("Leaks(stopped) kept %d, want %d", got, want)
	}
}

func TestListFakeV2(t *testing.T) {
	f := newFake(t, true)
	f.s.VMMUIDBase = 0 // no uid match: pid 100 (not named qemu) is not seen, 106 mentions no Dir
	rs, err := f.r.List(context.Background(), f.s)
	if err != nil {
		t.Fatal(err)
	}
	var cgs, vmms []Resource
	for _, r := range rs {
		switch r.Kind {
		case KindCgroup, KindCgroupParent:
			cgs = append(cgs, r)
		case KindVMMProcess:
			vmms = append(vmms, r)
		}
	}
	cg := filepath.Join(f.root, "cgroup")
	wantCG := []Resource{{KindCgroup, filepath.Join(cg, "ws", "sb1"), "sb1"}, {KindCgroupParent, filepath.Join(cg, "ws"), ""}}
	if !slices.Equal(cgs, wantCG) {
		t.Errorf("cgroups:\n%s\nwant:\n%s", Format(cgs), Format(wantCG))
	}
	if len(vmms) != 1 || !strings.HasPrefix(vmms[0].Name, "pid 101 ") {
		t.Errorf("VMMs without a uid base: want only pid 101, got\n%s", Format(vmms))
	}
}

func TestListEmpty(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "proc"))
	write(t, filepath.Join(root, "cgroup", "cgroup.controllers"), "cpu")
	r := Roots{
		Proc: filepath.Join(root, "proc"), Cgroup: filepath.Join(root, "cgroup"),
		Shm: filepath.Join(root, "shm"), NetNSDir: filepath.Join(root, "netns"),
		Run: func(context.Context, string, ...string) ([]byte, error) { return nil, nil },
	}
	rs, err := r.List(context.Background(), Scope{Dir: filepath.Join(root, "none"), AgentName: "ws", VMMUIDBase: 430000})
	if err != nil || len(rs) != 0 {
		t.Fatalf("List of nothing = %v, %v; want none", rs, err)
	}
	if got := Format(rs); got != "(none)" {
		t.Errorf("Format(nil) = %q", got)
	}
}

func TestListErrors(t *testing.T) {
	f := newFake(t, false)
	for _, s := range []Scope{{Dir: "rel", AgentName: "ws"}, {Dir: "/x", AgentName: "Bad-Name"}, {Dir: "/x", AgentName: ""}} {
		if _, err := f.r.List(context.Background(), s); err == nil {
			t.Errorf("List(%+v): want an error", s)
		}
	}
	// A failing runner is reported, and everything else is still found.
	boom := errors.New("boom")
	f.r.Run = func(context.Context, string, ...string) ([]byte, error) { return nil, boom }
	rs, err := f.r.List(context.Background(), f.s)
	if !errors.Is(err, boom) {
		t.Errorf("List with a failing runner: err = %v, want boom", err)
	}
	if !slices.ContainsFunc(rs, func(r Resource) bool { return r.Kind == KindSandboxDir }) {
		t.Errorf("List with a failing runner lost the rest:\n%s", Format(rs))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.r.List(ctx, f.s); !errors.Is(err, context.Canceled) {
		t.Errorf("List(cancelled) err = %v", err)
	}
}

func TestFormat(t *testing.T) {
	got := Format([]Resource{{KindNetNS, "ws-1", ""}, {KindSandboxDir, "/d/sandboxes/a", "a"}})
	want := "netns         ws-1\nsandbox-dir   /d/sandboxes/a [sandbox a]\n"
	if got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
}

// TestListRealMachine makes a slot-named network namespace and an nft
// table of a test name on this machine and sees both through the real
// roots; it needs root, ip and nft.
func TestListRealMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and an nftables table")
	}
	for _, c := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s: %v", c, err)
		}
	}
	ctx := context.Background()
	name := fmt.Sprintf("lk%d", os.Getpid()%10_000_000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	ns := name + "-0"
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	run("nft", "add", "table", "inet", name)
	t.Cleanup(func() { _ = exec.Command("nft", "delete", "table", "inet", name).Run() })

	s := Scope{Dir: t.TempDir(), AgentName: name}
	rs, err := List(ctx, s)
	if err != nil {
		t.Fatalf("List: %v\n%s", err, Format(rs))
	}
	want := []Resource{{KindNetNS, ns, ""}, {KindNFTTable, "inet " + name, ""}}
	if !slices.Equal(rs, want) {
		t.Errorf("List:\n%s\nwant:\n%s", Format(rs), Format(want))
	}

	// Gone again once deleted.
	run("ip", "netns", "delete", ns)
	run("nft", "delete", "table", "inet", name)
	if rs, err := List(ctx, s); err != nil || len(rs) != 0 {
		t.Errorf("List after cleanup = %v, %v; want none:\n%s", len(rs), err, Format(rs))
	}
}
