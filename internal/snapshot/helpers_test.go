package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fillRandom writes n pseudo-random bytes at off in the file at path,
// creating the file if needed. Random data has no all-zero page (the odds
// are 2^-32768).
func fillRandom(t testing.TB, path string, off, n int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(off))
	buf := make([]byte, n)
	rand.NewChaCha8(key).Read(buf)
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// sparseFile creates a file of the given size that is a hole except for
// random data in the given [off, off+len) ranges.
func sparseFile(t testing.TB, path string, size int64, ranges ...[2]int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	for i, r := range ranges {
		fillRandom(t, path, r[0], r[1], uint64(i)+1)
	}
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func usage(t testing.TB, path string) int64 {
	t.Helper()
	n, err := Usage(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

const memSize = 64 * mib

// makeSnapshotFiles fills dir with what a VMM and the agent leave before
// Write: device state, the driver's JSON, a sparse memory file and a
// sparse disk.
func makeSnapshotFiles(t testing.TB, dir string) {
	t.Helper()
	fillRandom(t, filepath.Join(dir, "vmstate"), 0, 200*kib, 7)
	if err := os.WriteFile(filepath.Join(dir, "snapshot.json"), []byte(`{"version":1,"memory_mb":64}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sparseFile(t, filepath.Join(dir, MemoryName), memSize,
		[2]int64{0, 2 * mib}, [2]int64{20 * mib, 256 * kib}, [2]int64{memSize - 512*kib, 512 * kib})
	sparseFile(t, filepath.Join(dir, "disk.qcow2"), 8*mib, [2]int64{0, 192 * kib}, [2]int64{4 * mib, 64 * kib})
}

// editManifest rewrites dir's manifest through fn, as a person with an
// editor would.
func editManifest(t testing.TB, dir string, fn func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fileEntry returns the manifest map's entry for the named file.
func fileEntry(t testing.TB, m map[string]any, name string) map[string]any {
	t.Helper()
	for _, f := range m["files"].([]any) {
		if e := f.(map[string]any); e["name"] == name {
			return e
		}
	}
	t.Fatalf("manifest lists no %s", name)
	return nil
}

// flipByte inverts one byte of the file at path, keeping its size.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// assertNoTemp fails if a temporary file was left in dir.
func assertNoTemp(t testing.TB, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}
