// Package snapshot owns snapshot directories on the host: the files a VMM
// wrote when it saved a paused guest (device state, guest memory), the
// guest's frozen disk, and the manifest that says the set is complete and
// intact. Hibernation ($WRENN_DIR/snapshots/<id>/), fork sources and
// template snapshots (images/<template>/snapshot/) all use this layout.
//
// # Layout
//
// A snapshot directory holds plain files only, for example
//
//	vmstate         VMM device state (and RAM when it is not in memory)
//	snapshot.json   the driver's own description of vmstate
//	memory          guest RAM, sparse: zero pages cost no disk
//	disk.qcow2      the frozen root disk (or Manifest.DiskRef names one elsewhere)
//	manifest.json   written last; its presence marks a complete snapshot
//
// Write computes sizes and checksums, fsyncs every file, then writes
// manifest.json atomically (temporary name, fsync, rename, fsync of the
// directory). A crash at any point before the rename leaves no manifest,
// and Open refuses the directory as incomplete.
//
// # Verification
//
// Open checks, in this order, and stops at the first failure:
//
//   - the directory and manifest.json exist (errdefs.ErrNotFound otherwise);
//   - the manifest is at most MaxManifestSize bytes of strict JSON (no
//     unknown fields, nothing after the object), its version is Version (older,
//     newer or absent versions are refused), its kind is known, and every
//     file name is a single path element (no "../x", "a/b", "/etc/x"),
//     unique, with a role that matches its digests;
//   - every listed file exists (ErrNotFound) as a regular file, not a
//     symlink, with the recorded size;
//   - state files (RoleState) hash to the recorded SHA-256: this catches any
//     change to them, however small;
//   - large files (RoleMemory, RoleDisk and DiskRef) match their sample
//     digest (see Sample), which reads a few MiB whatever the file's size.
//
// Corruption is reported as a *CorruptError, which is an
// errdefs.ErrFailedPrecondition: the request was well formed but the
// snapshot on disk cannot be used. ErrInvalidArgument is kept for bad
// arguments from the caller (a bad Manifest given to Write, a bad path).
//
// # Sparse memory
//
// Guest memory files are mostly zero. CopySparse and MoveMemory keep them
// cheap: they copy only allocated extents and leave all-zero pages as
// holes; Sparsify punches the zero pages of a file a VMM wrote whole.
// Usage and DirUsage report allocated bytes (st_blocks), not apparent
// sizes.
//
// # Use
//
// Hibernate a paused sandbox whose RAM is in a /dev/shm memory file:
// Machine.Snapshot(ctx, dir); Machine.Stop; MoveMemory(ctx, memoryFile,
// dir/memory) (a sparse copy to disk, then the RAM is freed); put the
// disk in dir (or name it in DiskRef); Write(ctx, dir, Manifest{Kind:
// KindHibernate, ...}). To wake it: Open, Compatible, CopySparse the
// memory back to /dev/shm (copy, not move, so a failed restore can be
// retried), Driver.Restore, and Remove(dir) once it runs. Rewriting a
// snapshot in place starts with Invalidate.
package snapshot
