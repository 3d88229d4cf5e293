package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type countingProbe struct {
	n      int
	answer AccelChoice
}

func (p *countingProbe) probe(context.Context, string, string) AccelChoice {
	p.n++
	return p.answer
}

func TestCachedProbe(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	host := "host-a"
	fp := func(string, string) string { return host }
	tcg := AccelChoice{Accel: AccelTCG, Reason: "/dev/kvm is PVM and the probe guest failed"}
	kvm := AccelChoice{Accel: AccelKVM, Reason: "KVM probe guest reached it"}

	t.Run("TCG is remembered while the host is the same", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "accel.json")
		p := &countingProbe{answer: tcg}
		first := cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe)
		second := cachedProbe(context.Background(), "qemu", "vmlinux", file, t0.Add(time.Hour), fp, p.probe)
		if p.n != 1 {
			t.Fatalf("probe ran %d times, want 1 (the second start should use the cache)", p.n)
		}
		if first.Accel != AccelTCG || second.Accel != AccelTCG {
			t.Fatalf("choices %v, %v; want tcg both", first, second)
		}
		if !strings.Contains(second.Reason, "remembered") || !strings.Contains(second.Reason, tcg.Reason) {
			t.Fatalf("a cached choice must say so and keep the reason: %q", second.Reason)
		}
	})
	t.Run("a changed host probes again", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "accel.json")
		p := &countingProbe{answer: tcg}
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe)
		other := func(string, string) string { return "host-b" }
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, other, p.probe)
		if p.n != 2 {
			t.Fatalf("probe ran %d times, want 2", p.n)
		}
	})
	t.Run("the cache expires", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "accel.json")
		p := &countingProbe{answer: tcg}
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe)
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0.Add(ProbeCacheTTL), fp, p.probe)
		// A clock that went back does not trust a future entry either.
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0.Add(-time.Minute), fp, p.probe)
		if p.n != 3 {
			t.Fatalf("probe ran %d times, want 3", p.n)
		}
	})
	t.Run("KVM is never remembered and clears a TCG entry", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "accel.json")
		p := &countingProbe{answer: tcg}
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe)
		p.answer = kvm
		host = "host-kvm" // e.g. the PVM module was unloaded
		defer func() { host = "host-a" }()
		if got := cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe); got.Accel != AccelKVM {
			t.Fatalf("got %v, want kvm", got)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Fatalf("cache file after a KVM choice: %v", err)
		}
		cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe)
		if p.n != 3 {
			t.Fatalf("probe ran %d times, want 3 (KVM probes every start)", p.n)
		}
	})
	t.Run("a corrupt or unwritable cache costs a probe, not an error", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "accel.json")
		if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &countingProbe{answer: tcg}
		if got := cachedProbe(context.Background(), "qemu", "vmlinux", file, t0, fp, p.probe); got.Accel != AccelTCG || p.n != 1 {
			t.Fatalf("corrupt cache: got %v after %d probes", got, p.n)
		}
		missing := filepath.Join(dir, "no-such-dir", "accel.json")
		if got := cachedProbe(context.Background(), "qemu", "vmlinux", missing, t0, fp, p.probe); got.Accel != AccelTCG || p.n != 2 {
			t.Fatalf("unwritable cache: got %v after %d probes", got, p.n)
		}
	})
}

func TestHostFingerprintChangesWithTheKernelFile(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := hostFingerprint("/bin/true", kernel)
	if err := os.WriteFile(kernel, []byte("bb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if after := hostFingerprint("/bin/true", kernel); after == before {
		t.Fatalf("fingerprint did not change with the probe kernel: %q", after)
	}
}
