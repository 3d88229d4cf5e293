// Package agent is the host agent's sandbox manager: it creates microVM
// sandboxes from templates (copy-on-write disk, network slot, cgroup, VMM,
// envd), tracks their lifecycle state, reaps idle ones, gives callers an
// envd client for exec, PTY and files, and re-adopts running sandboxes after
// an agent restart.
//
// Operations on one sandbox are serialised by that sandbox's lock; the
// manager's map lock is held only for bookkeeping, never across VMM,
// network, disk or envd calls, so sandboxes never wait for each other.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Clock tells the time; tests inject a fake to drive idle timeouts.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config wires a Manager to the host.
type Config struct {
	// Dir is WRENN_DIR: kernels/, images/, sandboxes/ live under it.
	Dir     string
	Driver  vmm.Driver
	Network *network.Pool
	Cgroups *cgroup.Manager
	Logger  *slog.Logger
	// Clock defaults to the system clock.
	Clock Clock
	// VMMOverheadMB is added to a sandbox's memory for its cgroup limit:
	// the VMM's own memory (and, under TCG, its translation cache, bounded
	// by qemu.TCGTranslationCacheMB).
	VMMOverheadMB int
	// ReadyTimeout bounds boot-to-envd-ready. Default 90 s (TCG is slow).
	ReadyTimeout time.Duration
	// KernelArgs are appended to every guest's command line.
	KernelArgs string
	// MemoryDir holds guest RAM files while VMMs run (DefaultMemoryDir).
	MemoryDir string
	// VMMUIDBase is the first unprivileged uid/gid VMMs run as: a sandbox
	// in network slot i runs as VMMUIDBase+i (see confine.go).
	// DefaultVMMUIDBase when zero; VMMs never run as root.
	VMMUIDBase uint32
	// MetricsInterval is how often RunSampler samples each running
	// sandbox into its history (history.go); zero turns sampling off.
	MetricsInterval time.Duration
	// MetricsHistory is how far back a sandbox's history reaches;
	// DefaultMetricsHistory when zero. The ring holds
	// MetricsHistory/MetricsInterval samples (at most MaxMetricsSamples).
	MetricsHistory time.Duration
	// Events, when set, receives every sandbox state change (events.go),
	// the agent's own (reaper, a VMM's death, recovery) and those asked
	// for, for the control plane.
	Events EventSink
	// Faults are the fault points tests arm (internal/faultpoint); nil
	// in production.
	Faults *faultpoint.Points
}

// Defaults for zero Config and CreateRequest fields.
const (
	DefaultTemplate      = "minimal"
	DefaultVCPUs         = 1
	DefaultMemoryMB      = 512
	DefaultDiskMB        = 2048
	DefaultTimeout       = 5 * time.Minute
	DefaultVMMOverheadMB = 256
	DefaultReadyTimeout  = 90 * time.Second
	// MaxVCPUs, MaxMemoryMB and MaxDiskMB bound one sandbox.
	MaxVCPUs    = 16
	MaxMemoryMB = 64 * 1024
	MaxDiskMB   = 512 * 1024
	// defaultUser is the guest account commands run as (images/rootfs).
	defaultUser = "user"
	// vmmPids bounds the VMM's threads (vCPUs, I/O, RCU, TCG helpers).
	vmmPids = 512
)

// Manager owns the sandboxes on this host.
type Manager struct {
	cfg Config
	log *slog.Logger
	// vmmGID is the VMM group every VMM identity joins (confine.go).
	vmmGID uint32

	mu        sync.Mutex
	sandboxes map[string]*sandbox

	// bg tracks background clean-up (used snapshots); Close waits for it.
	bg sync.WaitGroup

	// pending is what admitted creates and forks hold until they end
	// (capacity.go): a sandbox is counted from its admission, not only once
	// it is in sandboxes, so two admissions cannot take the same room.
	pendingMu sync.Mutex
	pending   map[string]admitted

	// sampleWait overrides sampleTimeout (tests).
	sampleWait time.Duration

	// watchCtx ends the VMM watchers (events.go) at Close; watchers tracks
	// them.
	watchCtx  context.Context
	stopWatch context.CancelFunc
	watchers  sync.WaitGroup
}

