// Package scheduler picks the host a new sandbox runs on. It is pure: the
// caller loads hosts and their reservations from the store, and Rank
// returns the hosts to try, best first, so a failed create can move on to
// the next one.
//
// A host is a candidate when it is online, the team may use it (a regular
// host, or a byoc host of the same team), it can run the template (it has
// the base image, or holds the snapshot template's files) and it has room:
//   - vCPUs: reserved plus requested within cpus x overcommit;
//   - memory: reserved plus requested within physical memory and within the
//     tmpfs that holds guest RAM (a full tmpfs SIGBUSes the VMM that touches
//     a new page), and at least the request actually free in both;
//   - disk: a sandbox's overlay may grow to its disk_mb, so what the live
//     sandboxes reserve but have not written yet, plus the request, must
//     fit in what WRENN_DIR's filesystem has free (less a headroom), or a
//     guest's write could end in ENOSPC for every tenant of the host.
//
// Memory and disk are never overcommitted; vCPUs are time-shared.
// Among candidates, Rank prefers hosts that hold a snapshot of the template
// (a restore instead of a boot), then repeatedly takes the best-scoring of
// K random remaining ones ("power of K choices"): good spreading without
// every control-plane replica piling onto the same emptiest host.
package scheduler

import (
	"math/rand/v2"
	"slices"

	"github.com/google/uuid"
)

// Defaults for the zero values of Policy.
const (
	DefaultOvercommit = 4.0
	DefaultChoices    = 3
	// DefaultDiskHeadroom is kept free on WRENN_DIR's filesystem for what
	// is not a sandbox disk: logs, sandbox records, template snapshots.
	DefaultDiskHeadroom = int64(2) << 30
)

// Host is what scheduling needs to know about one host.
type Host struct {
	ID     uuid.UUID
	TeamID uuid.UUID
	// Type is "regular" (any team) or "byoc" (its own team only).
	Type string
	// Status must be "online" to take work.
	Status string

	CPUs        int
	MemoryBytes int64
	// MemoryAvailableBytes is what the host last measured as free.
	MemoryAvailableBytes int64
	Load1                float64

	// Reserved by the sandboxes the store places on this host (live
	// states), not only what the last heartbeat said: two creates in a row
	// must see each other.
	ReservedVCPUs       int
	ReservedMemoryBytes int64
	// ReservedDiskBytes is what the store's live sandboxes may grow their
	// disks (and hibernation images) to on this host.
	ReservedDiskBytes int64

	// DiskAvailableBytes is what WRENN_DIR's filesystem last had free, and
	// SandboxDiskUsedBytes what the host's sandboxes occupied of it then.
	DiskAvailableBytes   int64
	SandboxDiskUsedBytes int64
	// GuestMemoryBytes is the size of the tmpfs holding guest RAM and
	// GuestMemoryAvailableBytes what it last had free. 0: not reported
	// (an older agent): physical memory alone bounds guest RAM.
	GuestMemoryBytes          int64
	GuestMemoryAvailableBytes int64

	// Images are the base images (built-in templates) the host has.
	Images []string
	// Templates and SnapshotTemplates are agent names of templates the host
	// holds, and those of them with a memory snapshot.
	Templates         []string
	SnapshotTemplates []string
}

// Request is what a new sandbox needs.
type Request struct {
	TeamID      uuid.UUID
	VCPUs       int
	MemoryBytes int64
	DiskBytes   int64
	// Template is the agent name of the template.
	Template string
	// Builtin: Template is a base image (any host listing it in Images can
	// boot it). Otherwise it is a team template that only hosts holding it
	// can run.
	Builtin bool
	// Home, when set, is a host known to hold the template's files (the
	// host a snapshot was taken on), even before its heartbeat lists it.
	Home *uuid.UUID
	// Portable: a built template, which any host can run once it has a
	// copy (the control plane copies it from Home first). Hosts that hold
	// it already come first.
	Portable bool
}

// Policy tunes the choice. The zero value uses the defaults.
type Policy struct {
	// Overcommit is how many vCPUs may be reserved per host CPU.
	Overcommit float64
	// Choices is K: how many random candidates compete for each place.
	Choices int
	// DiskHeadroom is kept free on each host's disk (DefaultDiskHeadroom
	// when 0; negative: none).
	DiskHeadroom int64
}

func (p Policy) withDefaults() Policy {
	if p.Overcommit <= 0 {
		p.Overcommit = DefaultOvercommit
	}
	if p.Choices <= 0 {
		p.Choices = DefaultChoices
	}
	if p.DiskHeadroom == 0 {
		p.DiskHeadroom = DefaultDiskHeadroom
	}
	p.DiskHeadroom = max(p.DiskHeadroom, 0)
	return p
}

// Usable reports whether the team may place sandboxes on h at all.
func Usable(h Host, team uuid.UUID) bool {
	if h.Status != "online" {
		return false
	}
	switch h.Type {
	case "regular":
		return true
	case "byoc":
		return h.TeamID == team
	}
	return false
}

// Need is what a placement adds to a host.
type Need struct {
	VCPUs       int
	MemoryBytes int64
	DiskBytes   int64
}

