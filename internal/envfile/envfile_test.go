package envfile

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.env")
	os.WriteFile(good, []byte("# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y\"\nD=\n"), 0o600)
	m, err := Read(good)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"A": "1", "B": "two words", "C": "x=y", "D": ""}; !maps.Equal(m, want) {
		t.Errorf("got %v, want %v", m, want)
	}

	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("A=1\nnot an assignment\n1X=2\n"), 0o600)
	_, err = Read(bad)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("bad file: %v, want InvalidArgument naming lines 2 and 3", err)
	}

	if _, err := Read(filepath.Join(dir, "none.env")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	big := filepath.Join(dir, "big.env")
	os.WriteFile(big, []byte("A="+strings.Repeat("x", MaxSize)), 0o600)
	if _, err := Read(big); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("oversize file: %v, want InvalidArgument", err)
	}
}