// sandbox is one VM and what it holds on the host.
type sandbox struct {
	// mu serialises operations on this sandbox.
	mu  sync.Mutex
	dir string
	rec *record
	// owner reports the sandbox's state changes (nil in some tests).
	owner *Manager
	// cause is why the operation under way changes the state (events.go);
	// "" is ReasonRequested. Guarded by mu.
	cause Reason
	// watched is the VMM a watcher waits on (events.go). Guarded by mu.
	watched vmm.Machine

	machine vmm.Machine
	slot    *network.Slot
	group   *cgroup.Group
	envd    *envdclient.Client

	// lastActive is guarded by activeMu, not mu, so that touching a sandbox
	// never waits behind a long operation on it.
	activeMu   sync.Mutex
	lastActive time.Time

	// runCh, while the sandbox runs and someone asked (RunDone), is closed
	// when it stops running, so proxied requests to its guest end with it
	// rather than waiting on a dead guest's TCP. Guarded by runMu, not mu.
	runMu sync.Mutex
	runCh chan struct{}

	// seen is the description last taken under mu, for List to report
	// while a long operation (boot, fork copy, hibernation) holds mu.
	seen atomic.Pointer[Info]

	// history is the sandbox's recent metrics (history.go), guarded by its
	// own lock; sampling is set while a sample of it is being taken.
	history  metricsRing
	sampling atomic.Bool
}

// New returns a Manager. Call Recover before serving requests.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" || cfg.Driver == nil || cfg.Network == nil || cfg.Cgroups == nil {
		return nil, errors.New("agent config: Dir, Driver, Network and Cgroups are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.VMMOverheadMB == 0 {
		cfg.VMMOverheadMB = DefaultVMMOverheadMB
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.VMMUIDBase == 0 {
		cfg.VMMUIDBase = DefaultVMMUIDBase
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "sandboxes"), 0o711); err != nil {
		return nil, fmt.Errorf("create sandboxes dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("create snapshots dir: %w", err)
	}
	if cfg.MemoryDir == "" {
		cfg.MemoryDir = DefaultMemoryDir
	}
	if err := mountMemoryDir(cfg.MemoryDir); err != nil {
		cfg.Logger.Warn("guest memory without huge pages", "err", err)
	}
	// VMMs (unprivileged) pass through to their own file only.
	if err := os.MkdirAll(cfg.MemoryDir, 0o711); err != nil {
		return nil, fmt.Errorf("create guest memory dir: %w", err)
	}
	if err := os.Chmod(cfg.MemoryDir, 0o711); err != nil {
		return nil, fmt.Errorf("restrict guest memory dir: %w", err)
	}
	// Bounded: at most a groupadd runs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vmmGID, err := prepareVMMAccess(ctx, cfg.Dir, cfg.Logger)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, vmmGID: vmmGID, sandboxes: map[string]*sandbox{}}
	m.watchCtx, m.stopWatch = context.WithCancel(context.Background())
	return m, nil
}

func (m *Manager) sandboxDir(id string) string {
	return filepath.Join(m.cfg.Dir, "sandboxes", id)
}

// lookup returns the sandbox or NotFound.
func (m *Manager) lookup(id string) (*sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.sandboxes[id]
	if !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, "sandbox %s not found", id)
	}
	return sb, nil
}

// Info describes a sandbox to callers.
type Info struct {
	ID            string
	Template      string
	State         state.State
	VCPUs         int
	MemoryMB      int
	DiskMB        int
	Metadata      map[string]string
	Network       network.Policy
	Timeout       time.Duration
	OnTimeout     OnTimeout
	CreatedAt     time.Time
	LastActiveAt  time.Time
	KernelVersion string
	// Address is where the host reaches the guest (envd at Address:49983).
	Address string
	// AccessToken authorizes calls to the guest's envd.
	AccessToken string
	PID         int
	// MemoryDropped is set on a sandbox paused without its memory
	// (PauseDropMemory): resuming it cold-boots the guest from its disk.
	MemoryDropped bool
	// Version is the state's version (Event.Version).
	Version int64
	// Purpose is PurposeBuild for a build VM: not a tenant's sandbox.
	Purpose string
}

func (sb *sandbox) info() Info {
	r := sb.rec
	in := Info{
		ID: r.ID, Template: r.Template, State: r.State, VCPUs: r.VCPUs, MemoryMB: r.MemoryMB,
		DiskMB: r.DiskMB, Metadata: r.Metadata, Network: r.Network, Timeout: r.Timeout,
		OnTimeout: r.OnTimeout, CreatedAt: r.CreatedAt, KernelVersion: r.KernelVersion,
		AccessToken: r.AccessToken, LastActiveAt: sb.lastActiveAt(), MemoryDropped: r.MemoryDropped,
		Version: r.Version, Purpose: r.Purpose,
	}
	if sb.slot != nil {
		in.Address = sb.slot.HostIP().String()
	}
	if sb.machine != nil {
		in.PID = sb.machine.PID()
	}
	sb.seen.Store(&in)
	return in
}

