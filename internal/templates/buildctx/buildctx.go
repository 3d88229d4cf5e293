// Package buildctx holds a template build context: the directory a user
// uploads with a recipe, whose files COPY and ADD steps copy into the image.
//
// # API
//
//	func Unpack(ctx context.Context, r io.Reader, dir string, limits Limits) (*Context, error)
//	func (c *Context) Resolve(sources []string) ([]string, error)
//	func (c *Context) Digest(sources []string) (string, error)
//	func (c *Context) WriteTar(ctx context.Context, w io.Writer, sources []string, dest string, chown UIDGID, chmod fs.FileMode) error
//	func (c *Context) ReadFile(name string) ([]byte, error)
//	func (c *Context) Close() error
//	func ParseChown(s string, passwd, group []byte) (UIDGID, error)
//
// The context arrives as a tar stream, gzip-compressed or not (detected by
// its magic bytes). Unpack refuses entries that would land outside the
// directory ("..", absolute names, a parent that is a symlink) with
// errdefs.ErrInvalidArgument, and a context beyond its limits with
// errdefs.ErrTooLarge. It writes through an os.Root as a second line of
// defence, keeps symlinks as links (never followed by Resolve, Digest or
// WriteTar) and hard links within the tree. Owners are dropped. Modes are
// kept in an index, not on disk: on the host every file is 0600 and every
// directory 0700, so no setuid file or world-readable secret of a user ever
// sits on the host; WriteTar reproduces the real modes.
//
// .dockerignore at the root is honoured with moby/patternmatcher, the
// matcher Docker itself uses, so its rules (** , !exceptions) are Docker's.
//
// # COPY layout
//
// WriteTar lays out entries as Docker's COPY places them under dest: a file
// onto dest, or into dest/ when dest ends in "/" or the sources are several;
// a directory's contents (not the directory) into dest. Names in the tar are
// relative to "/", so the builder extracts it in the guest with
//
//	tar -x -p --numeric-owner --no-overwrite-dir -C / -f -
//
// --no-overwrite-dir matters: the tar carries entries for dest's parents
// (root-owned, 0755) so that missing ones are created, and those must not
// change directories that already exist, such as /home/user. A hard link is
// written as a second regular file; a top-level symlink source is copied as
// the link (Docker would follow it). One COPY rule needs the image and so is
// not applied here: Docker copies a single file source *into* dest when dest
// (without a trailing "/") already is a directory in the image; the builder
// can test that in the guest and pass dest + "/".
package buildctx

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Defaults for Limits' zero fields.
const (
	DefaultMaxBytes = 512 << 20
	DefaultMaxFiles = 100000
)

// Limits bound a build context.
type Limits struct {
	MaxBytes int64 // sum of regular file sizes; 0 = DefaultMaxBytes
	MaxFiles int   // entries of any kind; 0 = DefaultMaxFiles
}

// UIDGID is a numeric owner.
type UIDGID struct{ UID, GID int }

// entry is what the index knows of one path.
type entry struct {
	typ    byte // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	mode   int64
	size   int64
	target string // symlink target
	mtime  time.Time
	disk   string // for regular files: the path on disk holding the content
}

// Context is an unpacked build context.
type Context struct {
	// Dir is the directory holding the files (see the package comment for
	// their on-disk modes).
	Dir string

	root     *os.Root
	entries  map[string]*entry   // by clean relative path; "." is the root
	children map[string][]string // sorted child names by directory path
	ignore   *patternmatcher.PatternMatcher
}

func invalid(format string, args ...any) error {
	return errdefs.New(errdefs.ErrInvalidArgument, format, args...)
}

