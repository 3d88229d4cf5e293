package ociimage_test

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/ociimage"
	"github.com/wrenn/wrenn/internal/templates/ocitest"
)

// fakeBins writes stand-ins for envd and wrenn-init (Wrennify only copies
// them).
func fakeBins(t *testing.T) ociimage.WrennifyOptions {
	t.Helper()
	d := t.TempDir()
	o := ociimage.WrennifyOptions{EnvdBin: filepath.Join(d, "envd"), InitBin: filepath.Join(d, "wrenn-init")}
	for _, p := range []string{o.EnvdBin, o.InitBin} {
		if err := os.WriteFile(p, []byte("binary "+filepath.Base(p)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// busyboxTree is an Alpine-like tree: /bin/sh is a symlink to busybox,
// tini lives in /sbin, uid 1000 is taken by "node", no /etc/shadow, no
// package manager.
func busyboxTree(t *testing.T, extra ...ocitest.Entry) string {
	t.Helper()
	entries := []ocitest.Entry{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/busybox", Body: "\x7fELF", Mode: 0o755},
		{Name: "bin/sh", Type: tar.TypeSymlink, Linkname: "/bin/busybox"},
		{Name: "sbin/tini", Body: "\x7fELF", Mode: 0o755},
		{Name: "usr/bin/wget", Type: tar.TypeSymlink, Linkname: "/bin/busybox"},
		{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n"},
		{Name: "etc/group", Body: "root:x:0:\nsudo:x:27:\nnode:x:1000:\n"},
		{Name: "etc/skel/.profile", Body: "export A=1\n"},
	}
	dir := t.TempDir()
	// extra is a second layer, so its whiteouts apply to the first.
	for _, layer := range [][]ocitest.Entry{entries, extra} {
		if err := ociimage.ApplyLayer(context.Background(), dir, strings.NewReader(string(ocitest.Tar(t, layer...)))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestWrennifyBusybox(t *testing.T) {
	needRoot(t)
	dir := busyboxTree(t)
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatalf("Wrennify: %v", err)
	}
	for _, p := range []string{"usr/local/bin/envd", "usr/local/sbin/wrenn-init"} {
		st := lstat(t, filepath.Join(dir, p))
		if st.Mode&0o7777 != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %o owner %d:%d, want 0755 root", p, st.Mode&0o7777, st.Uid, st.Gid)
		}
	}
	if got := readFile(t, filepath.Join(dir, "usr/local/bin/envd")); got != "binary envd" {
		t.Errorf("envd content %q", got)
	}
	if target, err := os.Readlink(filepath.Join(dir, "usr/bin/tini")); err != nil || target != "/sbin/tini" {
		t.Errorf("usr/bin/tini -> %q (%v), want /sbin/tini", target, err)
	}
	if !rep.UserCreated || rep.UserUID != 1001 || rep.UserGID != 1001 {
		t.Errorf("user: created %v uid %d gid %d, want 1001/1001", rep.UserCreated, rep.UserUID, rep.UserGID)
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, `uid 1000 belongs to "node"`) }) {
		t.Errorf("notes %q do not say uid 1000 is node's", rep.Notes)
	}
	passwd := readFile(t, filepath.Join(dir, "etc/passwd"))
	if !strings.Contains(passwd, "\nuser:x:1001:1001::/home/user:/bin/sh\n") || !strings.Contains(passwd, "node:x:1000:") {
		t.Errorf("passwd:\n%s", passwd)
	}
	group := readFile(t, filepath.Join(dir, "etc/group"))
	if !strings.Contains(group, "\nsudo:x:27:user\n") || !strings.Contains(group, "\nuser:x:1001:\n") {
		t.Errorf("group:\n%s", group)
	}
	shadow := readFile(t, filepath.Join(dir, "etc/shadow"))
	if !regexp.MustCompile(`(?m)^user:!:\d+:0:99999:7:::$`).MatchString(shadow) {
		t.Errorf("shadow:\n%s", shadow)
	}
	if st := lstat(t, filepath.Join(dir, "etc/shadow")); st.Mode&0o777 != 0o640 {
		t.Errorf("shadow mode %o", st.Mode&0o777)
	}
	home := lstat(t, filepath.Join(dir, "home/user"))
	if home.Uid != 1001 || home.Gid != 1001 || home.Mode&0o777 != 0o755 {
		t.Errorf("home: %d:%d %o", home.Uid, home.Gid, home.Mode&0o777)
	}
	if got := readFile(t, filepath.Join(dir, "home/user/.profile")); got != "export A=1\n" {
		t.Errorf("skel not copied: %q", got)
	}
	// No /etc/sudoers.d in this image: no drop-in.
	if _, err := os.Lstat(filepath.Join(dir, "etc/sudoers.d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sudoers.d created: %v", err)
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "var/log"} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
			t.Errorf("/%s: %v", d, err)
		}
	}
	if st := lstat(t, filepath.Join(dir, "tmp")); st.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o", st.Mode&0o7777)
	}
	wantMissing := []string{"chrony", "sudo", "socat", "curl", "ca-certificates", "python3", "procps", "iproute2", "bash"}
	if !slices.Equal(rep.Missing, wantMissing) {
		t.Errorf("Missing = %q, want %q", rep.Missing, wantMissing)
	}
	if len(rep.Required) != 0 || rep.PackageManager != "" {
		t.Errorf("Required %q PackageManager %q", rep.Required, rep.PackageManager)
	}
}

func TestWrennifyNoTini(t *testing.T) {
	needRoot(t)
	// Without tini and without a package manager: refused, naming tini.
	dir := busyboxTree(t, ocitest.Whiteout("sbin/tini"))
	_, err := ociimage.Wrennify(dir, fakeBins(t))
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "tini") {
		t.Fatalf("err = %v, want InvalidArgument naming tini", err)
	}
	// With apk: reported as Required for the builder to install.
	dir = busyboxTree(t, ocitest.Whiteout("sbin/tini"), ocitest.Entry{Name: "sbin/apk", Body: "x", Mode: 0o755})
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Required, []string{"tini"}) || rep.PackageManager != "apk" || !slices.Contains(rep.Missing, "tini") {
		t.Errorf("Required %q Missing %q PackageManager %q", rep.Required, rep.Missing, rep.PackageManager)
	}
	// With a host tini given: installed, nothing required.
	dir = busyboxTree(t, ocitest.Whiteout("sbin/tini"))
	o := fakeBins(t)
	o.TiniBin = o.EnvdBin
	rep, err = ociimage.Wrennify(dir, o)
	if err != nil || len(rep.Required) != 0 {
		t.Fatalf("with TiniBin: err %v Required %q", err, rep.Required)
	}
	if st := lstat(t, filepath.Join(dir, "usr/bin/tini")); st.Mode&0o777 != 0o755 {
		t.Errorf("tini mode %o", st.Mode&0o777)
	}
}

