package buildctx

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// FuzzUnpack feeds arbitrary bytes (seeded with tars of hostile shapes) to
// Unpack and checks that nothing is written outside the context directory,
// that failures are classified, and that a successful context can be
// resolved, digested and copied.
func FuzzUnpack(f *testing.F) {
	seeds := [][]ent{
		sample,
		{symlink("l", "/etc"), file("l/x", "x")},
		{symlink("l", ".."), file("l/x", "x")},
		{file("../x", "x")},
		{dir("a"), hardlink("a/h", "a"), file("a/b", "b"), hardlink("c", "a/b")},
		{file("a", "1"), file("a", "2"), file(".dockerignore", "a\n!b\n")},
	}
	for _, s := range seeds {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range s {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.body}
			if e.typ == tar.TypeReg {
				h.Linkname, h.Size = "", int64(len(e.body))
			}
			tw.WriteHeader(h)
			if e.typ == tar.TypeReg {
				io.WriteString(tw, e.body)
			}
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		c, err := Unpack(context.Background(), bytes.NewReader(data), filepath.Join(parent, "ctx"), Limits{MaxBytes: 1 << 20, MaxFiles: 1000})
		names, lerr := os.ReadDir(parent)
		if lerr != nil || len(names) != 1 || names[0].Name() != "ctx" {
			t.Fatalf("something was written beside the context dir: %v %v", names, lerr)
		}
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrTooLarge) && !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		defer c.Close()
		if _, err := c.Digest([]string{"."}); err != nil {
			t.Fatalf("digest of a good context: %v", err)
		}
		if err := c.WriteTar(context.Background(), io.Discard, []string{"."}, "/x/", UIDGID{}, 0); err != nil {
			t.Fatalf("tar of a good context: %v", err)
		}
	})
}