// Unpack extracts the tar stream r (optionally gzip) into dir, which it
// creates (0700) if missing and which should be empty. On error, what was extracted stays in dir for
// the caller to remove with the directory.
func Unpack(ctx context.Context, r io.Reader, dir string, limits Limits) (*Context, error) {
	if limits.MaxBytes <= 0 {
		limits.MaxBytes = DefaultMaxBytes
	}
	if limits.MaxFiles <= 0 {
		limits.MaxFiles = DefaultMaxFiles
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating build context dir: %w", errdefs.FromOS(err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening build context dir: %w", errdefs.FromOS(err))
	}
	c := &Context{
		Dir: dir, root: root,
		entries:  map[string]*entry{".": {typ: tar.TypeDir, mode: 0o755, mtime: time.Now()}},
		children: map[string][]string{},
	}
	if err := c.unpack(ctx, r, limits); err != nil {
		root.Close()
		return nil, err
	}
	for d := range c.children {
		slices.Sort(c.children[d])
	}
	if e := c.entries[".dockerignore"]; e != nil && e.typ == tar.TypeReg {
		f, err := root.Open(".dockerignore")
		if err != nil {
			root.Close()
			return nil, fmt.Errorf("reading .dockerignore: %w", err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err == nil {
			c.ignore, err = patternmatcher.New(patterns)
		}
		if err != nil {
			root.Close()
			return nil, invalid(".dockerignore: %v", err)
		}
	}
	return c, nil
}

func (c *Context) unpack(ctx context.Context, r io.Reader, limits Limits) error {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return invalid("build context: bad gzip stream: %v", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	tr := tar.NewReader(r)
	var total int64
	files := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalid("build context: reading tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		files++
		if files > limits.MaxFiles {
			return errdefs.New(errdefs.ErrTooLarge, "build context has more than %d entries (the limit)", limits.MaxFiles)
		}
		if name == "." {
			if hdr.Typeflag != tar.TypeDir {
				return invalid("build context: the root entry is not a directory")
			}
			continue
		}
		if err := c.parents(name); err != nil {
			return err
		}
		e := &entry{mode: hdr.Mode & 0o7777, mtime: hdr.ModTime}
		prev := c.entries[name]
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.typ = tar.TypeDir
			if prev != nil {
				if prev.typ != tar.TypeDir {
					return invalid("build context: %s is both a directory and not", name)
				}
				*prev = *e
				continue
			}
			if err := c.root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("build context: creating %s: %w", name, errdefs.FromOS(err))
			}
		case tar.TypeReg:
			if prev != nil && prev.typ != tar.TypeReg {
				return invalid("build context: %s given twice with different types", name)
			}
			total += hdr.Size
			if total > limits.MaxBytes {
				return errdefs.New(errdefs.ErrTooLarge, "build context is larger than %d bytes (the limit)", limits.MaxBytes)
			}
			e.typ, e.size, e.disk = tar.TypeReg, hdr.Size, name
			if prev != nil {
				// A later entry replaces an earlier one, as tar does; a hard
				// link to the old one keeps the old content.
				if err := c.root.Remove(name); err != nil {
					return fmt.Errorf("build context: replacing %s: %w", name, errdefs.FromOS(err))
				}
			}
			if err := c.writeFile(name, tr, hdr.Size); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if prev != nil {
				return invalid("build context: %s given twice", name)
			}
			if hdr.Linkname == "" {
				return invalid("build context: symlink %s has no target", name)
			}
			e.typ, e.target, e.mode = tar.TypeSymlink, hdr.Linkname, 0o777
			if err := c.root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("build context: creating symlink %s: %w", name, errdefs.FromOS(err))
			}
		case tar.TypeLink:
			if prev != nil {
				return invalid("build context: %s given twice", name)
			}
			target, err := entryName(hdr.Linkname)
			if err != nil {
				return err
			}
			t := c.entries[target]
			if t == nil || t.typ != tar.TypeReg {
				return invalid("build context: hard link %s: target %s is not a file earlier in the archive", name, hdr.Linkname)
			}
			*e = *t
			if err := c.root.Link(t.disk, name); err != nil {
				return fmt.Errorf("build context: linking %s: %w", name, errdefs.FromOS(err))
			}
			e.disk = name
		default:
			return invalid("build context: %s: only files, directories and links are allowed (type %q)", name, hdr.Typeflag)
		}
		if prev == nil {
			c.entries[name] = e
			dir := path.Dir(name)
			c.children[dir] = append(c.children[dir], path.Base(name))
		} else {
			*prev = *e
		}
	}
}

// entryName checks and cleans an archive path.
func entryName(n string) (string, error) {
	// PATH_MAX: longer names cannot be created anyway, and bounding them
	// keeps the per-entry parent walk cheap.
	if len(n) > 4096 {
		return "", invalid("build context: path %.64q... is longer than 4096 bytes", n)
	}
	if strings.HasPrefix(n, "/") {
		return "", invalid("build context: absolute path %q", n)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", invalid("build context: path %q leaves the context", n)
		}
	}
	if strings.ContainsRune(n, 0) {
		return "", invalid("build context: path %q contains NUL", n)
	}
	return path.Clean(n), nil
}

