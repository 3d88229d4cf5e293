package ociimage

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Where wrenn-init and envd expect things (internal/guestinit/run_linux.go,
// images/rootfs/build.sh).
const (
	envdPath      = "usr/local/bin/envd"
	initPath      = "usr/local/sbin/wrenn-init"
	tiniPath      = "usr/bin/tini"
	userName      = "user"
	sudoersDropIn = "etc/sudoers.d/wrenn-user"
)

// WrennifyOptions are the host files Wrennify puts into the tree.
type WrennifyOptions struct {
	// EnvdBin and InitBin are the static envd and wrenn-init binaries
	// (required).
	EnvdBin, InitBin string
	// TiniBin, optional, is a static tini placed at /usr/bin/tini when the
	// image has no tini anywhere: without it wrenn-init cannot start envd,
	// so the build VM could not even run the install step.
	TiniBin string
	// Now stamps the files Wrennify writes; zero means time.Now (pass a
	// fixed time for reproducible images).
	Now time.Time
}

// Package is one package of the seed's minimal set and how its presence is
// detected.
type Package struct {
	Name string
	// Paths: any one of them present (symlinks resolved inside the tree)
	// means the package is there. Bare names are searched in the PATH
	// directories envd uses.
	Paths []string
	// Required: Wrenn does not work without it. Otherwise it is what
	// users of E2B-like sandboxes expect.
	Required bool
	Why      string
}

// SeedPackages is the package set of images/rootfs/bootstrap.sh, plus bash.
// Only tini is required: wrenn-init starts envd as `/usr/bin/tini -s --
// envd` (a subreaper for envd's children). chronyd is started only when the
// host gives the guest a PTP clock, and without it the guest clock drifts
// after a snapshot restore until envd's /init sets it; socat is not used
// since envd forwards ports itself (internal/envd/portfwd); sudo is how the
// `user` account becomes root.
var SeedPackages = []Package{
	{Name: "tini", Paths: []string{"/usr/bin/tini"}, Required: true, Why: "wrenn-init starts envd under /usr/bin/tini"},
	{Name: "chrony", Paths: []string{"/usr/sbin/chronyd", "chronyd"}, Why: "clock discipline from the host's PTP clock"},
	{Name: "sudo", Paths: []string{"sudo"}, Why: "the user account becomes root with sudo"},
	{Name: "socat", Paths: []string{"socat"}, Why: "in the seed image; envd itself no longer needs it"},
	{Name: "wget", Paths: []string{"wget"}, Why: "download tool users expect"},
	{Name: "curl", Paths: []string{"curl"}, Why: "download tool users expect"},
	{Name: "ca-certificates", Paths: []string{"/etc/ssl/certs/ca-certificates.crt"}, Why: "TLS roots for downloads"},
	{Name: "python3", Paths: []string{"python3"}, Why: "E2B code assumes python3"},
	{Name: "procps", Paths: []string{"ps"}, Why: "ps, top, kill"},
	{Name: "iproute2", Paths: []string{"ip"}, Why: "ip, ss"},
	{Name: "bash", Paths: []string{"/bin/bash"}, Why: "E2B SDKs run commands as /bin/bash -l -c"},
}

// searchPath is envd's PATH for processes (internal/envd/process/spawn.go).
var searchPath = []string{"usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"}

// Report says what Wrennify found and did.
type Report struct {
	// Missing names the SeedPackages the tree lacks, in SeedPackages order.
	Missing []string
	// Required is the subset of Missing without which Wrenn does not work:
	// the builder must install them (or fail the build with a clear error
	// when PackageManager is "").
	Required []string
	// PackageManager is "apt", "apk" or "".
	PackageManager string
	// UserUID and UserGID are the ids of `user`; UserCreated is false
	// when the image already had a `user` account (kept as it was).
	UserUID, UserGID int
	UserCreated      bool
	// Notes are facts worth a build log line ("uid 1000 belongs to node;
	// user added with uid 1001").
	Notes []string
}

// Wrennify makes the tree at dir bootable by Wrenn: it places envd and
// wrenn-init, the mount points and files wrenn-init and envd expect, and the
// `user` account (uid 1000, or the next free uid when 1000 is taken; own
// group; in group sudo when the image has one; locked password; a sudoers
// drop-in when /etc/sudoers.d exists). It runs nothing from the image: the
// account files are edited directly. It refuses a tree without /bin/sh.
func Wrennify(dir string, o WrennifyOptions) (Report, error) {
	var rep Report
	if o.EnvdBin == "" || o.InitBin == "" {
		return rep, errdefs.New(errdefs.ErrInvalidArgument, "Wrennify needs EnvdBin and InitBin")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	r, err := openRoot(dir)
	if err != nil {
		return rep, err
	}
	defer r.Close()
	if _, err := r.stat("bin/sh"); err != nil {
		return rep, errdefs.New(errdefs.ErrInvalidArgument, "image has no /bin/sh; Wrenn runs commands with it")
	}

	// Mount points and directories wrenn-init and envd use; wrenn-init
	// creates missing mount points too, but only after / is writable.
	for _, d := range []struct {
		rel  string
		mode uint32
	}{
		{"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755},
		{"tmp", 0o1777}, {"var/log", 0o755}, {"etc", 0o755}, {"home", 0o755},
		{"root", 0o700}, {"usr/local/bin", 0o755}, {"usr/local/sbin", 0o755},
	} {
		if err := ensureDir(r, d.rel, d.mode); err != nil {
			return rep, err
		}
	}
	for _, b := range []struct{ src, dst string }{{o.EnvdBin, envdPath}, {o.InitBin, initPath}} {
		if err := installFile(r, b.src, b.dst, o.Now); err != nil {
			return rep, err
		}
	}

	// tini somewhere else (Alpine: /sbin/tini) is linked where wrenn-init
	// looks; none at all and a host tini given: that one.
	if _, err := r.stat(tiniPath); err != nil {
		if found := findBinary(r, "tini"); found != "" {
			if err := r.removeAll(tiniPath); err != nil {
				return rep, err
			}
			if err := symlinkIn(r, "/"+found, tiniPath); err != nil {
				return rep, err
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("linked /usr/bin/tini to /%s", found))
		} else if o.TiniBin != "" {
			if err := installFile(r, o.TiniBin, tiniPath, o.Now); err != nil {
				return rep, err
			}
			rep.Notes = append(rep.Notes, "installed the host's tini at /usr/bin/tini")
		}
	}

	for _, f := range []struct{ rel, content string }{
		{"etc/hostname", "wrenn\n"},
		{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
	} {
		if _, err := r.lstat(f.rel); err == nil {
			continue
		}
		if err := r.writeFile(f.rel, []byte(f.content), 0o644, 0, 0); err != nil {
			return rep, err
		}
	}

	if err := addUser(r, &rep, o.Now); err != nil {
		return rep, fmt.Errorf("add the user account: %w", err)
	}

	for _, p := range SeedPackages {
		if !hasAny(r, p.Paths) {
			rep.Missing = append(rep.Missing, p.Name)
			if p.Required {
				rep.Required = append(rep.Required, p.Name)
			}
		}
	}
	switch {
	case exists(r, "usr/bin/apt-get"):
		rep.PackageManager = "apt"
	case exists(r, "sbin/apk") || exists(r, "usr/bin/apk"):
		rep.PackageManager = "apk"
	}
	if len(rep.Required) > 0 && rep.PackageManager == "" {
		return rep, errdefs.New(errdefs.ErrInvalidArgument, "image lacks %s, which Wrenn needs, and has no apt-get or apk to install it", strings.Join(rep.Required, ", "))
	}
	return rep, nil
}

func exists(r *root, rel string) bool {
	_, err := r.stat(rel)
	return err == nil
}

func hasAny(r *root, paths []string) bool {
	for _, p := range paths {
		if strings.HasPrefix(p, "/") {
			if exists(r, strings.TrimPrefix(p, "/")) {
				return true
			}
		} else if findBinary(r, p) != "" {
			return true
		}
	}
	return false
}

// findBinary returns the relative path of an executable regular file named
// name in searchPath, or "".
func findBinary(r *root, name string) string {
	for _, d := range searchPath {
		rel := d + "/" + name
		st, err := r.stat(rel)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return rel
		}
	}
	return ""
}

func ensureDir(r *root, rel string, mode uint32) error {
	if st, err := r.stat(rel); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return errdefs.New(errdefs.ErrInvalidArgument, "image has /%s but it is not a directory", rel)
		}
		return nil
	}
	fd, err := r.openDir(rel, true)
	if err != nil {
		return fmt.Errorf("create /%s: %w", rel, err)
	}
	_ = unix.Close(fd)
	// O_PATH fds refuse fchmod; go through the parent.
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
		return fmt.Errorf("chmod /%s: %w", rel, err)
	}
	return nil
}

