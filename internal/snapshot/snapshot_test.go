package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

var testSpec = json.RawMessage(`{"template": "minimal", "vcpus": 2, "memory_mb": 64, "note": "<&>"}`)

func testManifest() Manifest {
	return Manifest{
		Kind: KindHibernate, Driver: "qemu", KernelVersion: "6.1.192-microvm", Spec: testSpec,
		Files: []File{
			{Name: "vmstate", Role: RoleState},
			{Name: "snapshot.json", Role: RoleState},
			{Name: MemoryName, Role: RoleMemory},
			{Name: "disk.qcow2", Role: RoleDisk},
		},
	}
}

// writeSnapshot makes a complete snapshot in a new directory.
func writeSnapshot(t *testing.T) (string, *Snapshot) {
	t.Helper()
	dir := t.TempDir()
	makeSnapshotFiles(t, dir)
	s, err := Write(context.Background(), dir, testManifest())
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return dir, s
}

func TestWriteOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir, w := writeSnapshot(t)
	assertNoTemp(t, dir)

	o, err := Open(ctx, dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !reflect.DeepEqual(w, o) {
		t.Errorf("Open returned\n%+v\nWrite returned\n%+v", o, w)
	}
	m := o.Manifest
	if m.Version != Version || m.Kind != KindHibernate || m.Driver != "qemu" || m.KernelVersion != "6.1.192-microvm" {
		t.Errorf("manifest head = %+v", m)
	}
	if age := time.Since(m.Created); age < 0 || age > time.Minute {
		t.Errorf("Created = %v, want about now", m.Created)
	}
	var got, want any
	if err := json.Unmarshal(m.Spec, &got); err != nil {
		t.Fatalf("spec read back is not JSON: %v", err)
	}
	json.Unmarshal(testSpec, &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spec = %s, want %s", m.Spec, testSpec)
	}
	sizes := map[string]int64{"vmstate": 200 * kib, "snapshot.json": 28, MemoryName: memSize, "disk.qcow2": 8 * mib}
	for _, f := range m.Files {
		if f.Size != sizes[f.Name] {
			t.Errorf("%s: size %d, want %d", f.Name, f.Size, sizes[f.Name])
		}
		if (f.Role == RoleState) != (f.SHA256 != "") || (f.Role != RoleState) != (f.Sample != "") {
			t.Errorf("%s (%s): sha256=%q sample=%q", f.Name, f.Role, f.SHA256, f.Sample)
		}
	}
	if o.MemoryPath() != filepath.Join(dir, MemoryName) || o.DiskPath() != filepath.Join(dir, "disk.qcow2") {
		t.Errorf("MemoryPath %q, DiskPath %q", o.MemoryPath(), o.DiskPath())
	}
	if err := o.Compatible("qemu", "6.1.192-microvm"); err != nil {
		t.Errorf("Compatible with its own driver and kernel: %v", err)
	}
	for _, c := range [][2]string{{"firecracker", "6.1.192-microvm"}, {"qemu", "6.1.200-microvm"}} {
		if err := o.Compatible(c[0], c[1]); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("Compatible(%q, %q) = %v, want FailedPrecondition", c[0], c[1], err)
		}
	}

	// Writing again over the same files (a re-snapshot in place) gives a
	// manifest Open accepts.
	if _, err := Write(ctx, dir, testManifest()); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	if _, err := Open(ctx, dir); err != nil {
		t.Fatalf("Open after second Write: %v", err)
	}
}