// Get returns one sandbox's description.
func (m *Manager) Get(ctx context.Context, id string) (Info, error) {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return Info{}, err
	}
	defer sb.mu.Unlock()
	return sb.info(), nil
}

// List describes every sandbox, sorted by creation time. It never waits
// for a sandbox's lock: one busy with a long operation is described as it
// was last seen (a sandbox still booting for the first time as starting),
// so heartbeats and metrics are not held up by a boot or a fork.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	m.mu.Lock()
	ids := make(map[*sandbox]string, len(m.sandboxes))
	for id, sb := range m.sandboxes {
		ids[sb] = id
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(ids))
	for sb, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if sb.mu.TryLock() {
			out = append(out, sb.info())
			sb.mu.Unlock()
			continue
		}
		if seen := sb.seen.Load(); seen != nil {
			out = append(out, *seen)
			continue
		}
		out = append(out, Info{ID: id, State: state.Starting})
	}
	slices.SortFunc(out, func(a, b Info) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// acquire looks a sandbox up and takes its lock, giving up when ctx ends;
// the caller unlocks sb.mu.
func (m *Manager) acquire(ctx context.Context, id string) (*sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	if err := lockCtx(ctx, &sb.mu); err != nil {
		return nil, err
	}
	return sb, nil
}

// lockCtx takes mu unless ctx ends first. A sandbox lock can be held for the
// length of a boot, so callers must be able to give up.
func lockCtx(ctx context.Context, mu *sync.Mutex) error {
	if mu.TryLock() {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for sandbox lock: %w", ctx.Err())
		case <-t.C:
			if mu.TryLock() {
				return nil
			}
		}
	}
}

func (sb *sandbox) touch(now time.Time) {
	sb.activeMu.Lock()
	defer sb.activeMu.Unlock()
	if now.After(sb.lastActive) {
		sb.lastActive = now
	}
}

func (sb *sandbox) lastActiveAt() time.Time {
	sb.activeMu.Lock()
	defer sb.activeMu.Unlock()
	return sb.lastActive
}

// setState checks and records a transition, persisting it with a new
// version, and reports it (events.go). A sandbox that now runs has its VMM
// watched for an exit nobody asked for.
func (sb *sandbox) setState(to state.State) error {
	if err := sb.rec.State.Check(to); err != nil {
		return err
	}
	sb.rec.State = to
	sb.rec.Version++
	if to != state.Running {
		sb.leftRunning()
	}
	err := writeRecord(sb.dir, sb.rec)
	// Reported even when the record could not be written: the state in
	// memory, which List and heartbeats report, has changed.
	sb.owner.emit(sb, "")
	if to == state.Running && sb.owner != nil {
		sb.owner.watchMachine(sb)
	}
	return err
}

// runDone is closed when the sandbox next stops running.
func (sb *sandbox) runDone() <-chan struct{} {
	sb.runMu.Lock()
	defer sb.runMu.Unlock()
	if sb.runCh == nil {
		sb.runCh = make(chan struct{})
	}
	return sb.runCh
}

// leftRunning closes runDone's channel (the sandbox paused, stopped or
// failed).
func (sb *sandbox) leftRunning() {
	sb.runMu.Lock()
	defer sb.runMu.Unlock()
	if sb.runCh != nil {
		close(sb.runCh)
		sb.runCh = nil
	}
}

// RunDone returns a channel closed when sandbox id stops running (pause,
// destroy, a dead VMM): the guest proxy ends its requests with it. The
// caller checks that the sandbox runs after taking the channel.
func (m *Manager) RunDone(id string) (<-chan struct{}, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	return sb.runDone(), nil
}

// newID returns a random sandbox id: 16 lowercase base32 characters, valid
// in host names, file names and cgroup names.
func newID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// validID accepts ids a caller may choose: what newID makes, or any short
// lowercase name safe as a path, interface-free name and hostname.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 40 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return id[0] != '-'
}

// Close lets go of every sandbox without stopping it: a graceful agent
// shutdown leaves guests running for the next agent to re-adopt.
func (m *Manager) Close() error {
	m.bg.Wait()
	m.stopWatchers()
	m.mu.Lock()
	all := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		all = append(all, sb)
	}
	m.sandboxes = map[string]*sandbox{}
	m.mu.Unlock()
	var errs []error
	for _, sb := range all {
		sb.mu.Lock()
		if sb.machine != nil {
			if err := sb.machine.Close(); err != nil {
				errs = append(errs, fmt.Errorf("release sandbox %s: %w", sb.rec.ID, err))
			}
			sb.machine = nil
		}
		if sb.envd != nil {
			sb.envd.CloseIdleConnections()
		}
		sb.mu.Unlock()
	}
	return errors.Join(errs...)
}
