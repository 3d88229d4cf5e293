package recipe_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/templates/buildctx"
	"github.com/wrenn/wrenn/internal/templates/recipe"
)

var _ recipe.FileReader = (*buildctx.Context)(nil)

// TestWithBuildContext walks the path the builder takes: unpack the upload,
// parse the recipe it holds, and for each COPY resolve, digest and tar the
// sources with the step's own fields.
func TestWithBuildContext(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{
		"wrenn.yaml":    "dockerfile: Dockerfile\nsteps:\n  - copy: {src: \"app/*.py\", dest: /srv/, chown: \"1000\"}\nstart: [python3, /srv/main.py]\nready: {port: 8000}\n",
		"Dockerfile":    "FROM minimal\nWORKDIR /srv\nCOPY --chmod=0600 conf.ini .\n",
		"conf.ini":      "[x]\n",
		"app/main.py":   "print(1)\n",
		"app/util.py":   "u = 1\n",
		"app/README":    "not copied\n",
		".dockerignore": "*.md\n",
		"docs/notes.md": "ignored\n",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	bc, err := buildctx.Unpack(context.Background(), &buf, filepath.Join(t.TempDir(), "ctx"), buildctx.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	data, err := bc.ReadFile("wrenn.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := recipe.Parse("wrenn.yaml", data, bc, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range r.Steps {
		if s.Kind != recipe.KindCopy {
			continue
		}
		if _, err := bc.Digest(s.Sources); err != nil {
			t.Fatalf("%s:%d: %v", s.File, s.Line, err)
		}
		owner, err := buildctx.ParseChown(s.Chown, []byte("root:x:0:0::/:/bin/sh\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := bc.WriteTar(context.Background(), &out, s.Sources, s.Dest, owner, s.ChmodMode()); err != nil {
			t.Fatalf("%s:%d: %v", s.File, s.Line, err)
		}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				got = append(got, fmt.Sprintf("%s:%o", h.Name, h.Mode))
			}
		}
	}
	if want := "srv/conf.ini:600 srv/main.py:644 srv/util.py:644"; strings.Join(got, " ") != want {
		t.Fatalf("copied %v, want %s", got, want)
	}
}