func TestWriteDiscoversFiles(t *testing.T) {
	dir := t.TempDir()
	makeSnapshotFiles(t, dir)
	// Leftovers of interrupted writes are not part of the snapshot.
	for _, name := range []string{".memory.tmp-0a1b2c", "vmstate.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := testManifest()
	m.Files = nil
	m.Kind = KindTemplate
	s, err := Write(context.Background(), dir, m)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	roles := map[string]Role{}
	for _, f := range s.Manifest.Files {
		roles[f.Name] = f.Role
	}
	want := map[string]Role{"vmstate": RoleState, "snapshot.json": RoleState, MemoryName: RoleMemory, "disk.qcow2": RoleDisk}
	if !reflect.DeepEqual(roles, want) {
		t.Errorf("discovered %v, want %v", roles, want)
	}
	if _, err := Open(context.Background(), dir); err != nil {
		t.Errorf("Open: %v", err)
	}
}

func TestWriteDiskRef(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	makeSnapshotFiles(t, dir)
	frozen := filepath.Join(t.TempDir(), "frozen.qcow2")
	sparseFile(t, frozen, 16*mib, [2]int64{0, 64 * kib})
	m := testManifest()
	m.Kind = KindForkSource
	m.Files = m.Files[:3]
	m.DiskRef = &Ref{Path: frozen}
	s, err := Write(ctx, dir, m)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if s.DiskPath() != frozen || s.Manifest.DiskRef.Size != 16*mib {
		t.Errorf("DiskPath %q, ref %+v", s.DiskPath(), s.Manifest.DiskRef)
	}
	if _, err := Open(ctx, dir); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := os.Truncate(frozen, 8*mib); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, dir)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != frozen || !strings.Contains(ce.Problem, "size") {
		t.Errorf("Open with a truncated referenced disk = %v, want a CorruptError naming %s", err, frozen)
	}
	if err := os.Remove(frozen); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, dir); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), frozen) {
		t.Errorf("Open with the referenced disk gone = %v, want NotFound naming it", err)
	}
}

func TestWriteRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, dir string, m *Manifest)
		kind error
		want string
	}{
		{"unknown kind", func(t *testing.T, dir string, m *Manifest) { m.Kind = "paused" }, errdefs.ErrInvalidArgument, `unknown kind "paused"`},
		{"no driver", func(t *testing.T, dir string, m *Manifest) { m.Driver = "" }, errdefs.ErrInvalidArgument, "no VMM driver"},
		{"spec not JSON", func(t *testing.T, dir string, m *Manifest) { m.Spec = json.RawMessage("{vcpus: 2}") }, errdefs.ErrInvalidArgument, "spec is not valid JSON"},
		{"path traversal", func(t *testing.T, dir string, m *Manifest) { m.Files[0].Name = "../vmstate" }, errdefs.ErrInvalidArgument, "path traversal"},
		{"absolute name", func(t *testing.T, dir string, m *Manifest) { m.Files[0].Name = "/etc/passwd" }, errdefs.ErrInvalidArgument, "path traversal"},
		{"manifest as a file", func(t *testing.T, dir string, m *Manifest) { m.Files[0].Name = ManifestName }, errdefs.ErrInvalidArgument, "reserved"},
		{"duplicate", func(t *testing.T, dir string, m *Manifest) { m.Files[1].Name = "vmstate" }, errdefs.ErrInvalidArgument, "listed twice"},
		{"unknown role", func(t *testing.T, dir string, m *Manifest) { m.Files[0].Role = "ram" }, errdefs.ErrInvalidArgument, `unknown role "ram"`},
		{"two memory files", func(t *testing.T, dir string, m *Manifest) { m.Files[0].Role = RoleMemory }, errdefs.ErrInvalidArgument, "more than one memory"},
		{"relative disk ref", func(t *testing.T, dir string, m *Manifest) {
			m.Files = m.Files[:3]
			m.DiskRef = &Ref{Path: "frozen.qcow2"}
		}, errdefs.ErrInvalidArgument, "absolute"},
		{"disk file and disk ref", func(t *testing.T, dir string, m *Manifest) {
			m.DiskRef = &Ref{Path: filepath.Join(dir, "vmstate")}
		}, errdefs.ErrInvalidArgument, "both a disk file"},
		{"symlink", func(t *testing.T, dir string, m *Manifest) {
			p := filepath.Join(dir, "vmstate")
			os.Remove(p)
			if err := os.Symlink("/etc/hostname", p); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrInvalidArgument, "symlink"},
		{"subdirectory when discovering", func(t *testing.T, dir string, m *Manifest) {
			m.Files = nil
			os.Mkdir(filepath.Join(dir, "sub"), 0o700)
		}, errdefs.ErrInvalidArgument, "sub is not a regular file"},
		{"missing file", func(t *testing.T, dir string, m *Manifest) {
			os.Remove(filepath.Join(dir, "snapshot.json"))
		}, errdefs.ErrNotFound, "snapshot.json"},
		{"missing directory", func(t *testing.T, dir string, m *Manifest) { os.RemoveAll(dir) }, errdefs.ErrNotFound, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snap")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			makeSnapshotFiles(t, dir)
			m := testManifest()
			tt.edit(t, dir, &m)
			_, err := Write(context.Background(), dir, m)
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write = %v; want %v containing %q", err, tt.kind, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, ManifestName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused Write left a manifest (stat: %v)", err)
			}
		})
	}
}

