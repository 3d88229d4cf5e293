package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// validManifest is a manifest parseManifest accepts, as a fuzz seed.
const validManifest = `{
  "version": 1,
  "kind": "template",
  "created": "2026-11-29T10:00:00Z",
  "driver": "qemu",
  "kernel_version": "6.1.192-microvm",
  "spec": {"template": "minimal", "vcpus": 2},
  "files": [
    {"name": "vmstate", "role": "state", "size": 5, "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
    {"name": "memory", "role": "memory", "size": 0, "sample": "0000000000000000000000000000000000000000000000000000000000000000"}
  ],
  "disk_ref": {"path": "/var/lib/wrenn/images/minimal/frozen.qcow2", "size": 1, "sample": "0000000000000000000000000000000000000000000000000000000000000000"}
}`

func addSeeds(f *testing.F) {
	for _, s := range []string{
		validManifest,
		`{"version":2,"kind":"hibernate"}`,
		`{"version":1,"files":[{"name":"../x","role":"state"}]}`,
		`{"version":1e400}`,
		`null`, `[]`, ``, `{`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParseManifest feeds arbitrary bytes to the parser Open uses. It
// must never panic; whatever it refuses must be a CorruptError
// (FailedPrecondition) naming the manifest; whatever it accepts must be
// a manifest that passes check, names only safe files, and reads back
// the same after encoding.
func FuzzParseManifest(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest("/snap", data)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != ManifestName || !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("refusal is not a CorruptError about the manifest: %#v", err)
			}
			return
		}
		if err := m.check(); err != nil {
			t.Fatalf("accepted a manifest that fails check: %v", err)
		}
		for _, file := range m.Files {
			if filepath.Base(file.Name) != file.Name || !filepath.IsLocal(file.Name) {
				t.Fatalf("accepted unsafe file name %q", file.Name)
			}
		}
		data2, err := encodeManifest(m)
		if err != nil {
			t.Fatalf("cannot encode an accepted manifest: %v", err)
		}
		m2, err := parseManifest("/snap", data2)
		if err != nil {
			t.Fatalf("accepted manifest does not read back: %v\n%s", err, data2)
		}
		if !m.Created.Equal(m2.Created) {
			t.Fatalf("created %v read back as %v", m.Created, m2.Created)
		}
		m.Created, m2.Created = m.Created.UTC(), m2.Created.UTC()
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("manifest changed through encoding:\n%+v\n%+v", m, m2)
		}
	})
}

// FuzzOpen writes arbitrary bytes as the manifest of a directory holding
// one small file and opens it: Open must refuse or accept cleanly, and
// accept only when the manifest describes that file exactly.
func FuzzOpen(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "vmstate"), []byte("hello"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ManifestName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(context.Background(), dir)
		if err != nil {
			if !errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("Open refused with neither FailedPrecondition nor NotFound: %v", err)
			}
			return
		}
		for _, file := range s.Manifest.Files {
			if file.Name != "vmstate" || file.Size != 5 {
				t.Fatalf("Open accepted a manifest listing %+v", file)
			}
		}
		if s.Manifest.DiskRef != nil {
			if _, err := os.Stat(s.Manifest.DiskRef.Path); err != nil {
				t.Fatalf("Open accepted a disk reference that is not there: %v", err)
			}
		}
	})
}

func TestValidSeedParses(t *testing.T) {
	m, err := parseManifest("/snap", []byte(validManifest))
	if err != nil {
		t.Fatalf("seed manifest refused: %v", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(m.Spec, &spec); err != nil || spec["template"] != "minimal" {
		t.Errorf("spec = %s (%v)", m.Spec, err)
	}
}

// TestOpenAcceptsExactManifest is FuzzOpen's accepting path: a hand-written
// manifest that describes the directory exactly opens.
func TestOpenAcceptsExactManifest(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vmstate"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := `{"version":1,"kind":"fork-source","created":"2026-11-29T10:00:00+01:00","driver":"firecracker","kernel_version":"6.1",
	"files":[{"name":"vmstate","role":"state","size":5,"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}]}`
	if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s.MemoryPath() != "" || s.DiskPath() != "" || s.Manifest.Kind != KindForkSource {
		t.Errorf("opened %+v", s)
	}
}
