package filesystem

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/filesystem"
)

// names turns uids and gids into account names, remembering each answer
// for the life of one request so a large listing reads /etc/passwd once
// per distinct owner rather than once per entry.
type names struct {
	users  map[uint32]string
	groups map[uint32]string
}

func newNames() *names {
	return &names{users: map[uint32]string{}, groups: map[uint32]string{}}
}

// user returns the name of uid, or the number itself when the guest has no
// such account (files from archives often carry foreign ids).
func (n *names) user(uid uint32) string {
	if name, ok := n.users[uid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	n.users[uid] = name
	return name
}

func (n *names) group(gid uint32) string {
	if name, ok := n.groups[gid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	n.groups[gid] = name
	return name
}

// stat describes the entry at p itself (a symlink is described, not
// followed).
func stat(p string, n *names) (*pb.EntryInfo, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, errdefs.FromOS(err))
	}
	return entry(p, fi, n), nil
}

// entry builds the wire description of p from its lstat result.
func entry(p string, fi fs.FileInfo, n *names) *pb.EntryInfo {
	mode := fi.Mode()
	e := &pb.EntryInfo{
		Name: fi.Name(),
		Path: p,
		Size: fi.Size(),
		// The Go FileMode bits: permissions in the low 9 bits, setuid,
		// setgid and sticky, and the type bits (fs.ModeDir, fs.ModeSymlink,
		// ...) in the high bits. Regular files therefore read as plain
		// permissions, e.g. 0644.
		Mode:         uint32(mode),
		Permissions:  mode.String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	switch {
	case mode.IsRegular():
		e.Type = pb.FileType_FILE_TYPE_FILE
	case mode.IsDir():
		e.Type = pb.FileType_FILE_TYPE_DIRECTORY
	case mode&fs.ModeSymlink != 0:
		e.Type = pb.FileType_FILE_TYPE_SYMLINK
		target := symlinkTarget(p)
		e.SymlinkTarget = &target
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = n.user(st.Uid)
		e.Group = n.group(st.Gid)
	}
	return e
}

// symlinkTarget is the absolute path the link at p finally leads to, as
// E2B reports it. A dangling or looping link has no final target, so the
// link's own text is given instead, made absolute against its directory.
func symlinkTarget(p string) string {
	if resolved, err := filepath.EvalSymlinks(p); err == nil {
		return resolved
	}
	raw, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	if !filepath.IsAbs(raw) {
		raw = filepath.Join(filepath.Dir(p), raw)
	}
	return raw
}
