package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/atomicfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Snapshot is a verified snapshot directory.
type Snapshot struct {
	// Dir is the directory's absolute path.
	Dir      string
	Manifest Manifest
}

// Path returns the absolute path of the named file of the snapshot.
func (s *Snapshot) Path(name string) string { return filepath.Join(s.Dir, name) }

// MemoryPath returns the memory file's path, or "" when guest RAM is in
// the state file (QEMU without a memory file).
func (s *Snapshot) MemoryPath() string {
	for _, f := range s.Manifest.Files {
		if f.Role == RoleMemory {
			return s.Path(f.Name)
		}
	}
	return ""
}

// DiskPath returns the frozen disk's path, in the directory or referenced,
// or "" when the snapshot has none.
func (s *Snapshot) DiskPath() string {
	if s.Manifest.DiskRef != nil {
		return s.Manifest.DiskRef.Path
	}
	for _, f := range s.Manifest.Files {
		if f.Role == RoleDisk {
			return s.Path(f.Name)
		}
	}
	return ""
}

// Compatible refuses (ErrFailedPrecondition) to restore s with another
// VMM driver or guest kernel than the ones that wrote it: device state
// does not load across either.
func (s *Snapshot) Compatible(driver, kernelVersion string) error {
	m := s.Manifest
	if m.Driver != driver {
		return errdefs.New(errdefs.ErrFailedPrecondition, "snapshot %s was written by VMM driver %q, not %q", s.Dir, m.Driver, driver)
	}
	if m.KernelVersion != kernelVersion {
		return errdefs.New(errdefs.ErrFailedPrecondition, "snapshot %s was taken under guest kernel %q, not %q", s.Dir, m.KernelVersion, kernelVersion)
	}
	return nil
}

// Write completes the snapshot in dir: it records the size and digest of
// every file in m.Files (and of m.DiskRef), fsyncs each file, and writes
// manifest.json last and atomically. It returns the snapshot as Open
// would. Files must not change while Write runs or afterwards.
//
// The caller sets Kind, Driver, KernelVersion, Spec, and either Files
// (Name and Role of each) or nothing: with Files empty, Write takes every
// regular file in dir except the manifest and hidden or *.tmp names,
// MemoryName as RoleMemory, *.qcow2 and *.raw as RoleDisk, the rest as
// RoleState. Version is always set to Version; Created defaults to now.
//
// Any manifest already in dir is removed first, so a crash during Write
// never leaves an old manifest vouching for new files. A bad m is
// ErrInvalidArgument; a listed file that is absent, ErrNotFound.
func Write(ctx context.Context, dir string, m Manifest) (*Snapshot, error) {
	abs, err := snapshotDir(dir)
	if err != nil {
		return nil, fmt.Errorf("write snapshot: %w", err)
	}
	invalid := func(format string, args ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "write snapshot %s: %s", abs, fmt.Sprintf(format, args...))
	}
	m.Version = Version
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	m.Created = m.Created.UTC()
	if len(m.Spec) > 0 {
		var spec bytes.Buffer
		if err := json.Compact(&spec, m.Spec); err != nil {
			return nil, invalid("spec is not valid JSON: %v", err)
		}
		m.Spec = spec.Bytes()
	}
	if err := m.checkHead(); err != nil {
		return nil, invalid("%v", err)
	}
	if len(m.Files) == 0 {
		if m.Files, err = discover(abs); err != nil {
			return nil, fmt.Errorf("write snapshot %s: %w", abs, err)
		}
		if len(m.Files) == 0 {
			return nil, invalid("the directory holds no files")
		}
	} else {
		m.Files = append([]File(nil), m.Files...) // the caller's slice stays untouched
	}
	if err := checkFiles(m.Files); err != nil {
		return nil, invalid("%v", err)
	}
	if m.DiskRef != nil {
		for _, f := range m.Files {
			if f.Role == RoleDisk {
				return nil, invalid("both a disk file %q and a disk reference %q", f.Name, m.DiskRef.Path)
			}
		}
		ref := *m.DiskRef
		m.DiskRef = &ref
	}
	if err := Invalidate(abs); err != nil {
		return nil, fmt.Errorf("write snapshot: %w", err)
	}

	for i := range m.Files {
		f := &m.Files[i]
		size, sum, err := digestForWrite(ctx, filepath.Join(abs, f.Name), f.Role, false)
		if err != nil {
			return nil, fmt.Errorf("write snapshot %s: %w", abs, err)
		}
		f.Size, f.SHA256, f.Sample = size, "", ""
		if f.Role == RoleState {
			f.SHA256 = sum
		} else {
			f.Sample = sum
		}
	}
	if r := m.DiskRef; r != nil {
		size, sum, err := digestForWrite(ctx, r.Path, RoleDisk, true)
		if err != nil {
			return nil, fmt.Errorf("write snapshot %s: disk reference: %w", abs, err)
		}
		r.Size, r.Sample = size, sum
	}
	data, err := encodeManifest(&m)
	if err != nil {
		return nil, fmt.Errorf("write snapshot %s: %w", abs, err)
	}
	if len(data) > MaxManifestSize {
		return nil, invalid("manifest would be %d bytes, over the limit of %d (is Spec that large?)", len(data), MaxManifestSize)
	}
	// Reading the manifest back before it reaches disk proves Open will
	// accept it, and hands the caller exactly what Open will return.
	back, err := parseManifest(abs, data)
	if err != nil {
		return nil, fmt.Errorf("write snapshot %s: built a manifest that does not read back: %w", abs, err)
	}
	if err := writeAtomic(filepath.Join(abs, ManifestName), data); err != nil {
		return nil, fmt.Errorf("write snapshot %s: %w", abs, err)
	}
	return &Snapshot{Dir: abs, Manifest: *back}, nil
}