// parents makes sure name's parent directories exist as directories,
// creating missing ones; a symlink or file on the way is an error.
func (c *Context) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		e := c.entries[p]
		switch {
		case e == nil:
			if err := c.root.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("build context: creating %s: %w", p, errdefs.FromOS(err))
			}
			c.entries[p] = &entry{typ: tar.TypeDir, mode: 0o755, mtime: time.Now()}
			pd := path.Dir(p)
			c.children[pd] = append(c.children[pd], path.Base(p))
		case e.typ == tar.TypeSymlink:
			return invalid("build context: %s is under symlink %s (a path may not go through a symlink)", name, p)
		case e.typ != tar.TypeDir:
			return invalid("build context: %s is under %s, which is not a directory", name, p)
		}
	}
	return nil
}

func (c *Context) writeFile(name string, r io.Reader, size int64) error {
	f, err := c.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("build context: creating %s: %w", name, errdefs.FromOS(err))
	}
	_, err = io.CopyN(f, r, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return invalid("build context: writing %s: %v", name, err)
	}
	return nil
}

// Close releases the directory handle; it does not remove Dir.
func (c *Context) Close() error { return c.root.Close() }

// ReadFile reads a regular file of the context (the recipe itself), even
// one .dockerignore excludes, as Docker does. Symlinks are not followed.
func (c *Context) ReadFile(name string) ([]byte, error) {
	n, err := cleanSource(name)
	if err != nil {
		return nil, err
	}
	e := c.entries[n]
	if e == nil {
		return nil, errdefs.New(errdefs.ErrNotFound, "%s: not in the build context", name)
	}
	if e.typ != tar.TypeReg {
		return nil, invalid("%s: not a regular file", name)
	}
	b, err := c.root.ReadFile(e.disk)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the build context: %w", name, errdefs.FromOS(err))
	}
	return b, nil
}

// cleanSource makes a source relative to the root: a leading "/" means the
// root, as in Docker; ".." may not leave it.
func cleanSource(s string) (string, error) {
	if s == "" {
		return "", invalid("empty source path")
	}
	if strings.Contains("/"+s+"/", "/../") {
		return "", invalid("source %q leaves the build context", s)
	}
	c := strings.TrimPrefix(path.Clean("/"+s), "/")
	if c == "" {
		c = "."
	}
	return c, nil
}

func (c *Context) ignored(p string) bool {
	if c.ignore == nil || p == "." {
		return false
	}
	m, err := c.ignore.MatchesOrParentMatches(p)
	return err == nil && m
}

// included says whether p exists and is not excluded by .dockerignore.
func (c *Context) included(p string) bool {
	if c.entries[p] == nil {
		return false
	}
	if !c.ignored(p) {
		return true
	}
	return len(c.list(p)) > 0
}

