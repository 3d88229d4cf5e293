package snapshot

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Version is the manifest format this package writes and the only one
// Open accepts. Bump it when the layout or a digest's definition changes.
const Version = 1

// ManifestName is the manifest's file name inside a snapshot directory.
const ManifestName = "manifest.json"

// MemoryName is the conventional name of the guest memory file.
const MemoryName = "memory"

// MaxManifestSize bounds manifest.json. A real one is a few KiB (the
// caller's spec included); anything larger is garbage, and reading it
// whole would let a bad file cost unbounded memory.
const MaxManifestSize = 1 << 20

// maxNameLen is the longest file name most Linux filesystems accept.
const maxNameLen = 255

// Kind says what a snapshot is for.
type Kind string

const (
	// KindHibernate is a paused sandbox moved to disk to free host RAM; it
	// is restored once and then removed.
	KindHibernate Kind = "hibernate"
	// KindTemplate is a booted, ready guest that "create" restores from,
	// many times.
	KindTemplate Kind = "template"
	// KindForkSource is the state of a sandbox at the moment of a fork;
	// each fork restores from it.
	KindForkSource Kind = "fork-source"
)

func (k Kind) valid() bool {
	switch k {
	case KindHibernate, KindTemplate, KindForkSource:
		return true
	}
	return false
}

// Role says what a file is, and so how it is verified.
type Role string

const (
	// RoleState is VMM state (vmstate, snapshot.json, ...): hashed whole
	// with SHA-256. Meant for small files; a vmstate that carries all of
	// guest RAM (QEMU without a memory file) is hashed whole too, at
	// SHA-256 speed.
	RoleState Role = "state"
	// RoleMemory is the guest RAM file: size plus sample digest.
	RoleMemory Role = "memory"
	// RoleDisk is the frozen root disk: size plus sample digest.
	RoleDisk Role = "disk"
)

// File is one file of a snapshot directory.
type File struct {
	// Name is the file's name in the snapshot directory: a single path
	// element.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Size is the file's apparent size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the whole file (RoleState only).
	SHA256 string `json:"sha256,omitempty"`
	// Sample is the hex sample digest (RoleMemory and RoleDisk only).
	Sample string `json:"sample,omitempty"`
}

// Ref is a large file the snapshot uses but does not hold, such as a
// frozen qcow2 shared by every fork of one source.
type Ref struct {
	// Path is absolute and clean.
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Sample string `json:"sample"`
}

// Manifest describes a complete snapshot.
type Manifest struct {
	// Version is set by Write.
	Version int  `json:"version"`
	Kind    Kind `json:"kind"`
	// Created defaults to the time of Write.
	Created time.Time `json:"created"`
	// Driver is the vmm driver that wrote the state ("qemu",
	// "firecracker"); only it can restore it.
	Driver string `json:"driver"`
	// KernelVersion is the guest kernel the snapshot was taken under; a
	// restore must boot the same one.
	KernelVersion string `json:"kernel_version"`
	// Spec is the sandbox spec as the caller chooses to encode it (vCPUs,
	// memory, template, ...). This package stores it untouched.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Files lists every file of the snapshot in its directory. Write fills
	// in sizes and digests; given empty, Write lists the directory itself
	// (see Write).
	Files []File `json:"files"`
	// DiskRef names a disk outside the directory, if any.
	DiskRef *Ref `json:"disk_ref,omitempty"`
}

// CorruptError reports a snapshot that exists but cannot be used: a
// manifest that does not parse or is of an unsupported version, or a file
// whose size or content no longer matches it. It is an
// errdefs.ErrFailedPrecondition.
type CorruptError struct {
	// Dir is the snapshot directory.
	Dir string
	// File is the file at fault (ManifestName for the manifest itself).
	File string
	// Problem says what is wrong, for people.
	Problem string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("snapshot %s is corrupt: %s: %s", e.Dir, e.File, e.Problem)
}