// encodeManifest renders m as indented JSON. HTML escaping is off so the
// caller's Spec is stored byte for byte as it was compacted.
func encodeManifest(m *Manifest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// discover lists dir for Write when the caller gave no files.
func discover(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list files: %w", errdefs.FromOS(err))
	}
	var files []File
	for _, e := range entries {
		name := e.Name()
		if name == ManifestName || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "%s is not a regular file; a snapshot directory holds files only", name)
		}
		role := RoleState
		switch {
		case name == MemoryName:
			role = RoleMemory
		case strings.HasSuffix(name, ".qcow2"), strings.HasSuffix(name, ".raw"):
			role = RoleDisk
		}
		files = append(files, File{Name: name, Role: role})
	}
	return files, nil
}

// digestForWrite opens one file for Write, fsyncs it and returns its size
// and the digest its role calls for. Symlinks are refused inside the
// directory (follow is false) so a snapshot never vouches for a file
// elsewhere.
func digestForWrite(ctx context.Context, path string, role Role, follow bool) (int64, string, error) {
	f, fi, err := openRegular(path, follow)
	if err != nil {
		if errors.Is(err, errNotRegular) {
			return 0, "", errdefs.New(errdefs.ErrInvalidArgument, "%s: %v", path, err)
		}
		return 0, "", err
	}
	defer f.Close()
	// A file is durable before the manifest that vouches for it. Linux
	// fsyncs through a read-only descriptor.
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("sync %s: %w", path, errdefs.FromOS(err))
	}
	sum, err := digest(ctx, f, fi.Size(), role)
	if err != nil {
		return 0, "", fmt.Errorf("digest %s: %w", path, err)
	}
	return fi.Size(), sum, nil
}

func digest(ctx context.Context, f *os.File, size int64, role Role) (string, error) {
	if role == RoleState {
		return hashFile(ctx, f)
	}
	return sampleFile(ctx, f, size)
}

var errNotRegular = errors.New("not a regular file")

// openRegular opens path for reading and checks it is a regular file.
// Without follow, a symlink fails (O_NOFOLLOW) with errNotRegular.
func openRegular(path string, follow bool) (*os.File, os.FileInfo, error) {
	flags := os.O_RDONLY
	if !follow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fmt.Errorf("%w (a symlink)", errNotRegular)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, errdefs.FromOS(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %s: %w", path, errdefs.FromOS(err))
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		what := "a directory"
		if !fi.IsDir() {
			what = "mode " + fi.Mode().Type().String()
		}
		return nil, nil, fmt.Errorf("%w (%s)", errNotRegular, what)
	}
	return f, fi, nil
}

// writeAtomic writes data to path through a temporary file that is
// fsynced and renamed over path, then fsyncs the directory: a reader sees
// the old file, no file, or all of the new one.
func writeAtomic(path string, data []byte) error {
	tmp, err := atomicfile.TempName(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, errdefs.FromOS(err))
	}
	defer os.Remove(tmp) // fails harmlessly after the rename
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, errdefs.FromOS(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, errdefs.FromOS(err))
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// Open reads and verifies the snapshot in dir (see the package doc for
// every check). A missing directory, manifest or file is ErrNotFound; a
// corrupt one is a *CorruptError (ErrFailedPrecondition) naming the file
// and what is wrong.
//
// Open reads all of every state file and a few MiB of each large file, so
// it costs about a SHA-256 of the state files.
func Open(ctx context.Context, dir string) (*Snapshot, error) {
	abs, err := snapshotDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open snapshot: %w", err)
	}
	m, err := readManifest(abs)
	if err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if err := verify(ctx, abs, filepath.Join(abs, f.Name), f.Name, f.Role, f.Size, f.SHA256+f.Sample, false); err != nil {
			return nil, err
		}
	}
	if r := m.DiskRef; r != nil {
		if err := verify(ctx, abs, r.Path, r.Path, RoleDisk, r.Size, r.Sample, true); err != nil {
			return nil, err
		}
	}
	return &Snapshot{Dir: abs, Manifest: *m}, nil
}