func TestWrennifyRefusesNoShell(t *testing.T) {
	needRoot(t)
	dir := busyboxTree(t, ocitest.Whiteout("bin/sh"))
	_, err := ociimage.Wrennify(dir, fakeBins(t))
	if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != "image has no /bin/sh; Wrenn runs commands with it" {
		t.Fatalf("err = %v", err)
	}
}

func TestWrennifyKeepsExistingUser(t *testing.T) {
	needRoot(t)
	dir := busyboxTree(t,
		ocitest.Entry{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nuser:x:1500:1500::/home/user:/bin/sh\n"},
		ocitest.Entry{Name: "etc/sudoers.d/", Type: tar.TypeDir, Mode: 0o750})
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.UserCreated || rep.UserUID != 1500 {
		t.Errorf("created %v uid %d, want the image's user 1500 kept", rep.UserCreated, rep.UserUID)
	}
	if strings.Count(readFile(t, filepath.Join(dir, "etc/passwd")), "\nuser:") != 1 {
		t.Error("passwd has a second user entry")
	}
}

// TestMinimalImagePipeline pushes the cached Debian tree of `minimal` as an
// OCI image, pulls, unpacks, wrennifies and writes the ext4, then checks it
// with e2fsck and debugfs.
func TestMinimalImagePipeline(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("-short: pushes and unpacks a ~250 MiB Debian tree")
	}
	tree, err := ocitest.MinimalTree()
	if err != nil {
		t.Skipf("no minimal tree: %v", err)
	}
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	host := ocitest.StartRegistry(t)
	ref := host + "/wrenn/minimal:test"
	digest := ocitest.PushDir(t, ref, tree)
	p := pull(t, ref, ociimage.PullOptions{Log: func(s string) { t.Log(s) }})
	if p.Digest != digest {
		t.Fatalf("digest %s, pushed %s", p.Digest, digest)
	}
	dir := unpack(t, p)
	compareTrees(t, tree, dir)
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatalf("Wrennify: %v", err)
	}
	t.Logf("report: %+v", rep)
	if rep.UserCreated || rep.UserUID != 1000 || len(rep.Missing) != 0 || rep.PackageManager != "apt" {
		t.Errorf("report %+v: want the existing user 1000, nothing missing, apt", rep)
	}
	// The tree's own files keep their owners (sudo is setuid root).
	if st := lstat(t, filepath.Join(dir, "usr/bin/sudo")); st.Mode&0o4000 == 0 || st.Uid != 0 {
		t.Errorf("sudo mode %o uid %d", st.Mode, st.Uid)
	}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	size, err := ociimage.MakeExt4(context.Background(), dir, out, 0)
	if err != nil {
		t.Fatalf("MakeExt4: %v", err)
	}
	t.Logf("image %d MiB", size>>20)
	checkExt4(t, out)
}