// Fits reports whether h has room for n more. Resume, fork and the like
// use it on the sandbox's own host.
func Fits(h Host, n Need, p Policy) bool {
	p = p.withDefaults()
	if h.CPUs <= 0 || h.MemoryBytes <= 0 {
		return false
	}
	if float64(h.ReservedVCPUs+n.VCPUs) > float64(h.CPUs)*p.Overcommit {
		return false
	}
	memCap := h.MemoryBytes
	if h.GuestMemoryBytes > 0 {
		memCap = min(memCap, h.GuestMemoryBytes)
		if n.MemoryBytes > 0 && h.GuestMemoryAvailableBytes < n.MemoryBytes {
			return false
		}
	}
	if h.ReservedMemoryBytes+n.MemoryBytes > memCap {
		return false
	}
	if n.MemoryBytes > 0 && h.MemoryAvailableBytes < n.MemoryBytes {
		return false
	}
	if n.DiskBytes <= 0 {
		return true
	}
	// Reserved but not yet written: the disks' promised growth. Bytes the
	// sandboxes occupy are already out of DiskAvailableBytes. Both figures
	// come from the same heartbeat, so a sandbox that writes moves bytes
	// from one side to the other without changing the answer.
	unwritten := max(h.ReservedDiskBytes-h.SandboxDiskUsedBytes, 0)
	return unwritten+n.DiskBytes <= h.DiskAvailableBytes-p.DiskHeadroom
}

// holds reports whether h can run the request's template, and whether it
// holds a snapshot of it (a restore rather than a boot) or, for a portable
// template, a copy of it (no copy to make first).
func holds(h Host, r Request) (can, snap bool) {
	snap = slices.Contains(h.SnapshotTemplates, r.Template)
	if r.Builtin {
		return slices.Contains(h.Images, r.Template), snap
	}
	home := r.Home != nil && *r.Home == h.ID
	has := home || snap || slices.Contains(h.Templates, r.Template)
	if r.Portable {
		return true, has
	}
	return has, snap || home
}

// Candidates returns the hosts that can take r, in input order.
func Candidates(hosts []Host, r Request, p Policy) []Host {
	out := make([]Host, 0, len(hosts))
	for _, h := range hosts {
		if !Usable(h, r.TeamID) || !Fits(h, Need{VCPUs: r.VCPUs, MemoryBytes: r.MemoryBytes, DiskBytes: r.DiskBytes}, p) {
			continue
		}
		if can, _ := holds(h, r); can {
			out = append(out, h)
		}
	}
	return out
}

// Score rates how comfortably h takes r: higher is better. It weighs the
// share of reservable vCPUs and memory left after placing r and the share
// of memory actually free, less a little for CPU load.
func Score(h Host, r Request, p Policy) float64 {
	p = p.withDefaults()
	cpuCap := float64(h.CPUs) * p.Overcommit
	mem := float64(h.MemoryBytes)
	if cpuCap <= 0 || mem <= 0 {
		return 0
	}
	freeCPU := (cpuCap - float64(h.ReservedVCPUs+r.VCPUs)) / cpuCap
	freeMem := (mem - float64(h.ReservedMemoryBytes+r.MemoryBytes)) / mem
	actual := float64(h.MemoryAvailableBytes-r.MemoryBytes) / mem
	load := h.Load1 / float64(max(h.CPUs, 1))
	return freeCPU + freeMem + actual - 0.5*min(load, 2)
}

// Rank returns up to limit hosts to try for r (limit <= 0: every
// candidate), best first, each once: those holding a snapshot of the
// template before the others, each group ordered by repeated best-of-K
// random draws. An empty result means no host has room.
func Rank(hosts []Host, r Request, p Policy, rnd *rand.Rand, limit int) []Host {
	p = p.withDefaults()
	cands := Candidates(hosts, r, p)
	pref, rest := make([]Host, 0, len(cands)), make([]Host, 0, len(cands))
	for _, h := range cands {
		if _, snap := holds(h, r); snap {
			pref = append(pref, h)
		} else {
			rest = append(rest, h)
		}
	}
	if limit <= 0 {
		limit = len(pref) + len(rest)
	}
	out := order(pref, r, p, rnd, limit)
	return append(out, order(rest, r, p, rnd, limit-len(out))...)
}

// order draws K hosts at random from what remains, places the best, and
// repeats until limit hosts are placed or none is left.
func order(hosts []Host, r Request, p Policy, rnd *rand.Rand, limit int) []Host {
	left := hosts // callers pass slices of their own
	out := make([]Host, 0, min(limit, len(left)))
	for len(left) > 0 && len(out) < limit {
		k := min(p.Choices, len(left))
		// A partial Fisher-Yates puts k random hosts in front: O(k), not a
		// full shuffle per place.
		for i := range k {
			j := i + rnd.IntN(len(left)-i)
			left[i], left[j] = left[j], left[i]
		}
		best := 0
		for i := 1; i < k; i++ {
			if Score(left[i], r, p) > Score(left[best], r, p) {
				best = i
			}
		}
		out = append(out, left[best])
		left = slices.Delete(left, best, best+1)
	}
	return out
}