// verify checks one file against its manifest entry. name is how errors
// call it.
func verify(ctx context.Context, dir, path, name string, role Role, size int64, want string, follow bool) error {
	corrupt := func(format string, args ...any) error {
		return &CorruptError{Dir: dir, File: name, Problem: fmt.Sprintf(format, args...)}
	}
	f, fi, err := openRegular(path, follow)
	switch {
	case errors.Is(err, errNotRegular):
		return corrupt("%v", err)
	case errors.Is(err, errdefs.ErrNotFound):
		return errdefs.New(errdefs.ErrNotFound, "snapshot %s is incomplete: %s is missing", dir, name)
	case err != nil:
		return fmt.Errorf("open snapshot %s: %w", dir, err)
	}
	defer f.Close()
	if fi.Size() != size {
		return corrupt("size is %d bytes, the manifest says %d (truncated or overwritten)", fi.Size(), size)
	}
	got, err := digest(ctx, f, size, role)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %s: %w", dir, name, err)
	}
	if got != want {
		if role == RoleState {
			return corrupt("SHA-256 is %s, the manifest says %s (content changed)", got, want)
		}
		return corrupt("sample digest is %s, the manifest says %s (content in the sampled ranges or the allocation map changed)", got, want)
	}
	return nil
}

// readManifest reads and parses dir's manifest without checking the
// files it lists.
func readManifest(dir string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.New(errdefs.ErrNotFound, "snapshot %s is incomplete: no %s (never finished, or being removed)", dir, ManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("open snapshot %s: %w", dir, errdefs.FromOS(err))
	}
	defer f.Close()
	// One byte past the limit tells an oversized manifest from one that
	// is exactly at it.
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("open snapshot %s: read %s: %w", dir, ManifestName, errdefs.FromOS(err))
	}
	return parseManifest(dir, data)
}

// snapshotDir resolves dir and checks it is an existing directory.
func snapshotDir(dir string) (string, error) {
	if dir == "" {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "no snapshot directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("snapshot directory %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", errdefs.New(errdefs.ErrNotFound, "snapshot %s does not exist", abs)
	}
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", abs, errdefs.FromOS(err))
	}
	if !fi.IsDir() {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "snapshot %s is not a directory", abs)
	}
	return abs, nil
}

// Invalidate removes dir's manifest, if any, and makes the removal
// durable, so the files can be rewritten in place (a VMM snapshotting over
// the snapshot its guest was restored from) without a crash leaving a
// manifest that vouches for half-written files. Open then refuses dir
// with ErrNotFound until Write runs again.
func Invalidate(dir string) error {
	err := os.Remove(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("invalidate snapshot %s: %w", dir, errdefs.FromOS(err))
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("invalidate snapshot %s: %w", dir, err)
	}
	return nil
}

// Remove deletes the snapshot directory dir. Removing an absent one
// succeeds. The manifest goes first (durably), so a crash part-way leaves
// a directory Open refuses and List reports as incomplete, never a
// snapshot with files missing. A directory that holds a subdirectory is
// refused (ErrInvalidArgument): snapshots hold files only, so it is the
// wrong path, and Remove will not take a tree with it. A disk named by
// DiskRef is not removed; it belongs to whoever made it.
func Remove(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", dir, errdefs.FromOS(err))
	}
	if !fi.IsDir() {
		return errdefs.New(errdefs.ErrInvalidArgument, "remove snapshot %s: not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", dir, errdefs.FromOS(err))
	}
	for _, e := range entries {
		if e.IsDir() {
			return errdefs.New(errdefs.ErrInvalidArgument, "remove snapshot %s: holds directory %s, so it is not a snapshot", dir, e.Name())
		}
	}
	if err := Invalidate(dir); err != nil {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", dir, errdefs.FromOS(err))
	}
	return nil
}

// Info describes one entry of List.
type Info struct {
	// ID is the directory's name under the root.
	ID  string
	Dir string
	// Kind and Created come from the manifest; zero when Err is set.
	Kind    Kind
	Created time.Time
	// Usage is the disk space the directory's files take (DirUsage). A
	// referenced disk is not counted.
	Usage int64
	// Err is why the directory is not a usable snapshot (no manifest: an
	// unfinished write or removal; a manifest that does not parse). Such
	// directories are listed so the caller can reap them.
	Err error
}

// List returns every directory under root, in name order, with its kind
// and disk usage. It reads manifests only; Open verifies the files. A
// missing root lists nothing.
func List(root string) ([]Info, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", root, errdefs.FromOS(err))
	}
	var out []Info
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		info := Info{ID: e.Name(), Dir: dir}
		if m, err := readManifest(dir); err != nil {
			info.Err = err
		} else {
			info.Kind, info.Created = m.Kind, m.Created
		}
		if info.Usage, err = DirUsage(dir); err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue // removed while we listed
			}
			return nil, fmt.Errorf("list snapshots in %s: %w", root, err)
		}
		out = append(out, info)
	}
	return out, nil
}
