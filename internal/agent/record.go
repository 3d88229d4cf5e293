package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/network"
)

// recordFile is the persisted spec and state of one sandbox, in its directory.
const recordFile = "sandbox.json"

// record is everything a restarted agent needs to re-adopt a sandbox. It is
// rewritten (atomically) on every state change.
type record struct {
	ID string `json:"id"`
	// TeamID is the team the sandbox was created for ("" when the caller
	// named none: a local caller, or a record from before teams were
	// recorded). Forks inherit it; a template snapshotted from the sandbox
	// is owned by it.
	TeamID   string            `json:"team_id,omitempty"`
	Template string            `json:"template"`
	VCPUs    int               `json:"vcpus"`
	MemoryMB int               `json:"memory_mb"`
	DiskMB   int               `json:"disk_mb"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Network  network.Policy    `json:"network"`
	// Timeout is the idle time after which OnTimeout applies.
	Timeout   time.Duration `json:"timeout"`
	OnTimeout OnTimeout     `json:"on_timeout"`

	State         state.State `json:"state"`
	Slot          int         `json:"slot"`
	KernelVersion string      `json:"kernel_version"`
	Disk          string      `json:"disk"`
	// DiskFormat is "qcow2" (an overlay, QEMU) or "raw" (Firecracker).
	DiskFormat  string    `json:"disk_format"`
	AccessToken string    `json:"access_token"`
	CreatedAt   time.Time `json:"created_at"`
	// MemoryDropped marks a sandbox paused without its memory (coldpause.go):
	// no VMM, memory or cgroup; resuming cold-boots it from its disk.
	MemoryDropped bool `json:"memory_dropped,omitempty"`
	// Version increases with every state change (setState, forceState):
	// the control plane applies a report of the state only when its
	// version is newer than the last it applied. Records from before
	// versions start at 0.
	Version int64 `json:"version,omitempty"`
	// User and Workdir are envd's defaults, from the template ("" for
	// defaultUser and envd's own default).
	User    string `json:"user,omitempty"`
	Workdir string `json:"workdir,omitempty"`
	// Purpose is PurposeBuild for a build VM (buildvm.go), "" for a
	// tenant's sandbox.
	Purpose string `json:"purpose,omitempty"`
}

// init is the envd init that gives a booted guest its identity.
func (r *record) init() envdclient.InitRequest {
	user := r.User
	if user == "" {
		user = defaultUser
	}
	return envdclient.InitRequest{EnvVars: r.Env, AccessToken: r.AccessToken, DefaultUser: user, DefaultWorkdir: r.Workdir}
}

func writeRecord(dir string, r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sandbox record: %w", err)
	}
	tmp := filepath.Join(dir, "."+recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write sandbox record: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, recordFile)); err != nil {
		return fmt.Errorf("commit sandbox record: %w", err)
	}
	return nil
}

func readRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, fmt.Errorf("read sandbox record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode sandbox record %s: %w", dir, err)
	}
	return &r, nil
}