// TestOpenRefusesCorruption damages a good snapshot in every way we can
// think of and checks Open refuses it with the right kind, naming the
// file and the problem.
func TestOpenRefusesCorruption(t *testing.T) {
	type edit = func(t *testing.T, dir string)
	setFile := func(name, key string, v any) edit {
		return func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { fileEntry(t, m, name)[key] = v })
		}
	}
	set := func(key string, v any) edit {
		return func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m[key] = v })
		}
	}
	raw := func(s string) edit {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		edit edit
		kind error
		// file is the CorruptError's File; "" for a NotFound.
		file string
		want string
	}{
		{"truncated memory", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, MemoryName), memSize-4*kib)
		}, errdefs.ErrFailedPrecondition, MemoryName, "size is 67104768 bytes, the manifest says 67108864"},
		{"extended memory", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, MemoryName), memSize+4*kib)
		}, errdefs.ErrFailedPrecondition, MemoryName, "size is"},
		{"flipped byte in vmstate", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, "vmstate"), 100*kib+3)
		}, errdefs.ErrFailedPrecondition, "vmstate", "SHA-256"},
		{"flipped byte in snapshot.json", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, "snapshot.json"), 0)
		}, errdefs.ErrFailedPrecondition, "snapshot.json", "SHA-256"},
		{"flipped byte in memory head", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, MemoryName), 300*kib)
		}, errdefs.ErrFailedPrecondition, MemoryName, "sample digest"},
		{"flipped byte in memory tail", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, MemoryName), memSize-1)
		}, errdefs.ErrFailedPrecondition, MemoryName, "sample digest"},
		{"page written into a memory hole", func(t *testing.T, dir string) {
			// 40 MiB + 12 KiB is a hole and none of the spaced sample pages:
			// only the allocation map sees it.
			fillRandom(t, filepath.Join(dir, MemoryName), 40*mib+12*kib, 4*kib, 99)
		}, errdefs.ErrFailedPrecondition, MemoryName, "allocation map"},
		{"hole punched in disk", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "disk.qcow2")
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			punchHole(t, f, 4*mib, 64*kib)
		}, errdefs.ErrFailedPrecondition, "disk.qcow2", "sample digest"},
		{"memory replaced by a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, MemoryName)
			os.Rename(p, p+".real")
			os.Symlink(p+".real", p)
		}, errdefs.ErrFailedPrecondition, MemoryName, "symlink"},
		{"memory replaced by a directory", func(t *testing.T, dir string) {
			p := filepath.Join(dir, MemoryName)
			os.Remove(p)
			os.Mkdir(p, 0o700)
		}, errdefs.ErrFailedPrecondition, MemoryName, "not a regular file"},
		{"missing vmstate", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "vmstate"))
		}, errdefs.ErrNotFound, "", "vmstate is missing"},
		{"missing manifest", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestName))
		}, errdefs.ErrNotFound, "", "no manifest.json"},
		{"missing directory", func(t *testing.T, dir string) { os.RemoveAll(dir) }, errdefs.ErrNotFound, "", "does not exist"},
		{"manifest lists a file that is not there", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["files"] = append(m["files"].([]any), map[string]any{"name": "extra", "role": "state", "size": 0, "sha256": strings.Repeat("0", 64)})
			})
		}, errdefs.ErrNotFound, "", "extra is missing"},
		{"edited size", setFile("vmstate", "size", 1), errdefs.ErrFailedPrecondition, "vmstate", "the manifest says 1"},
		{"edited checksum", setFile("vmstate", "sha256", strings.Repeat("ab", 32)), errdefs.ErrFailedPrecondition, "vmstate", "SHA-256"},
		{"upper-case checksum", setFile("vmstate", "sha256", strings.Repeat("AB", 32)), errdefs.ErrFailedPrecondition, ManifestName, "64 hex digits"},
		{"short checksum", setFile("vmstate", "sha256", "abcd"), errdefs.ErrFailedPrecondition, ManifestName, "64 hex digits"},
		{"sample on a state file", setFile("vmstate", "sample", strings.Repeat("0", 64)), errdefs.ErrFailedPrecondition, ManifestName, "no sample"},
		{"negative size", setFile("vmstate", "size", -1), errdefs.ErrFailedPrecondition, ManifestName, "negative size"},
		{"edited role", setFile(MemoryName, "role", "state"), errdefs.ErrFailedPrecondition, ManifestName, "needs a SHA-256"},
		{"path traversal ../x", setFile("vmstate", "name", "../x"), errdefs.ErrFailedPrecondition, ManifestName, "path traversal"},
		{"path traversal a/b", setFile("vmstate", "name", "a/b"), errdefs.ErrFailedPrecondition, ManifestName, "path traversal"},
		{"absolute path", setFile("vmstate", "name", "/etc/shadow"), errdefs.ErrFailedPrecondition, ManifestName, "path traversal"},
		{"dot-dot", setFile("vmstate", "name", ".."), errdefs.ErrFailedPrecondition, ManifestName, "not a file"},
		{"empty name", setFile("vmstate", "name", ""), errdefs.ErrFailedPrecondition, ManifestName, "empty file name"},
		{"NUL in name", setFile("vmstate", "name", "vm\x00state"), errdefs.ErrFailedPrecondition, ManifestName, "NUL"},
		{"duplicate name", setFile("snapshot.json", "name", "vmstate"), errdefs.ErrFailedPrecondition, ManifestName, "listed twice"},
		{"no files", set("files", []any{}), errdefs.ErrFailedPrecondition, ManifestName, "lists no files"},
		{"unknown kind", set("kind", "paused"), errdefs.ErrFailedPrecondition, ManifestName, `unknown kind "paused"`},
		{"no driver", set("driver", ""), errdefs.ErrFailedPrecondition, ManifestName, "no VMM driver"},
		{"relative disk ref", set("disk_ref", map[string]any{"path": "../../etc/shadow", "size": 1, "sample": strings.Repeat("0", 64)}),
			errdefs.ErrFailedPrecondition, ManifestName, "absolute, clean path"},
		{"newer version", set("version", 2), errdefs.ErrFailedPrecondition, ManifestName, "format version 2 is newer than this agent supports (1)"},
		{"version 0", set("version", 0), errdefs.ErrFailedPrecondition, ManifestName, "format version 0 is not supported"},
		{"version as a string", set("version", "1"), errdefs.ErrFailedPrecondition, ManifestName, "does not parse"},
		{"no version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { delete(m, "version") })
		}, errdefs.ErrFailedPrecondition, ManifestName, "no format version"},
		{"unknown field", set("compression", "zstd"), errdefs.ErrFailedPrecondition, ManifestName, `unknown field "compression"`},
		{"garbage", raw("\x00\x01garbage{"), errdefs.ErrFailedPrecondition, ManifestName, "does not parse"},
		{"empty manifest", raw(""), errdefs.ErrFailedPrecondition, ManifestName, "does not parse"},
		{"JSON null", raw("null"), errdefs.ErrFailedPrecondition, ManifestName, "no format version"},
		{"JSON array", raw("[1]"), errdefs.ErrFailedPrecondition, ManifestName, "does not parse"},
		{"trailing data", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ManifestName)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, append(data, []byte(`{"version":1}`)...), 0o600)
		}, errdefs.ErrFailedPrecondition, ManifestName, "after top-level value"},
		{"oversized manifest", raw(`{"version":1,"spec":"` + strings.Repeat("x", MaxManifestSize) + `"}`),
			errdefs.ErrFailedPrecondition, ManifestName, "more than the 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := writeSnapshot(t)
			tt.edit(t, dir)
			s, err := Open(context.Background(), dir)
			if err == nil {
				t.Fatalf("Open accepted the damaged snapshot: %+v", s.Manifest)
			}
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v\nwant %v containing %q", err, tt.kind, tt.want)
			}
			var ce *CorruptError
			if errors.As(err, &ce) != (tt.file != "") {
				t.Fatalf("Open = %#v; CorruptError expected: %v", err, tt.file != "")
			}
			if ce != nil && (ce.File != tt.file || ce.Dir != dir) {
				t.Errorf("CorruptError names %s in %s, want %s in %s", ce.File, ce.Dir, tt.file, dir)
			}
			if errdefs.HTTPStatus(err) == 500 {
				t.Errorf("a damaged snapshot maps to an opaque 500: %v", err)
			}
		})
	}
}

func TestOpenNotADirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), p); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Open(file) = %v, want InvalidArgument", err)
	}
	if _, err := Open(context.Background(), ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf(`Open("") = %v, want InvalidArgument`, err)
	}
}

func TestOpenHonoursContext(t *testing.T) {
	dir, _ := writeSnapshot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestInvalidate(t *testing.T) {
	dir, _ := writeSnapshot(t)
	for range 2 { // idempotent
		if err := Invalidate(dir); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
	}
	if _, err := Open(context.Background(), dir); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open after Invalidate = %v, want NotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MemoryName)); err != nil {
		t.Errorf("Invalidate removed more than the manifest: %v", err)
	}
}

func TestRemove(t *testing.T) {
	dir, _ := writeSnapshot(t)
	os.Chmod(filepath.Join(dir, "disk.qcow2"), 0o444) // frozen disks are read-only
	for range 2 {
		if err := Remove(dir); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory still there after Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		t.Errorf("Remove took the parent with it: %v", err)
	}

	// A tree is not a snapshot: refused, and left alone.
	tree, _ := writeSnapshot(t)
	if err := os.Mkdir(filepath.Join(tree, "sandboxes"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Remove(tree); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "sandboxes") {
		t.Errorf("Remove(dir with a subdirectory) = %v, want InvalidArgument naming it", err)
	}
	if _, err := os.Stat(filepath.Join(tree, ManifestName)); err != nil {
		t.Errorf("a refused Remove touched the manifest: %v", err)
	}
	if err := Remove(filepath.Join(tree, "vmstate")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Remove(file) = %v, want InvalidArgument", err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	if got, err := List(filepath.Join(root, "absent")); err != nil || got != nil {
		t.Fatalf("List(missing root) = %v, %v; want nothing", got, err)
	}
	mk := func(id string, kind Kind) {
		dir := filepath.Join(root, id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		makeSnapshotFiles(t, dir)
		if kind == "" {
			return // an interrupted write: no manifest
		}
		m := testManifest()
		m.Kind = kind
		if _, err := Write(ctx, dir, m); err != nil {
			t.Fatal(err)
		}
	}
	mk("sb-b", KindTemplate)
	mk("sb-a", KindHibernate)
	mk("sb-c", "")
	if err := os.WriteFile(filepath.Join(root, "stray-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := List(root)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("List = %+v, want 3 directories", got)
	}
	wantKinds := []Kind{KindHibernate, KindTemplate, ""}
	for i, id := range []string{"sb-a", "sb-b", "sb-c"} {
		in := got[i]
		if in.ID != id || in.Dir != filepath.Join(root, id) || in.Kind != wantKinds[i] {
			t.Errorf("entry %d = %+v, want %s of kind %q", i, in, id, wantKinds[i])
		}
		du, err := DirUsage(in.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if in.Usage != du || in.Usage < 3*mib {
			t.Errorf("%s: Usage %d, DirUsage %d; want equal and at least the 3 MiB of memory data", id, in.Usage, du)
		}
	}
	if got[0].Err != nil || got[0].Created.IsZero() {
		t.Errorf("complete snapshot listed with Err %v, Created %v", got[0].Err, got[0].Created)
	}
	if !errors.Is(got[2].Err, errdefs.ErrNotFound) {
		t.Errorf("incomplete snapshot listed with Err %v, want NotFound", got[2].Err)
	}
}