// Resolve expands sources (globs like Docker's: *, ? and [...] within one
// path component) to the context paths they name, in order, without ones
// .dockerignore excludes. A source that names nothing is an error naming it.
func (c *Context) Resolve(sources []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, src := range sources {
		clean, err := cleanSource(src)
		if err != nil {
			return nil, err
		}
		var matches []string
		if !strings.ContainsAny(clean, `*?[\`) {
			if c.included(clean) {
				matches = []string{clean}
			}
		} else {
			matches, err = c.glob(clean)
			if err != nil {
				return nil, invalid("source %q: %v", src, err)
			}
		}
		if len(matches) == 0 {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "source %q: no such file in the build context (or excluded by .dockerignore)", src)
		}
		for _, m := range matches {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// glob matches pattern one component at a time, never through a symlink.
func (c *Context) glob(pattern string) ([]string, error) {
	cur := []string{"."}
	for _, comp := range strings.Split(pattern, "/") {
		var next []string
		for _, dir := range cur {
			if e := c.entries[dir]; e == nil || e.typ != tar.TypeDir {
				continue
			}
			for _, child := range c.children[dir] {
				ok, err := filepath.Match(comp, child)
				if err != nil {
					return nil, err
				}
				if ok {
					next = append(next, path.Join(dir, child))
				}
			}
		}
		cur = next
	}
	out := cur[:0]
	for _, p := range cur {
		if c.included(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// list is p and, if p is a directory, everything under it that
// .dockerignore does not exclude, in lexical order. An excluded directory is
// still listed when an exception (!pattern) brings back something under it,
// as Docker does.
func (c *Context) list(p string) []string {
	e := c.entries[p]
	if e == nil {
		return nil
	}
	if e.typ != tar.TypeDir {
		if c.ignored(p) {
			return nil
		}
		return []string{p}
	}
	var sub []string
	if !c.ignored(p) || c.ignore.Exclusions() {
		for _, child := range c.children[p] {
			sub = append(sub, c.list(path.Join(p, child))...)
		}
	}
	if c.ignored(p) && len(sub) == 0 {
		return nil
	}
	return append([]string{p}, sub...)
}

// walk calls fn for every path of list(p).
func (c *Context) walk(p string, fn func(string, *entry) error) error {
	for _, q := range c.list(p) {
		if err := fn(q, c.entries[q]); err != nil {
			return err
		}
	}
	return nil
}

// Digest is a sha256 over the paths, types, modes, link targets and
// contents of what sources resolve to (not owners or times): the cache input
// of a COPY step, the same for the same files in any unpack.
func (c *Context) Digest(sources []string) (string, error) {
	resolved, err := c.Resolve(sources)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	io.WriteString(h, "wrenn-buildctx-digest-v1\x00")
	for _, r := range resolved {
		fmt.Fprintf(h, "source\x00%s\x00", r)
		err := c.walk(r, func(p string, e *entry) error {
			fmt.Fprintf(h, "%s\x00%c\x00%o\x00%s\x00%d\x00", p, e.typ, e.mode, e.target, e.size)
			if e.typ != tar.TypeReg {
				return nil
			}
			f, err := c.root.Open(e.disk)
			if err != nil {
				return fmt.Errorf("digest: opening %s: %w", p, errdefs.FromOS(err))
			}
			defer f.Close()
			if n, err := io.Copy(h, f); err != nil || n != e.size {
				return fmt.Errorf("digest: reading %s: %d of %d bytes: %v", p, n, e.size, err)
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// WriteTar writes a tar of sources laid out as Docker's COPY to dest (an
// absolute guest path; a trailing "/" means "into this directory"), owned
// by chown. chmod, when not 0, replaces the mode of every copied entry
// (Docker's --chmod); see the package comment for how to extract it.
func (c *Context) WriteTar(ctx context.Context, w io.Writer, sources []string, dest string, chown UIDGID, chmod fs.FileMode) error {
	if !path.IsAbs(dest) {
		return invalid("destination %q is not absolute", dest)
	}
	resolved, err := c.Resolve(sources)
	if err != nil {
		return err
	}
	intoDir := strings.HasSuffix(dest, "/") || len(resolved) > 1
	dst := path.Clean(dest)
	now := time.Now()
	// The layout is planned first so that, as in Docker, a later source
	// replaces an earlier one of the same name (a tar cannot take an entry
	// back once written).
	type planned struct {
		name  string
		e     *entry
		owner UIDGID
		mode  int64
	}
	var plan []planned
	at := map[string]int{}
	put := func(name string, e *entry, owner UIDGID, mode int64) error {
		rel := strings.TrimPrefix(name, "/")
		if rel == "" {
			return nil
		}
		p := planned{rel, e, owner, mode}
		if i, ok := at[rel]; ok {
			plan[i] = p
			return nil
		}
		at[rel] = len(plan)
		plan = append(plan, p)
		return nil
	}
	modeOf := func(e *entry) int64 {
		if chmod != 0 && e.typ != tar.TypeSymlink {
			return int64(chmod & 0o7777)
		}
		return e.mode
	}
	// Parents of where things land: created if missing, root-owned.
	parentsOf := func(p string) error {
		var chain []string
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			chain = append(chain, d)
		}
		slices.Reverse(chain)
		for _, d := range chain {
			if err := put(d, &entry{typ: tar.TypeDir, mtime: now}, UIDGID{}, 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	if intoDir {
		if err := parentsOf(dst); err != nil {
			return err
		}
		if err := put(dst, &entry{typ: tar.TypeDir, mtime: now}, chown, 0o755); err != nil {
			return err
		}
	}
	for _, r := range resolved {
		e := c.entries[r]
		if e.typ == tar.TypeDir {
			// A directory's contents go into dest (or dest/).
			if !intoDir {
				if err := parentsOf(dst); err != nil {
					return err
				}
				if err := put(dst, e, chown, modeOf(e)); err != nil {
					return err
				}
			}
			err := c.walk(r, func(p string, pe *entry) error {
				if p == r {
					return nil
				}
				rel := p
				if r != "." {
					rel = strings.TrimPrefix(p, r+"/")
				}
				return put(path.Join(dst, rel), pe, chown, modeOf(pe))
			})
			if err != nil {
				return err
			}
			continue
		}
		target := dst
		if intoDir {
			target = path.Join(dst, path.Base(r))
		} else if err := parentsOf(dst); err != nil {
			return err
		}
		if err := put(target, e, chown, modeOf(e)); err != nil {
			return err
		}
	}
	tw := tar.NewWriter(w)
	for _, p := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.writeEntry(tw, p.name, p.e, p.owner, p.mode); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	return nil
}

// writeEntry writes one entry (and a file's content) to tw.
func (c *Context) writeEntry(tw *tar.Writer, rel string, e *entry, owner UIDGID, mode int64) error {
	hdr := &tar.Header{
		Name: rel, Mode: mode, Uid: owner.UID, Gid: owner.GID,
		ModTime: e.mtime, Typeflag: e.typ, Format: tar.FormatPAX,
	}
	switch e.typ {
	case tar.TypeDir:
		hdr.Name += "/"
	case tar.TypeSymlink:
		hdr.Linkname = e.target
	case tar.TypeReg:
		hdr.Size = e.size
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header of %s: %w", rel, err)
	}
	if e.typ != tar.TypeReg {
		return nil
	}
	f, err := c.root.Open(e.disk)
	if err != nil {
		return fmt.Errorf("opening %s: %w", e.disk, errdefs.FromOS(err))
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, e.size); err != nil {
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	return nil
}

// ParseChown resolves a --chown value ("user", "user:group", "1000",
// "1000:1000") against an image's /etc/passwd and /etc/group, as BuildKit
// does: a user name without a group takes the user's primary group from
// /etc/passwd; a number without a group uses the same number as GID; an empty
// group ("user:") is the same as none. "" is 0:0. An unknown name is
// ErrInvalidArgument (BuildKit would silently use 0).
func ParseChown(s string, passwd, group []byte) (UIDGID, error) {
	if s == "" {
		return UIDGID{}, nil
	}
	u, g, _ := strings.Cut(s, ":")
	if u == "" {
		return UIDGID{}, invalid("chown %q: empty user", s)
	}
	var id UIDGID
	if n, ok := number(u); ok {
		id = UIDGID{n, n}
	} else {
		f, err := lookup(u, passwd, 4, "user", "/etc/passwd")
		if err != nil {
			return UIDGID{}, err
		}
		uid, ok1 := number(f[2])
		gid, ok2 := number(f[3])
		if !ok1 || !ok2 {
			return UIDGID{}, invalid("chown: user %s has a bad id in the image's /etc/passwd", u)
		}
		id = UIDGID{uid, gid}
	}
	if g == "" {
		return id, nil
	}
	if n, ok := number(g); ok {
		id.GID = n
		return id, nil
	}
	f, err := lookup(g, group, 3, "group", "/etc/group")
	if err != nil {
		return UIDGID{}, err
	}
	gid, ok := number(f[2])
	if !ok {
		return UIDGID{}, invalid("chown: group %s has a bad id in the image's /etc/group", g)
	}
	id.GID = gid
	return id, nil
}

// number reads a uid/gid: "root" or 0..2^32-1, like BuildKit.
func number(s string) (int, bool) {
	if s == "root" {
		return 0, true
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return int(n), err == nil
}

// lookup finds the line of a passwd/group file whose first field is name,
// split into at least min fields.
func lookup(name string, db []byte, min int, what, file string) ([]string, error) {
	for line := range strings.SplitSeq(string(db), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) >= min && f[0] == name {
			return f, nil
		}
	}
	return nil, invalid("chown: no %s %q in the image's %s", what, name, file)
}
