package hostbuild

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/builder"
)

// noVMs is a builder.VMs these tests never reach.
type noVMs struct{}

func (noVMs) StartBuildVM(context.Context, builder.VMSpec) (builder.VM, error) {
	return nil, errors.New("no VMs in this test")
}

func newService(t *testing.T) *Service {
	t.Helper()
	dir := t.TempDir()
	b, err := builder.New(builder.Config{Dir: dir, VMs: noVMs{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Dir: dir, Builder: b, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cacheFile writes a cache file last used age ago.
func cacheFile(t *testing.T, s *Service, rel string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(s.cfg.Dir, "buildcache", rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
	return p
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestCachesCollectedWhenIdle: a build start removes OCI bases and blobs
// unused for the TTL, keeps recent ones, and touches nothing while another
// build runs.
func TestCachesCollectedWhenIdle(t *testing.T) {
	s := newService(t)
	oldBase := cacheFile(t, s, "bases/aaa.ext4", 2*time.Hour)
	oldMeta := cacheFile(t, s, "bases/aaa.json", 2*time.Hour)
	oldBlob := cacheFile(t, s, "blobs/sha256/old", 2*time.Hour)
	newBase := cacheFile(t, s, "bases/bbb.ext4", time.Minute)
	newBlob := cacheFile(t, s, "blobs/sha256/new", time.Minute)

	// Another build runs: nothing is collected.
	s.active = 1
	if _, err := s.Build(context.Background(), Request{Build: "b1"}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("build without a context: %v, want failed precondition", err)
	}
	if !exists(oldBase) || !exists(oldBlob) {
		t.Fatal("caches were collected while a build ran")
	}
	s.active = 0
	if _, err := s.Build(context.Background(), Request{Build: "b2"}, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("build without a context: %v, want failed precondition", err)
	}
	for _, p := range []string{oldBase, oldMeta, oldBlob} {
		if exists(p) {
			t.Errorf("%s unused for 2 h (TTL 1 h) was kept", p)
		}
	}
	for _, p := range []string{newBase, newBlob} {
		if !exists(p) {
			t.Errorf("%s used a minute ago was removed", p)
		}
	}
	if s.active != 0 {
		t.Errorf("%d builds counted as running after both ended", s.active)
	}
}
