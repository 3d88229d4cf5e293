package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/filesystem"
)

// Stat describes one entry; a symlink is described, not followed.
func (s *Service) Stat(ctx context.Context, req *connect.Request[pb.StatRequest]) (*connect.Response[pb.StatResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	e, err := stat(u.Resolve(req.Msg.GetPath()), newNames())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.StatResponse{Entry: e}), nil
}

// MakeDir creates a directory and its missing parents, owned by the user.
func (s *Service) MakeDir(ctx context.Context, req *connect.Request[pb.MakeDirRequest]) (*connect.Response[pb.MakeDirResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	p := u.Resolve(req.Msg.GetPath())
	fi, err := os.Stat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrAlreadyExists, "directory %s already exists", p))
	case err == nil:
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "%s exists and is not a directory", p))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, errdefs.ToConnect(fmt.Errorf("make directory %s: %w", p, errdefs.FromOS(err)))
	}
	if err := MakeDirs(p, u); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	e, err := stat(p, newNames())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.MakeDirResponse{Entry: e}), nil
}

// Move renames source to destination, creating the destination's missing
// parent directories. Both must be on the same filesystem.
func (s *Service) Move(ctx context.Context, req *connect.Request[pb.MoveRequest]) (*connect.Response[pb.MoveResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	src, dst := u.Resolve(req.Msg.GetSource()), u.Resolve(req.Msg.GetDestination())
	if _, err := os.Lstat(src); err != nil {
		return nil, errdefs.ToConnect(fmt.Errorf("move %s: %w", src, errdefs.FromOS(err)))
	}
	if err := MakeDirs(filepath.Dir(dst), u); err != nil {
		return nil, errdefs.ToConnect(fmt.Errorf("move %s to %s: %w", src, dst, err))
	}
	if err := os.Rename(src, dst); err != nil {
		// Linux answers ENOTEMPTY or EEXIST for a non-empty destination
		// directory depending on the filesystem; clients see one code.
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrAlreadyExists, "move %s to %s: destination is a non-empty directory", src, dst))
		}
		return nil, errdefs.ToConnect(fmt.Errorf("move %s to %s: %w", src, dst, errdefs.FromOS(err)))
	}
	e, err := stat(dst, newNames())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.MoveResponse{Entry: e}), nil
}

// Remove deletes an entry and, for a directory, everything below it. A
// symlink is removed, never what it points to.
func (s *Service) Remove(ctx context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.RemoveResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	p := u.Resolve(req.Msg.GetPath())
	if _, err := os.Lstat(p); err != nil {
		return nil, errdefs.ToConnect(fmt.Errorf("remove %s: %w", p, errdefs.FromOS(err)))
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, errdefs.ToConnect(fmt.Errorf("remove %s: %w", p, errdefs.FromOS(err)))
	}
	return connect.NewResponse(&pb.RemoveResponse{}), nil
}

// ListDir lists a directory depth levels deep (0 counts as 1), parents
// before their children and siblings by name. The directory itself may be
// reached through a symlink, but symlinks below it are listed and never
// descended into, so link cycles cannot make the walk loop.
func (s *Service) ListDir(ctx context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	root := u.Resolve(req.Msg.GetPath())
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, errdefs.ToConnect(fmt.Errorf("list %s: %w", root, errdefs.FromOS(err)))
	}
	if !fi.IsDir() {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "list %s: not a directory", root))
	}
	var entries []*pb.EntryInfo
	if err := walk(ctx, root, depth, newNames(), &entries, true); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.ListDirResponse{Entries: entries}), nil
}

// walk appends the entries of dir and, while depth allows, of its real
// subdirectories. Only an unreadable top directory is an error; unreadable
// subdirectories are listed but not entered, and entries that vanish
// mid-walk are skipped.
func walk(ctx context.Context, dir string, depth int, n *names, out *[]*pb.EntryInfo, top bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		if top {
			return fmt.Errorf("list %s: %w", dir, errdefs.FromOS(err))
		}
		return nil
	}
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		fi, err := de.Info()
		if err != nil {
			continue
		}
		*out = append(*out, entry(p, fi, n))
		if depth > 1 && fi.IsDir() {
			if err := walk(ctx, p, depth-1, n, out, false); err != nil {
				return err
			}
		}
	}
	return nil
}
