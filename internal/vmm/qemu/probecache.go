package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/atomicfile"
)

// ProbeCacheTTL is how long a remembered TCG choice is trusted before the
// probe runs again, even on an unchanged host.
const ProbeCacheTTL = 24 * time.Hour

// probeCache is the file CachedProbe keeps.
type probeCache struct {
	Host   string    `json:"host"`
	Accel  Accel     `json:"accel"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// CachedProbe is Probe, remembering a TCG choice in cacheFile so that the
// next agent start on the same host does not wait ProbeTimeout again (a
// PVM host's probe always runs into it). The choice is reused only while
// the host looks the same as when it was made (host kernel release,
// /dev/kvm and the PVM module present or not, the QEMU binary and the
// probe kernel unchanged) and for at most ProbeCacheTTL. A KVM choice is
// never remembered: a working KVM answers the probe in under a second, and
// a stale "KVM works" would start guests that cannot run. An unreadable or
// unwritable cache costs a probe, never a wrong answer.
func CachedProbe(ctx context.Context, qemuBin, kernel, cacheFile string) AccelChoice {
	return cachedProbe(ctx, qemuBin, kernel, cacheFile, time.Now(), hostFingerprint, Probe)
}

func cachedProbe(ctx context.Context, qemuBin, kernel, cacheFile string, now time.Time,
	fingerprint func(qemuBin, kernel string) string,
	probe func(ctx context.Context, qemuBin, kernel string) AccelChoice) AccelChoice {
	host := fingerprint(qemuBin, kernel)
	if b, err := os.ReadFile(cacheFile); err == nil {
		var c probeCache
		if json.Unmarshal(b, &c) == nil && c.Host == host && c.Accel == AccelTCG &&
			!c.At.After(now) && now.Sub(c.At) < ProbeCacheTTL {
			return AccelChoice{Accel: AccelTCG, Reason: fmt.Sprintf("%s (remembered from the probe at %s; delete %s to probe again)",
				c.Reason, c.At.UTC().Format(time.RFC3339), cacheFile)}
		}
	}
	choice := probe(ctx, qemuBin, kernel)
	if choice.Accel != AccelTCG || ctx.Err() != nil {
		// KVM, or a probe cut short by the agent's own shutdown.
		_ = os.Remove(cacheFile)
		return choice
	}
	if b, err := json.Marshal(probeCache{Host: host, Accel: choice.Accel, Reason: choice.Reason, At: now}); err == nil {
		// Best effort: without the file the next start probes again.
		_ = atomicfile.WriteFile(cacheFile, b, 0o644)
	}
	return choice
}

// hostFingerprint names what the probe's answer depends on.
func hostFingerprint(qemuBin, kernel string) string {
	release, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	parts := []string{"kernel=" + strings.TrimSpace(string(release))}
	for _, p := range []string{kvmDevice, pvmModule, qemuBin, kernel} {
		fi, err := os.Stat(p)
		if err != nil {
			parts = append(parts, p+"=absent")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%d@%d", p, fi.Size(), fi.ModTime().UnixNano()))
	}
	return strings.Join(parts, ";")
}
