package buildctx

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// ent is one tar entry of a test context.
type ent struct {
	name string
	typ  byte // 0 = regular file
	mode int64
	body string // content, or link target
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, mode: 0o644, body: body} }
func exe(name, body string) ent  { return ent{name: name, typ: tar.TypeReg, mode: 0o755, body: body} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, mode: 0o777, body: target}
}
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, mode: 0o644, body: target}
}
func withMode(e ent, mode int64) ent         { e.mode = mode; return e }
func mkTar(t *testing.T, ents ...ent) []byte { return mkTarAt(t, time.Unix(1700000000, 0), ents...) }

func mkTarAt(t *testing.T, mtime time.Time, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, ModTime: mtime, Uid: 4242, Gid: 4242}
		switch e.typ {
		case tar.TypeReg:
			h.Size = int64(len(e.body))
		case tar.TypeSymlink, tar.TypeLink:
			h.Linkname = e.body
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func unpack(t *testing.T, data []byte, limits Limits) (*Context, error) {
	t.Helper()
	c, err := Unpack(context.Background(), bytes.NewReader(data), filepath.Join(t.TempDir(), "ctx"), limits)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustUnpack(t *testing.T, ents ...ent) *Context {
	t.Helper()
	c, err := unpack(t, mkTar(t, ents...), Limits{})
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return c
}

var sample = []ent{
	file("Dockerfile", "FROM minimal\n"),
	dir("app"),
	file("app/main.py", "print('hi')\n"),
	exe("app/run.sh", "#!/bin/sh\n"),
	dir("app/lib"),
	file("app/lib/util.py", "x = 1\n"),
	symlink("app/current", "lib"),
	file("req.txt", "pandas\n"),
	file("notes.md", "# notes\n"),
}

func TestUnpackBasics(t *testing.T) {
	c := mustUnpack(t, append(sample, hardlink("app/main2.py", "app/main.py"), file("implicit/deep/x", "x"))...)
	b, err := c.ReadFile("app/main.py")
	if err != nil || string(b) != "print('hi')\n" {
		t.Fatalf("ReadFile: %q %v", b, err)
	}
	if b, err := c.ReadFile("app/main2.py"); err != nil || string(b) != "print('hi')\n" {
		t.Fatalf("hard link: %q %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(c.Dir, "app/current")); err != nil || target != "lib" {
		t.Fatalf("symlink kept as a link: %q %v", target, err)
	}
	// On the host nothing is group/other accessible and nothing setuid.
	err = filepath.Walk(c.Dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink == 0 && fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s has mode %v on the host", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := c.entries["app/run.sh"]; e == nil || e.mode != 0o755 {
		t.Fatalf("mode not kept in the index: %+v", e)
	}
	if e := c.entries["implicit/deep"]; e == nil || e.typ != tar.TypeDir {
		t.Fatalf("implicit parent not created: %+v", e)
	}
	if _, err := c.ReadFile("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := c.ReadFile("../etc/passwd"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("traversal: %v", err)
	}
	if _, err := c.ReadFile("app/current"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("ReadFile of a symlink: %v", err)
	}
}

func TestUnpackGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(mkTar(t, sample...))
	zw.Close()
	c, err := unpack(t, buf.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadFile("req.txt"); err != nil || string(b) != "pandas\n" {
		t.Fatalf("%q %v", b, err)
	}
}

func TestUnpackRefuses(t *testing.T) {
	tests := []struct {
		name string
		ents []ent
		want string
	}{
		{"dotdot", []ent{file("../x", "x")}, `path "../x" leaves the context`},
		{"inner dotdot", []ent{file("a/../../x", "x")}, "leaves the context"},
		{"absolute", []ent{file("/etc/passwd", "x")}, `absolute path "/etc/passwd"`},
		{"too long", []ent{file(strings.Repeat("a/", 2100)+"x", "x")}, "longer than 4096 bytes"},
		{"symlink parent outside", []ent{symlink("etc", "/etc"), file("etc/passwd", "x")}, "etc/passwd is under symlink etc"},
		{"symlink parent inside", []ent{dir("real"), symlink("link", "real"), file("link/x", "x")}, "link/x is under symlink link"},
		{"symlink parent dotdot", []ent{symlink("up", ".."), file("up/x", "x")}, "under symlink up"},
		{"file parent", []ent{file("f", "x"), file("f/g", "y")}, "which is not a directory"},
		{"hardlink outside", []ent{hardlink("h", "/etc/shadow")}, "absolute path"},
		{"hardlink to nothing", []ent{hardlink("h", "missing")}, "not a file earlier in the archive"},
		{"hardlink to dir", []ent{dir("d"), hardlink("h", "d")}, "not a file earlier"},
		{"device", []ent{{name: "dev", typ: tar.TypeChar, mode: 0o600}}, "only files, directories and links"},
		{"fifo", []ent{{name: "p", typ: tar.TypeFifo, mode: 0o600}}, "only files, directories and links"},
		{"dir over file", []ent{file("a", "x"), dir("a")}, "both a directory and not"},
		{"symlink twice", []ent{symlink("a", "x"), symlink("a", "y")}, "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := unpack(t, mkTar(t, tt.ents...), Limits{})
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want invalid argument containing %q", err, tt.want)
			}
		})
	}
	// Nothing escaped: the parent of the context dir holds only it.
	parent := t.TempDir()
	_, err := Unpack(context.Background(), bytes.NewReader(mkTar(t, symlink("out", ".."), file("out/escaped", "x"))), filepath.Join(parent, "ctx"), Limits{})
	if err == nil {
		t.Fatal("no error")
	}
	if _, err := os.Stat(filepath.Join(parent, "escaped")); !os.IsNotExist(err) {
		t.Fatalf("a file escaped the context dir: %v", err)
	}
}

func TestUnpackGarbage(t *testing.T) {
	_, err := unpack(t, []byte("this is not a tar stream at all, not even close, and is long enough to fill a header? no"), Limits{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err %v", err)
	}
	_, err = unpack(t, []byte{0x1f, 0x8b, 0, 1, 2}, Limits{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad gzip: %v", err)
	}
	tr := mkTar(t, file("big", strings.Repeat("x", 4096)))
	_, err = unpack(t, tr[:1500], Limits{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestUnpackLimits(t *testing.T) {
	_, err := unpack(t, mkTar(t, file("a", strings.Repeat("x", 600)), file("b", strings.Repeat("x", 600))), Limits{MaxBytes: 1000})
	if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), "1000 bytes") {
		t.Fatalf("bytes: %v", err)
	}
	if _, err := unpack(t, mkTar(t, file("a", strings.Repeat("x", 1000))), Limits{MaxBytes: 1000}); err != nil {
		t.Fatalf("at the byte limit: %v", err)
	}
	_, err = unpack(t, mkTar(t, file("a", ""), file("b", ""), file("c", "")), Limits{MaxFiles: 2})
	if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), "more than 2 entries") {
		t.Fatalf("files: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Unpack(ctx, bytes.NewReader(mkTar(t, sample...)), t.TempDir(), Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestResolve(t *testing.T) {
	c := mustUnpack(t, append(sample, file("a1.txt", "1"), file("a2.txt", "2"), file("b.txt", "b"), file("app/lib/t.py", "t"))...)
	tests := []struct {
		src  []string
		want []string
		err  string
	}{
		{src: []string{"req.txt"}, want: []string{"req.txt"}},
		{src: []string{"/req.txt"}, want: []string{"req.txt"}},
		{src: []string{"./app/"}, want: []string{"app"}},
		{src: []string{"."}, want: []string{"."}},
		{src: []string{"a*.txt"}, want: []string{"a1.txt", "a2.txt"}},
		{src: []string{"?.txt"}, want: []string{"b.txt"}},
		{src: []string{"a[2-9].txt", "b.txt"}, want: []string{"a2.txt", "b.txt"}},
		{src: []string{"app/*/*.py"}, want: []string{"app/lib/t.py", "app/lib/util.py"}},
		{src: []string{"app/current/*"}, err: `source "app/current/*": no such file`},
		{src: []string{"app/current"}, want: []string{"app/current"}},
		{src: []string{"b.txt", "b.txt"}, want: []string{"b.txt"}},
		{src: []string{"missing.txt"}, err: `source "missing.txt": no such file`},
		{src: []string{"z*"}, err: `source "z*": no such file`},
		{src: []string{"../x"}, err: `source "../x" leaves the build context`},
		{src: []string{"[x"}, err: "syntax error in pattern"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.src, ","), func(t *testing.T) {
			got, err := c.Resolve(tt.src)
			if tt.err != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v %v, want %v", got, err, tt.want)
			}
		})
	}
}

func TestDockerignore(t *testing.T) {
	c := mustUnpack(t, append(sample,
		file(".dockerignore", "# build junk\n*.md\napp/lib\n!app/lib/keep.py\nsecret*\n"),
		file("app/lib/keep.py", "k"), file("secret.env", "TOKEN=x"))...)
	if _, err := c.Resolve([]string{"notes.md"}); err == nil || !strings.Contains(err.Error(), "excluded by .dockerignore") {
		t.Fatalf("ignored file resolved: %v", err)
	}
	if got, err := c.Resolve([]string{"*"}); err != nil || strings.Contains(strings.Join(got, " "), "notes.md") || strings.Contains(strings.Join(got, " "), "secret") {
		t.Fatalf("glob returned ignored files: %v %v", got, err)
	}
	got := tarNames(t, c, []string{"."}, "/ctx/")
	for _, n := range got {
		if strings.HasSuffix(n, ".md") || strings.Contains(n, "secret") || n == "ctx/app/lib/util.py" {
			t.Fatalf("ignored %s copied: %v", n, got)
		}
	}
	if !contains(got, "ctx/app/lib/keep.py") || !contains(got, "ctx/app/main.py") {
		t.Fatalf("exception or plain file not copied: %v", got)
	}
	if got, err := c.Resolve([]string{"app/lib"}); err != nil || !reflect.DeepEqual(got, []string{"app/lib"}) {
		t.Fatalf("an ignored dir with an exception inside: %v %v", got, err)
	}
	if got := tarNames(t, c, []string{"app/lib"}, "/l/"); !reflect.DeepEqual(got, []string{"l/", "l/keep.py"}) {
		t.Fatalf("only the exception is copied: %v", got)
	}
	// The recipe can still be read even if ignored.
	c2 := mustUnpack(t, file("Dockerfile", "FROM x"), file(".dockerignore", "Dockerfile\n"))
	if _, err := c2.ReadFile("Dockerfile"); err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDigest(t *testing.T) {
	d := func(t *testing.T, srcs []string, ents ...ent) string {
		t.Helper()
		got, err := mustUnpack(t, ents...).Digest(srcs)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := []string{"."}
	ref := d(t, all, sample...)
	if !strings.HasPrefix(ref, "sha256:") || len(ref) != len("sha256:")+64 {
		t.Fatalf("digest %q", ref)
	}
	// Stable: another unpack, other times and owners, other entry order.
	reordered := append([]ent(nil), sample...)
	for i, j := 0, len(reordered)-1; i < j; i, j = i+1, j-1 {
		reordered[i], reordered[j] = reordered[j], reordered[i]
	}
	c, err := unpack(t, mkTarAt(t, time.Unix(1, 0), reordered...), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Digest(all); got != ref {
		t.Fatalf("digest changed across unpacks: %s vs %s", got, ref)
	}
	if got := d(t, all, sample...); got != ref {
		t.Fatalf("not stable")
	}
	change := func(i int, e ent) []ent {
		out := append([]ent(nil), sample...)
		out[i] = e
		return out
	}
	variants := map[string][]ent{
		"content":        change(2, file("app/main.py", "print('bye')\n")),
		"mode":           change(2, withMode(file("app/main.py", "print('hi')\n"), 0o600)),
		"name":           change(2, file("app/main2.py", "print('hi')\n")),
		"link target":    change(6, symlink("app/current", "lib2")),
		"type":           change(6, file("app/current", "lib")),
		"added file":     append(append([]ent(nil), sample...), file("new", "")),
		"moved boundary": change(3, exe("app/run.sh", "#!/bin/sh")),
	}
	seen := map[string]string{ref: "base"}
	for name, ents := range variants {
		got := d(t, all, ents...)
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same digest as %s", name, prev)
		}
		seen[got] = name
	}
	// Only what the sources name counts.
	sub := d(t, []string{"app"}, sample...)
	if got := d(t, []string{"app"}, change(7, file("req.txt", "numpy\n"))...); got != sub {
		t.Fatalf("a file outside the sources changed the digest")
	}
	if got := d(t, []string{"app"}, change(2, file("app/main.py", "x"))...); got == sub {
		t.Fatalf("a file inside the sources did not change the digest")
	}
	// Ignored files do not count.
	ign := append(append([]ent(nil), sample...), file(".dockerignore", "notes.md\n"))
	base := d(t, all, ign...)
	ign2 := append(append([]ent(nil), ign...), file("notes.md", "changed"))
	if got := d(t, all, ign2...); got != base {
		t.Fatalf("an ignored file changed the digest")
	}
	if _, err := mustUnpack(t, sample...).Digest([]string{"nope"}); err == nil {
		t.Fatal("digest of a missing source")
	}
}

// tarEntry is what a test compares of a WriteTar entry.
type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Body     string
}

func readTar(t *testing.T, data []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		body := string(b)
		if h.Typeflag == tar.TypeSymlink {
			body = h.Linkname
		}
		out = append(out, tarEntry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, body})
	}
}

func writeTar(t *testing.T, c *Context, srcs []string, dest string, own UIDGID, chmod os.FileMode) []tarEntry {
	t.Helper()
	var buf bytes.Buffer
	if err := c.WriteTar(context.Background(), &buf, srcs, dest, own, chmod); err != nil {
		t.Fatalf("WriteTar(%v, %s): %v", srcs, dest, err)
	}
	return readTar(t, buf.Bytes())
}

func tarNames(t *testing.T, c *Context, srcs []string, dest string) []string {
	var names []string
	for _, e := range writeTar(t, c, srcs, dest, UIDGID{}, 0) {
		names = append(names, e.Name)
	}
	return names
}

func TestWriteTarLayouts(t *testing.T) {
	c := mustUnpack(t, append(sample, file("a1.txt", "1"), file("a2.txt", "2"))...)
	u := UIDGID{1000, 1000}
	const D, R = tar.TypeDir, tar.TypeReg
	root := func(name string) tarEntry { return tarEntry{name, D, 0o755, 0, 0, ""} }
	tests := []struct {
		name  string
		srcs  []string
		dest  string
		chmod os.FileMode
		want  []tarEntry
	}{
		{"file to file", []string{"req.txt"}, "/opt/app/requirements.txt", 0, []tarEntry{
			root("opt/"), root("opt/app/"),
			{"opt/app/requirements.txt", R, 0o644, 1000, 1000, "pandas\n"},
		}},
		{"file into dir/", []string{"req.txt"}, "/opt/", 0, []tarEntry{
			{"opt/", D, 0o755, 1000, 1000, ""},
			{"opt/req.txt", R, 0o644, 1000, 1000, "pandas\n"},
		}},
		{"several files into dir", []string{"req.txt", "Dockerfile"}, "/x/y/", 0, []tarEntry{
			root("x/"),
			{"x/y/", D, 0o755, 1000, 1000, ""},
			{"x/y/req.txt", R, 0o644, 1000, 1000, "pandas\n"},
			{"x/y/Dockerfile", R, 0o644, 1000, 1000, "FROM minimal\n"},
		}},
		{"glob of several is a dir even without /", []string{"a*.txt"}, "/t", 0, []tarEntry{
			{"t/", D, 0o755, 1000, 1000, ""},
			{"t/a1.txt", R, 0o644, 1000, 1000, "1"},
			{"t/a2.txt", R, 0o644, 1000, 1000, "2"},
		}},
		{"dir contents into dest", []string{"app"}, "/home/user/app", 0, []tarEntry{
			root("home/"), root("home/user/"),
			{"home/user/app/", D, 0o755, 1000, 1000, ""},
			{"home/user/app/current", tar.TypeSymlink, 0o777, 1000, 1000, "lib"},
			{"home/user/app/lib/", D, 0o755, 1000, 1000, ""},
			{"home/user/app/lib/util.py", R, 0o644, 1000, 1000, "x = 1\n"},
			{"home/user/app/main.py", R, 0o644, 1000, 1000, "print('hi')\n"},
			{"home/user/app/run.sh", R, 0o755, 1000, 1000, "#!/bin/sh\n"},
		}},
		{"dir contents into dest/ with chmod", []string{"app/lib/"}, "/srv/", 0o700, []tarEntry{
			{"srv/", D, 0o755, 1000, 1000, ""},
			{"srv/util.py", R, 0o700, 1000, 1000, "x = 1\n"},
		}},
		{"symlink source copied as link", []string{"app/current"}, "/l", 0, []tarEntry{
			{"l", tar.TypeSymlink, 0o777, 1000, 1000, "lib"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := writeTar(t, c, tt.srcs, tt.dest, u, tt.chmod)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
	// The whole context into a dir: every file once, under it.
	names := tarNames(t, c, []string{"."}, "/ctx")
	for _, want := range []string{"ctx/", "ctx/Dockerfile", "ctx/app/", "ctx/app/lib/util.py", "ctx/a1.txt"} {
		if !contains(names, want) {
			t.Fatalf("%s missing from %v", want, names)
		}
	}
	var buf bytes.Buffer
	if err := c.WriteTar(context.Background(), &buf, []string{"req.txt"}, "relative", UIDGID{}, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("relative dest: %v", err)
	}
	if err := c.WriteTar(context.Background(), &buf, []string{"nope"}, "/x", UIDGID{}, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("missing source: %v", err)
	}
}

func TestWriteTarLaterSourceWins(t *testing.T) {
	c := mustUnpack(t, file("x.txt", "top"), dir("sub"), file("sub/x.txt", "sub"), file("sub/y", "y"))
	got := writeTar(t, c, []string{"x.txt", "sub"}, "/d/", UIDGID{}, 0)
	want := []tarEntry{
		{"d/", tar.TypeDir, 0o755, 0, 0, ""},
		{"d/x.txt", tar.TypeReg, 0o644, 0, 0, "sub"},
		{"d/y", tar.TypeReg, 0o644, 0, 0, "y"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	got = writeTar(t, c, []string{"sub", "x.txt"}, "/d/", UIDGID{}, 0)
	if got[1].Body != "top" {
		t.Fatalf("the later source must win: %+v", got)
	}
}

func TestParseChown(t *testing.T) {
	passwd := []byte("root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\napp:x:1001:50::/:/bin/sh\nweird:x:abc:1::/:/bin/sh\n")
	group := []byte("root:x:0:\nuser:x:1000:\nstaff:x:50:user\n")
	tests := []struct {
		in   string
		want UIDGID
		err  string
	}{
		{in: "", want: UIDGID{0, 0}},
		{in: "user", want: UIDGID{1000, 1000}},
		{in: "app", want: UIDGID{1001, 50}},
		{in: "app:", want: UIDGID{1001, 50}},
		{in: "user:staff", want: UIDGID{1000, 50}},
		{in: "1001", want: UIDGID{1001, 1001}},
		{in: "1001:50", want: UIDGID{1001, 50}},
		{in: "root:user", want: UIDGID{0, 1000}},
		{in: "root", want: UIDGID{0, 0}},
		{in: "4294967295", want: UIDGID{4294967295, 4294967295}},
		{in: "nobody", err: `no user "nobody" in the image's /etc/passwd`},
		{in: "user:wheel", err: `no group "wheel" in the image's /etc/group`},
		{in: "weird", err: "bad id"},
		{in: "-1", err: `no user "-1"`},
		{in: ":50", err: "empty user"},
	}
	for _, tt := range tests {
		got, err := ParseChown(tt.in, passwd, group)
		if tt.err != "" {
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %v %v, want %v", tt.in, got, err, tt.want)
		}
	}
}
