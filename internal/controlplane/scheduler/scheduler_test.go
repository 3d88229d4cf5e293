package scheduler

import (
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
)

const gib = int64(1) << 30

var (
	teamA = uuid.MustParse("00000000-0000-0000-0000-00000000000a")
	teamB = uuid.MustParse("00000000-0000-0000-0000-00000000000b")
)

func host(name string, mut ...func(*Host)) Host {
	h := Host{
		ID:     uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)),
		TeamID: teamB, Type: "regular", Status: "online",
		CPUs: 4, MemoryBytes: 16 * gib, MemoryAvailableBytes: 14 * gib,
		DiskAvailableBytes: 100 * gib, Images: []string{"minimal"},
	}
	for _, m := range mut {
		m(&h)
	}
	return h
}

func ids(hs []Host) []uuid.UUID {
	out := make([]uuid.UUID, len(hs))
	for i, h := range hs {
		out[i] = h.ID
	}
	return out
}

func rnd() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

func TestCandidates(t *testing.T) {
	req := Request{TeamID: teamA, VCPUs: 2, MemoryBytes: 2 * gib, Template: "minimal", Builtin: true}
	tests := []struct {
		name string
		h    Host
		want bool
	}{
		{"regular host of another team", host("a"), true},
		{"byoc host of the same team", host("b", func(h *Host) { h.Type = "byoc"; h.TeamID = teamA }), true},
		{"byoc host of another team", host("c", func(h *Host) { h.Type = "byoc" }), false},
		{"offline", host("d", func(h *Host) { h.Status = "unreachable" }), false},
		{"pending", host("e", func(h *Host) { h.Status = "pending" }), false},
		{"vcpus at the overcommit limit", host("f", func(h *Host) { h.ReservedVCPUs = 14 }), true},
		{"vcpus over the overcommit limit", host("g", func(h *Host) { h.ReservedVCPUs = 15 }), false},
		{"reserved memory full", host("h", func(h *Host) { h.ReservedMemoryBytes = 15 * gib }), false},
		{"too little memory actually free", host("i", func(h *Host) { h.MemoryAvailableBytes = gib }), false},
		{"no such image", host("j", func(h *Host) { h.Images = []string{"python"} }), false},
		{"no specs yet", host("k", func(h *Host) { h.CPUs = 0 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := len(Candidates([]Host{tt.h}, req, Policy{})) == 1
			if got != tt.want {
				t.Errorf("candidate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSnapshotTemplateRunsOnlyWhereItsFilesAre(t *testing.T) {
	home := host("home")
	other := host("other")
	listed := host("listed", func(h *Host) { h.SnapshotTemplates = []string{"t-abc"} })
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "t-abc", Home: &home.ID}

	got := ids(Rank([]Host{other, home, listed}, req, Policy{}, rnd(), 0))
	if len(got) != 2 {
		t.Fatalf("ranked %v, want home and listed only", got)
	}
	for _, id := range got {
		if id == other.ID {
			t.Errorf("host without the template's files ranked: %v", got)
		}
	}
}

// TestPortableTemplateRunsAnywhereHoldersFirst: a built template runs on
// any host (a copy is made first), and hosts that hold it come first even
// when fuller.
func TestPortableTemplateRunsAnywhereHoldersFirst(t *testing.T) {
	home := host("home", func(h *Host) { h.ReservedVCPUs, h.ReservedMemoryBytes = 8, 8*gib })
	copyHolder := host("copy", func(h *Host) {
		h.Templates = []string{"tb-x"}
		h.ReservedVCPUs, h.ReservedMemoryBytes = 8, 8*gib
	})
	empty := host("empty")
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "tb-x", Home: &home.ID, Portable: true}
	for seed := range uint64(20) {
		got := Rank([]Host{empty, home, copyHolder}, req, Policy{}, rand.New(rand.NewPCG(seed, seed)), 0)
		if len(got) != 3 || got[2].ID != empty.ID {
			t.Fatalf("seed %d: order %v, want the two holders, then the empty host", seed, ids(got))
		}
	}
	req.Portable = false
	if got := Rank([]Host{empty}, req, Policy{}, rnd(), 0); len(got) != 0 {
		t.Errorf("a host without a template that is not portable was ranked: %v", ids(got))
	}
}

func TestRankPrefersSnapshotHolders(t *testing.T) {
	plain := host("plain") // emptier, but would boot
	snap := host("snap", func(h *Host) {
		h.SnapshotTemplates = []string{"minimal"}
		h.ReservedVCPUs, h.ReservedMemoryBytes = 8, 8*gib
	})
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	for seed := range uint64(20) {
		got := Rank([]Host{plain, snap}, req, Policy{}, rand.New(rand.NewPCG(seed, seed)), 0)
		if len(got) != 2 || got[0].ID != snap.ID {
			t.Fatalf("seed %d: order %v, want the snapshot holder first", seed, ids(got))
		}
	}
}

func TestRankBestOfAllWhenFewHosts(t *testing.T) {
	// With K >= the number of hosts every draw sees them all, so the order
	// is by score: emptiest first.
	full := host("full", func(h *Host) { h.ReservedVCPUs, h.ReservedMemoryBytes = 12, 12*gib })
	half := host("half", func(h *Host) { h.ReservedVCPUs, h.ReservedMemoryBytes = 6, 6*gib })
	empty := host("empty")
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	for seed := range uint64(20) {
		got := ids(Rank([]Host{full, empty, half}, req, Policy{}, rand.New(rand.NewPCG(seed, 7)), 0))
		want := []uuid.UUID{empty.ID, half.ID, full.ID}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d: order %v, want %v", seed, got, want)
			}
		}
	}
}

func TestRankReturnsEveryCandidateOnce(t *testing.T) {
	var hosts []Host
	for i := range 50 {
		hosts = append(hosts, host(string(rune('A'+i)), func(h *Host) { h.ReservedVCPUs = i % 10 }))
	}
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	got := Rank(hosts, req, Policy{Choices: 3}, rnd(), 0)
	seen := map[uuid.UUID]bool{}
	for _, h := range got {
		if seen[h.ID] {
			t.Fatalf("host %s ranked twice", h.ID)
		}
		seen[h.ID] = true
	}
	if len(got) != len(hosts) {
		t.Errorf("ranked %d hosts, want %d", len(got), len(hosts))
	}
}

func TestRankSpreadsLoad(t *testing.T) {
	// Ten identical hosts: the first choice must vary across draws rather
	// than always being the same host (what best-of-all would do).
	var hosts []Host
	for i := range 10 {
		hosts = append(hosts, host(string(rune('a'+i))))
	}
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	r := rnd()
	first := map[uuid.UUID]int{}
	for range 200 {
		first[Rank(hosts, req, Policy{}, r, 1)[0].ID]++
	}
	if len(first) < 5 {
		t.Errorf("first choice spread over %d of 10 equal hosts, want at least 5", len(first))
	}
}

func TestRankLimit(t *testing.T) {
	hosts := []Host{host("a"), host("b"), host("c", func(h *Host) { h.SnapshotTemplates = []string{"minimal"} }), host("d")}
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	got := Rank(hosts, req, Policy{}, rnd(), 2)
	if len(got) != 2 || got[0].ID != hosts[2].ID {
		t.Errorf("Rank(limit 2) = %v, want 2 hosts, the snapshot holder first", ids(got))
	}
}

func TestNoCandidates(t *testing.T) {
	req := Request{TeamID: teamA, VCPUs: 64, MemoryBytes: gib, Template: "minimal", Builtin: true}
	if got := Rank([]Host{host("a"), host("b")}, req, Policy{}, rnd(), 3); len(got) != 0 {
		t.Errorf("ranked %v for a request no host fits", ids(got))
	}
}

func BenchmarkRank(b *testing.B) {
	var hosts []Host
	for i := range 500 {
		hosts = append(hosts, host(string(rune(0x100+i)), func(h *Host) { h.ReservedVCPUs = i % 12 }))
	}
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, Template: "minimal", Builtin: true}
	r := rnd()
	for b.Loop() {
		Rank(hosts, req, Policy{}, r, 3)
	}
}

// TestFitsAdmitsDiskAndGuestMemory: memory is bounded by the guest-RAM
// tmpfs as well as by physical memory (a full tmpfs SIGBUSes the VMMs), and
// disk by what the filesystem has free less what existing sandboxes may
// still write (their overlays grow to disk_mb): neither is overcommitted.
// Before disk and the tmpfs were admitted, every "false" case here fit.
func TestFitsAdmitsDiskAndGuestMemory(t *testing.T) {
	need := Need{VCPUs: 1, MemoryBytes: 2 * gib, DiskBytes: 10 * gib}
	p := Policy{DiskHeadroom: gib}
	tests := []struct {
		name string
		h    Host
		want bool
	}{
		{"room everywhere", host("a"), true},
		{"tmpfs smaller than RAM: reserved fills it", host("b", func(h *Host) {
			h.GuestMemoryBytes, h.GuestMemoryAvailableBytes = 8*gib, 8*gib
			h.ReservedMemoryBytes = 7 * gib
		}), false},
		{"tmpfs with room", host("c", func(h *Host) {
			h.GuestMemoryBytes, h.GuestMemoryAvailableBytes = 8*gib, 8*gib
			h.ReservedMemoryBytes = 6 * gib
		}), true},
		{"tmpfs measured nearly full (something else in it)", host("d", func(h *Host) {
			h.GuestMemoryBytes, h.GuestMemoryAvailableBytes = 8*gib, gib
		}), false},
		{"disk free but promised to existing sandboxes", host("e", func(h *Host) {
			h.DiskAvailableBytes = 50 * gib
			h.ReservedDiskBytes, h.SandboxDiskUsedBytes = 45*gib, 5*gib // 40 GiB still to come
		}), false},
		{"disk room after what is promised", host("f", func(h *Host) {
			h.DiskAvailableBytes = 60 * gib
			h.ReservedDiskBytes, h.SandboxDiskUsedBytes = 45*gib, 5*gib
		}), true},
		{"written disks are already out of the free space", host("g", func(h *Host) {
			h.DiskAvailableBytes = 12 * gib
			h.ReservedDiskBytes, h.SandboxDiskUsedBytes = 40*gib, 40*gib
		}), true},
		{"request alone over the free space", host("h", func(h *Host) { h.DiskAvailableBytes = 5 * gib }), false},
		{"headroom kept free", host("i", func(h *Host) { h.DiskAvailableBytes = 10*gib + gib/2 }), false},
		{"no disk reported yet", host("j", func(h *Host) { h.DiskAvailableBytes = 0 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Fits(tt.h, need, p); got != tt.want {
				t.Errorf("Fits = %v, want %v", got, tt.want)
			}
		})
	}
	// Rank passes the request's disk to the same check.
	req := Request{TeamID: teamA, VCPUs: 1, MemoryBytes: gib, DiskBytes: 20 * gib, Template: "minimal", Builtin: true}
	small := host("small", func(h *Host) { h.DiskAvailableBytes = 10 * gib })
	big := host("big")
	if got := ids(Rank([]Host{small, big}, req, Policy{}, rnd(), 0)); len(got) != 1 || got[0] != big.ID {
		t.Fatalf("ranked %v, want only the host with disk room (%v)", got, big.ID)
	}
}
