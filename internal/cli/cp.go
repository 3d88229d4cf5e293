package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// progressThreshold is the size above which a copy shows a progress bar
// (when stderr is a terminal).
const progressThreshold = 8 << 20

// remoteRe matches "id:/path": an id made of letters, digits, '-' and
// '_', then an absolute guest path.
var remoteRe = regexp.MustCompile(`^([A-Za-z0-9_-]+):(/.*)?$`)

type location struct {
	sandbox string // empty for a local path
	path    string
}

func parseLocation(s string) (location, error) {
	m := remoteRe.FindStringSubmatch(s)
	if m == nil {
		return location{path: s}, nil
	}
	if m[2] == "" {
		return location{}, fmt.Errorf("%q: the sandbox path must be absolute (id:/path)", s)
	}
	return location{sandbox: m[1], path: m[2]}, nil
}

func (a *app) sbxCopy() *cobra.Command {
	return &cobra.Command{
		Use:   "cp <src> <dst>",
		Short: "Copy files and directories to or from a sandbox (id:/path)",
		Long: `Copy a file or a directory tree between this machine and a sandbox.
Exactly one of src and dst is remote, written id:/absolute/path. When dst
is an existing directory the copy goes inside it under src's name. Files
over 8 MiB show a progress bar when stderr is a terminal.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := parseLocation(args[0])
			if err != nil {
				return err
			}
			dst, err := parseLocation(args[1])
			if err != nil {
				return err
			}
			if (src.sandbox == "") == (dst.sandbox == "") {
				return errors.New("cp: exactly one of src and dst must be a sandbox path (id:/path)")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if dst.sandbox != "" {
				return a.upload(cmd.Context(), c.Sandboxes.Handle(dst.sandbox), src.path, dst.path)
			}
			return a.download(cmd.Context(), c.Sandboxes.Handle(src.sandbox), src.path, dst.path)
		},
	}
}

// withProgress wraps r in a progress bar on stderr when the copy is big
// enough and stderr is a terminal. finish must be called after the copy.
func (a *app) withProgress(r io.Reader, size int64, name string) (io.Reader, func()) {
	if _, isTerm := terminalFd(a.env.Stderr); !isTerm || size <= progressThreshold {
		return r, func() {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(a.env.Stderr),
		progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionClearOnFinish(),
	)
	pr := progressbar.NewReader(r, bar)
	return &pr, func() { _ = bar.Finish() }
}

// upload copies a local file or tree to the sandbox.
func (a *app) upload(ctx context.Context, sb *wrenn.Sandbox, src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	// Into an existing directory (or one named with a trailing slash), the
	// copy keeps its own name.
	target := path.Clean(dst)
	if strings.HasSuffix(dst, "/") {
		target = path.Join(target, filepath.Base(src))
	} else if fi, err := sb.Files.Stat(ctx, target); err == nil && fi.Type == api.Dir {
		target = path.Join(target, filepath.Base(src))
	} else if err != nil && !wrenn.IsNotFound(err) {
		return err
	}
	if !st.IsDir() {
		return a.uploadFile(ctx, sb, src, target, st.Size())
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		remote := path.Join(target, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			if _, err := sb.Files.MakeDir(ctx, remote); err != nil && !wrenn.IsConflict(err) {
				return err
			}
			return nil
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return a.uploadFile(ctx, sb, p, remote, info.Size())
		}
		fmt.Fprintf(a.env.Stderr, "wrenn: skipping %s: not a regular file\n", p)
		return nil
	})
}

func (a *app) uploadFile(ctx context.Context, sb *wrenn.Sandbox, local, remote string, size int64) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	r, finish := a.withProgress(f, size, filepath.Base(local))
	defer finish()
	_, err = sb.Files.Write(ctx, remote, r)
	return err
}

// download copies a sandbox file or tree to this machine.
func (a *app) download(ctx context.Context, sb *wrenn.Sandbox, src, dst string) error {
	src = path.Clean(src)
	fi, err := sb.Files.Stat(ctx, src)
	if err != nil {
		return err
	}
	target := dst
	if st, err := os.Stat(dst); err == nil && st.IsDir() || strings.HasSuffix(dst, string(filepath.Separator)) {
		target = filepath.Join(dst, path.Base(src))
	}
	if fi.Type != api.Dir {
		return a.downloadFile(ctx, sb, src, target, size(fi))
	}
	return a.downloadDir(ctx, sb, src, target)
}

func size(fi *api.FileInfo) int64 {
	if fi.Size == nil {
		return -1
	}
	return *fi.Size
}

func (a *app) downloadDir(ctx context.Context, sb *wrenn.Sandbox, remote, local string) error {
	if err := os.MkdirAll(local, 0o755); err != nil {
		return err
	}
	// One level per request: List's depth tops out at 10, trees do not.
	entries, err := sb.Files.List(ctx, remote, 1)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := path.Base(e.Path)
		if name == "." || name == ".." || name == "/" || strings.Contains(name, string(filepath.Separator)) {
			return fmt.Errorf("refusing entry %q from the sandbox", e.Path)
		}
		dst := filepath.Join(local, name)
		switch e.Type {
		case api.Dir:
			err = a.downloadDir(ctx, sb, e.Path, dst)
		case api.File:
			err = a.downloadFile(ctx, sb, e.Path, dst, size(&e))
		default:
			fmt.Fprintf(a.env.Stderr, "wrenn: skipping %s: %s\n", e.Path, e.Type)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *app) downloadFile(ctx context.Context, sb *wrenn.Sandbox, remote, local string, size int64) (err error) {
	rc, err := sb.Files.Read(ctx, remote)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	r, finish := a.withProgress(rc, size, path.Base(remote))
	defer finish()
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("download %s: %w", remote, err)
	}
	return nil
}