// installFile copies a host file into the tree, root-owned, mode 0755 (what
// build.sh's `install -m 0755` gives envd and wrenn-init).
func installFile(r *root, src, rel string, now time.Time) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, errdefs.FromOS(err))
	}
	if err := r.writeFile(rel, data, 0o755, 0, 0); err != nil {
		return err
	}
	return touch(r, rel, now)
}

func touch(r *root, rel string, t time.Time) error {
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func symlinkIn(r *root, target, rel string) error {
	pfd, base, err := r.parent(rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Symlinkat(target, pfd, base); err != nil {
		return fmt.Errorf("symlink /%s: %w", rel, err)
	}
	return nil
}

// dbFile is one of /etc/passwd, group, shadow, gshadow as lines of fields.
type dbFile struct {
	rel    string
	exists bool
	lines  [][]string
	mode   uint32
	uid    int
	gid    int
}

func readDB(r *root, rel string, mode uint32) (*dbFile, error) {
	db := &dbFile{rel: rel, mode: mode}
	st, err := r.stat(rel)
	if err == nil {
		db.exists = true
		db.mode = st.Mode & 0o7777
		db.uid, db.gid = int(st.Uid), int(st.Gid)
	}
	data, err := r.readFile(rel)
	if err != nil {
		return nil, err
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if l == "" {
			continue
		}
		db.lines = append(db.lines, strings.Split(l, ":"))
	}
	return db, nil
}

func (db *dbFile) find(name string) []string {
	for _, l := range db.lines {
		if l[0] == name {
			return l
		}
	}
	return nil
}

// ids returns the numeric ids in field i (2 in passwd and group).
func (db *dbFile) ids() map[int]string {
	out := map[int]string{}
	for _, l := range db.lines {
		if len(l) > 2 {
			if n, err := strconv.Atoi(l[2]); err == nil {
				out[n] = l[0]
			}
		}
	}
	return out
}

func (db *dbFile) write(r *root) error {
	var b strings.Builder
	for _, l := range db.lines {
		b.WriteString(strings.Join(l, ":"))
		b.WriteByte('\n')
	}
	return r.writeFile(db.rel, []byte(b.String()), db.mode, db.uid, db.gid)
}

// addUser creates `user` unless the image has it. Ids: 1000 if free in both
// passwd and group, else the next id free in both, so uid == gid like
// useradd --user-group gives.
func addUser(r *root, rep *Report, now time.Time) error {
	passwd, err := readDB(r, "etc/passwd", 0o644)
	if err != nil {
		return err
	}
	group, err := readDB(r, "etc/group", 0o644)
	if err != nil {
		return err
	}
	// envd runs commands as root too and looks root up by name; an image
	// without a passwd (or without root in it) gets the usual entry.
	if passwd.find("root") == nil {
		passwd.lines = append([][]string{{"root", "x", "0", "0", "root", "/root", "/bin/sh"}}, passwd.lines...)
		if err := passwd.write(r); err != nil {
			return err
		}
		rep.Notes = append(rep.Notes, "added root to /etc/passwd")
	}
	if group.find("root") == nil {
		group.lines = append([][]string{{"root", "x", "0", ""}}, group.lines...)
		if err := group.write(r); err != nil {
			return err
		}
	}
	if l := passwd.find(userName); len(l) >= 7 {
		rep.UserUID, _ = strconv.Atoi(l[2])
		rep.UserGID, _ = strconv.Atoi(l[3])
		rep.Notes = append(rep.Notes, fmt.Sprintf("the image has its own %q account (uid %d), kept as it is", userName, rep.UserUID))
		return ensureHome(r, l[5], rep.UserUID, rep.UserGID)
	}
	shadowGID := 0
	if g := group.find("shadow"); g != nil {
		shadowGID, _ = strconv.Atoi(g[2])
	}
	shadow, err := readDB(r, "etc/shadow", 0o640)
	if err != nil {
		return err
	}
	if !shadow.exists {
		shadow.gid = shadowGID
	}
	gshadow, err := readDB(r, "etc/gshadow", 0o640)
	if err != nil {
		return err
	}

	uids, gids := passwd.ids(), group.ids()
	uid := 1000
	gid := -1
	if g := group.find(userName); g != nil {
		gid, _ = strconv.Atoi(g[2])
	}
	for {
		_, uidTaken := uids[uid]
		_, gidTaken := gids[uid]
		if !uidTaken && (gid >= 0 || !gidTaken) {
			break
		}
		uid++
	}
	if owner, ok := uids[1000]; ok {
		rep.Notes = append(rep.Notes, fmt.Sprintf("uid 1000 belongs to %q; %q added with uid %d", owner, userName, uid))
	}
	newGroup := gid < 0
	if newGroup {
		gid = uid
	}
	shell := "/bin/sh"
	if exists(r, "bin/bash") {
		shell = "/bin/bash"
	}
	home := "/home/" + userName
	passwd.lines = append(passwd.lines, []string{userName, "x", strconv.Itoa(uid), strconv.Itoa(gid), "", home, shell})
	if newGroup {
		group.lines = append(group.lines, []string{userName, "x", strconv.Itoa(gid), ""})
		if gshadow.exists {
			gshadow.lines = append(gshadow.lines, []string{userName, "!", "", ""})
		}
	}
	// Supplementary group sudo, as bootstrap.sh's useradd --groups sudo.
	addMember := func(db *dbFile, idx int) {
		for _, l := range db.lines {
			if l[0] == "sudo" && len(l) > idx {
				members := slices.DeleteFunc(strings.Split(l[idx], ","), func(s string) bool { return s == "" })
				if !slices.Contains(members, userName) {
					l[idx] = strings.Join(append(members, userName), ",")
				}
			}
		}
	}
	addMember(group, 3)
	if gshadow.exists {
		addMember(gshadow, 3)
	}
	days := strconv.FormatInt(now.Unix()/86400, 10)
	// "!": locked password, as useradd without --password leaves it; sudo
	// works through the NOPASSWD drop-in.
	shadow.lines = append(shadow.lines, []string{userName, "!", days, "0", "99999", "7", "", "", ""})

	for _, db := range []*dbFile{passwd, group, shadow} {
		if err := db.write(r); err != nil {
			return err
		}
	}
	if gshadow.exists {
		if err := gshadow.write(r); err != nil {
			return err
		}
	}
	rep.UserUID, rep.UserGID, rep.UserCreated = uid, gid, true

	if st, err := r.stat("etc/sudoers.d"); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := r.writeFile(sudoersDropIn, []byte(userName+" ALL=(ALL:ALL) NOPASSWD: ALL\n"), 0o440, 0, 0); err != nil {
			return err
		}
	}
	return ensureHome(r, home, uid, gid)
}

// ensureHome makes the home directory (0755, owned by the user) with the
// top level of /etc/skel copied in, as useradd --create-home does.
func ensureHome(r *root, home string, uid, gid int) error {
	rel, err := clean(home)
	if err != nil || rel == "" {
		return nil // a home of "/" or garbage: leave it
	}
	if _, err := r.stat(rel); err == nil {
		return nil
	}
	if err := ensureDir(r, rel, 0o755); err != nil {
		return err
	}
	pfd, base, err := r.parent(rel, false)
	if err != nil {
		return err
	}
	err = unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	_ = unix.Close(pfd)
	if err != nil {
		return fmt.Errorf("chown %s: %w", home, err)
	}
	fd, err := r.openDir("etc/skel", false)
	if err != nil {
		return nil // no skeleton
	}
	skel, err := r.realPath(fd)
	_ = unix.Close(fd)
	if err != nil {
		return nil
	}
	ents, _ := os.ReadDir(skel)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := r.readFile(path.Join("etc/skel", e.Name()))
		if err != nil {
			continue
		}
		if err := r.writeFile(path.Join(rel, e.Name()), data, 0o644, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// StaticTini finds a statically linked tini for WrennifyOptions.TiniBin: the
// host's /usr/bin/tini-static (Debian package tini), else the one in the
// cached Debian tree of `minimal` (wrennCache/rootfs/<key>/tree/usr/bin/
// tini-static; wrennCache is WRENN_CACHE, /var/cache/wrenn by default).
// It returns "" when there is none.
func StaticTini(wrennCache string) string {
	cands := []string{"/usr/bin/tini-static"}
	if wrennCache != "" {
		m, _ := filepath.Glob(filepath.Join(wrennCache, "rootfs", "*", "tree", "usr", "bin", "tini-static"))
		cands = append(cands, m...)
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	return ""
}