// Unwrap makes a CorruptError match errdefs.ErrFailedPrecondition.
func (e *CorruptError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// parseManifest decodes and checks a manifest read from dir. Every
// failure is a *CorruptError naming what is wrong; it never panics,
// whatever data holds (see FuzzParseManifest).
func parseManifest(dir string, data []byte) (*Manifest, error) {
	bad := func(format string, args ...any) error {
		return &CorruptError{Dir: dir, File: ManifestName, Problem: fmt.Sprintf(format, args...)}
	}
	if len(data) > MaxManifestSize {
		return nil, bad("%d bytes, more than the %d a manifest may have", len(data), MaxManifestSize)
	}
	// The version is read on its own first, so a manifest from a newer
	// Wrenn is refused for its version, not for a field this one does not
	// know.
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, bad("does not parse as JSON: %v", err)
	}
	switch {
	case head.Version == nil:
		return nil, bad("no format version")
	case *head.Version > Version:
		return nil, bad("format version %d is newer than this agent supports (%d)", *head.Version, Version)
	case *head.Version != Version:
		return nil, bad("format version %d is not supported (want %d)", *head.Version, Version)
	}
	// json.Unmarshal above has already refused trailing data.
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, bad("%v", err)
	}
	if err := m.check(); err != nil {
		return nil, bad("%v", err)
	}
	if len(m.Spec) > 0 {
		// The decoder has checked Spec is JSON; compact it so a spec reads
		// back the same whatever the file's indentation.
		var spec bytes.Buffer
		if err := json.Compact(&spec, m.Spec); err != nil {
			return nil, bad("spec: %v", err)
		}
		m.Spec = spec.Bytes()
	}
	return &m, nil
}

// check validates everything in m that does not need the files: kind,
// names, roles, digests' shapes. Sizes and digests must be filled in.
func (m *Manifest) check() error {
	if err := m.checkHead(); err != nil {
		return err
	}
	if len(m.Files) == 0 {
		return errors.New("lists no files")
	}
	if err := checkFiles(m.Files); err != nil {
		return err
	}
	for _, f := range m.Files {
		if f.Size < 0 {
			return fmt.Errorf("file %q: negative size %d", f.Name, f.Size)
		}
		switch f.Role {
		case RoleState:
			if !isHexDigest(f.SHA256) || f.Sample != "" {
				return fmt.Errorf("file %q: a state file needs a SHA-256 (64 hex digits) and no sample", f.Name)
			}
		case RoleMemory, RoleDisk:
			if !isHexDigest(f.Sample) || f.SHA256 != "" {
				return fmt.Errorf("file %q: a %s file needs a sample digest (64 hex digits) and no SHA-256", f.Name, f.Role)
			}
		}
	}
	if r := m.DiskRef; r != nil {
		if r.Size < 0 {
			return fmt.Errorf("disk reference %q: negative size %d", r.Path, r.Size)
		}
		if !isHexDigest(r.Sample) {
			return fmt.Errorf("disk reference %q: sample digest must be 64 hex digits", r.Path)
		}
	}
	return nil
}

// checkHead validates the fields a caller of Write supplies.
func (m *Manifest) checkHead() error {
	if !m.Kind.valid() {
		return fmt.Errorf("unknown kind %q (want %s, %s or %s)", m.Kind, KindHibernate, KindTemplate, KindForkSource)
	}
	if m.Driver == "" {
		return errors.New("no VMM driver named")
	}
	if m.Created.IsZero() {
		return errors.New("no creation time")
	}
	if m.DiskRef != nil {
		p := m.DiskRef.Path
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("disk reference %q: must be an absolute, clean path", p)
		}
	}
	return nil
}

// checkFiles validates names and roles: each name a single safe path
// element, no duplicates, at most one memory file and at most one disk
// (counting DiskRef, which the caller checks).
func checkFiles(files []File) error {
	seen := make(map[string]bool, len(files))
	roles := map[Role]int{}
	for _, f := range files {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("file %q is listed twice", f.Name)
		}
		seen[f.Name] = true
		switch f.Role {
		case RoleState, RoleMemory, RoleDisk:
		default:
			return fmt.Errorf("file %q: unknown role %q", f.Name, f.Role)
		}
		roles[f.Role]++
	}
	if roles[RoleMemory] > 1 {
		return errors.New("more than one memory file")
	}
	if roles[RoleDisk] > 1 {
		return errors.New("more than one disk file")
	}
	return nil
}

// checkName refuses any name that is not a plain file name in the
// snapshot directory, so a manifest can never point Open (or a restore)
// at a file elsewhere on the host.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > maxNameLen:
		return fmt.Errorf("file name %.40q...: longer than %d bytes", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("file name %q: not a file", name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("file name %q: must not contain a path separator or NUL (path traversal)", name)
	case name == ManifestName:
		return fmt.Errorf("file name %q: reserved for the manifest", name)
	}
	return nil
}

// isHexDigest reports whether s is a SHA-256 as this package writes it:
// 64 lower-case hex digits (so digests compare as strings).
func isHexDigest(s string) bool {
	if len(s) != hex.EncodedLen(32) {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
