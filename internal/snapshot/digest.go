package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/wrenn/wrenn/internal/errdefs"
)

const (
	kib = 1 << 10
	mib = 1 << 20

	// pageSize is the unit CopySparse checks for zeros and Sample strides
	// over: the guest's page size, and the block size of the filesystems
	// snapshots live on.
	pageSize = 4 * kib

	// sampleEdge is how much of each end of a large file Sample reads.
	sampleEdge = 1 * mib
	// samplePages is how many pages Sample reads spread over the file.
	samplePages = 256
	// sampleMaxExtents bounds the allocation map Sample hashes, so a
	// pathologically fragmented file costs at most this many pairs of
	// lseek calls (measured: about 0.1 s on ext4 here). Extents past it are
	// not covered.
	sampleMaxExtents = 1 << 14
)

// errNoExtentMap means the filesystem cannot report holes (no
// SEEK_DATA/SEEK_HOLE): a file must be treated as all data.
var errNoExtentMap = errors.New("filesystem does not report holes")

// Sample returns the sample digest of the file at path, as recorded for
// memory and disk files. It reads a fixed amount whatever the file's size
// (at most 3 MiB plus the allocation map), so verifying a 16 GiB memory
// file costs about what verifying a 16 MiB one does.
//
// The digest is SHA-256 over: the size; the first and the last MiB; 256
// pages (4 KiB) at evenly spaced offsets; and the file's allocation map,
// the list of data extents from SEEK_DATA/SEEK_HOLE (the first 16384).
//
// It catches: truncation or extension (size), damage or replacement in
// the first or last MiB, most whole-file replacements (the spaced pages),
// and any write that allocates a hole or any hole punched in data (the
// map), such as a file rewritten by a tool that does not keep holes.
//
// It does not catch: a change confined to allocated data outside the
// sampled ranges (a flipped bit in the middle of a data extent; bit rot
// the disk does not report), nor a change in extents past the first
// 16384. And it depends on the allocation map, so a copy of a snapshot
// made by a tool that fills or punches holes (cp --sparse=never, rsync
// without -S, CopySparse's own zero-page punching) has a different digest
// from its original: rewrite the manifest (Write) after such a copy.
func Sample(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("sample %s: %w", path, errdefs.FromOS(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("sample %s: %w", path, errdefs.FromOS(err))
	}
	return sampleFile(ctx, f, fi.Size())
}

// sampleFile computes the sample digest of f, whose size is size.
func sampleFile(ctx context.Context, f *os.File, size int64) (string, error) {
	h := sha256.New()
	io.WriteString(h, "wrenn-snapshot-sample-v1\n")
	putInt(h, size)

	buf := make([]byte, sampleEdge)
	read := func(off, n int64) error {
		b := buf[:n]
		if _, err := f.ReadAt(b, off); err != nil {
			return fmt.Errorf("read %d bytes at %d of %s: %w", n, off, f.Name(), err)
		}
		h.Write(b)
		return nil
	}
	if err := read(0, min(size, sampleEdge)); err != nil {
		return "", err
	}
	if size > sampleEdge {
		if err := read(max(size-sampleEdge, sampleEdge), min(size-sampleEdge, sampleEdge)); err != nil {
			return "", err
		}
	}
	// Evenly spaced pages between the two ends; each offset is page
	// aligned so the sample is the same pages a guest would touch.
	if size > 2*sampleEdge {
		step := size / samplePages
		for i := int64(0); i < samplePages; i++ {
			if i%32 == 0 {
				if err := ctx.Err(); err != nil {
					return "", err
				}
			}
			off := (i*step + step/2) &^ (pageSize - 1)
			if err := read(off, min(pageSize, size-off)); err != nil {
				return "", err
			}
		}
	}

	n := 0
	err := forEachData(ctx, f, size, func(start, end int64) error {
		if n == sampleMaxExtents {
			return errStop
		}
		n++
		putInt(h, start)
		putInt(h, end)
		return nil
	})
	switch {
	case errors.Is(err, errStop):
		io.WriteString(h, "map truncated\n")
	case errors.Is(err, errNoExtentMap):
		io.WriteString(h, "no map\n")
	case err != nil:
		return "", fmt.Errorf("allocation map of %s: %w", f.Name(), err)
	default:
		io.WriteString(h, "map end\n")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// errStop ends a forEachData walk early without being an error.
var errStop = errors.New("stop")

func putInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

// hashFile returns the hex SHA-256 of all of f, checking ctx between
// chunks so a large state file does not hold up a cancelled caller.
func hashFile(ctx context.Context, f *os.File) (string, error) {
	h := sha256.New()
	buf := make([]byte, mib)
	for off := int64(0); ; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