func TestMakeExt4(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	capv := string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	dir := busyboxTree(t, ocitest.Entry{Name: "bin/ping", Body: "x", Mode: 0o755, Xattrs: map[string]string{"security.capability": capv}})
	if _, err := ociimage.Wrennify(dir, fakeBins(t)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img", "rootfs.ext4")
	size, err := ociimage.MakeExt4(context.Background(), dir, out, 100)
	if err != nil {
		t.Fatalf("MakeExt4: %v", err)
	}
	// Tiny tree: 100 MiB extra + 64 MiB, rounded to 4 MiB.
	if size < 164<<20 || size > 172<<20 {
		t.Errorf("size %d MiB, want about 164", size>>20)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != size {
		t.Errorf("stat %v, size %d", err, size)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}
	checkExt4(t, out)
	ea, err := exec.Command("debugfs", "-R", "ea_list /bin/ping", out).CombinedOutput()
	if err != nil || !strings.Contains(string(ea), "security.capability") {
		t.Errorf("file capability not in the image: %v\n%s", err, ea)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ociimage.MakeExt4(ctx, dir, filepath.Join(t.TempDir(), "x.ext4"), 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

func checkExt4(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	out, err := exec.Command("debugfs", "-R", "stat /usr/local/bin/envd", img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	s := string(out)
	if !regexp.MustCompile(`Mode:\s+0755`).MatchString(s) || !regexp.MustCompile(`User:\s+0\s+Group:\s+0`).MatchString(s) || !strings.Contains(s, "Type: regular") {
		t.Errorf("debugfs stat /usr/local/bin/envd:\n%s", s)
	}
	out, err = exec.Command("debugfs", "-R", "stat /home/user", img).CombinedOutput()
	if err != nil || !regexp.MustCompile(`User:\s+100[01]\s+Group:\s+100[01]`).MatchString(string(out)) {
		t.Errorf("debugfs stat /home/user: %v\n%s", err, out)
	}
	out, err = exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err == nil {
		h := string(out)
		if !regexp.MustCompile(`Block size:\s+4096`).MatchString(h) || !regexp.MustCompile(`Filesystem volume name:\s+wrenn-root`).MatchString(h) ||
			!regexp.MustCompile(`Reserved block count:\s+0\n`).MatchString(h) {
			t.Errorf("dumpe2fs -h: wrong block size, label or reserved blocks:\n%s", h)
		}
	}
}

// compareTrees checks that every entry of want is in got with the same type,
// mode, owner, size, mtime (seconds; directories excepted, the root too) and
// symlink target, and that got has nothing more.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen++
		var w, g syscall.Stat_t
		if err := syscall.Lstat(p, &w); err != nil {
			return err
		}
		if err := syscall.Lstat(filepath.Join(got, rel), &g); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if w.Mode != g.Mode || w.Uid != g.Uid || w.Gid != g.Gid || (w.Mode&syscall.S_IFMT == syscall.S_IFREG && w.Size != g.Size) ||
			w.Rdev != g.Rdev || (rel != "." && w.Mtim.Sec != g.Mtim.Sec) || w.Nlink != g.Nlink && w.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			t.Errorf("%s: mode %o/%o uid %d/%d gid %d/%d size %d/%d mtime %d/%d nlink %d/%d (want/got)",
				rel, w.Mode, g.Mode, w.Uid, g.Uid, w.Gid, g.Gid, w.Size, g.Size, w.Mtim.Sec, g.Mtim.Sec, w.Nlink, g.Nlink)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(filepath.Join(got, rel))
			if a != b {
				t.Errorf("%s: symlink %q, got %q", rel, a, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = filepath.WalkDir(got, func(string, fs.DirEntry, error) error { n++; return nil })
	if n != seen {
		t.Errorf("unpacked tree has %d entries, source %d", n, seen)
	}
	t.Logf("compared %d entries", seen)
}

func TestStaticTini(t *testing.T) {
	cache := os.Getenv("WRENN_CACHE")
	if cache == "" {
		cache = "/var/cache/wrenn"
	}
	tini := ociimage.StaticTini(cache)
	if tini == "" {
		t.Skipf("no tini-static on the host or under %s/rootfs: run `make images` first", cache)
	}
	out, err := exec.Command("readelf", "-l", tini).CombinedOutput()
	if err != nil {
		t.Skipf("readelf: %v", err)
	}
	if strings.Contains(string(out), "program interpreter") {
		t.Errorf("%s is dynamically linked", tini)
	}
	if ociimage.StaticTini(t.TempDir()) != "" && tini != "/usr/bin/tini-static" {
		t.Error("StaticTini found one in an empty cache")
	}
}

func TestWrennifyNoPasswd(t *testing.T) {
	needRoot(t)
	// A shell and nothing else: the account files are made from scratch.
	dir := t.TempDir()
	tarb := ocitest.Tar(t, ocitest.Entry{Name: "bin/sh", Body: "x", Mode: 0o755}, ocitest.Entry{Name: "usr/bin/tini", Body: "x", Mode: 0o755})
	if err := ociimage.ApplyLayer(context.Background(), dir, strings.NewReader(string(tarb))); err != nil {
		t.Fatal(err)
	}
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.UserCreated || rep.UserUID != 1000 {
		t.Errorf("report %+v", rep)
	}
	if got := readFile(t, filepath.Join(dir, "etc/passwd")); got != "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n" {
		t.Errorf("passwd:\n%s", got)
	}
	if got := readFile(t, filepath.Join(dir, "etc/group")); got != "root:x:0:\nuser:x:1000:\n" {
		t.Errorf("group:\n%s", got)
	}
	if st := lstat(t, filepath.Join(dir, "etc/passwd")); st.Mode&0o777 != 0o644 || st.Uid != 0 {
		t.Errorf("passwd mode %o uid %d", st.Mode&0o777, st.Uid)
	}
}

// TestWrennifyDebianWithoutUser takes the minimal tree without its `user`
// (what a debian:bookworm image looks like), wrennifies it and checks the
// account with the image's own tools, run in a chroot by the test only.
func TestWrennifyDebianWithoutUser(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("-short: copies a ~250 MiB Debian tree")
	}
	tree, err := ocitest.MinimalTree()
	if err != nil {
		t.Skipf("no minimal tree: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "tree")
	if out, err := exec.Command("cp", "-a", tree, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	// Remove every trace of user, as if useradd had never run.
	for _, f := range []string{"etc/passwd", "etc/shadow", "etc/group", "etc/gshadow"} {
		p := filepath.Join(dir, f)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if strings.HasPrefix(l, "user:") {
				continue
			}
			if strings.HasPrefix(l, "sudo:") {
				l = strings.TrimSuffix(l, "user")
			}
			keep = append(keep, l)
		}
		if err := os.WriteFile(p, []byte(strings.Join(keep, "\n")+"\n"), 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"home/user", "etc/sudoers.d/wrenn-user"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := ociimage.Wrennify(dir, fakeBins(t))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.UserCreated || rep.UserUID != 1000 || len(rep.Missing) != 0 {
		t.Errorf("report %+v", rep)
	}
	chroot := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("chroot", append([]string{dir}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := chroot("id", "user"); got != "uid=1000(user) gid=1000(user) groups=1000(user),27(sudo)" {
		t.Errorf("id user = %q", got)
	}
	// Read-only consistency checks of passwd/shadow and group/gshadow.
	chroot("pwck", "-r", "-q")
	chroot("grpck", "-r")
	chroot("visudo", "-c", "-q", "-f", "/etc/sudoers.d/wrenn-user")
	if got := chroot("getent", "shadow", "user"); !strings.HasPrefix(got, "user:!:") {
		t.Errorf("shadow entry %q", got)
	}
	if got := chroot("stat", "-c", "%U:%G %a", "/home/user", "/home/user/.bashrc"); got != "user:user 755\nuser:user 644" {
		t.Errorf("home: %q", got)
	}
	// Compare with what useradd wrote in the original tree.
	for _, f := range []string{"etc/passwd", "etc/group", "etc/gshadow", "etc/sudoers.d/wrenn-user"} {
		if a, b := readFile(t, filepath.Join(tree, f)), readFile(t, filepath.Join(dir, f)); a != b {
			t.Errorf("%s differs from useradd's:\n%s\n---\n%s", f, a, b)
		}
	}
}
