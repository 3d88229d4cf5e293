package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/atomicfile"
)

// TemplateConfigName is a built template's configuration, beside its
// image: images/<name>/template.json. Base images and snapshot templates
// taken from a sandbox have none.
const TemplateConfigName = "template.json"

// TemplateConfig is what a built template's sandboxes start with, and who
// may use it.
type TemplateConfig struct {
	// TeamID owns the template: only its sandboxes may use it, and the
	// host never reports it as a base image.
	TeamID string `json:"team_id,omitempty"`
	// Env is the environment every process in its sandboxes gets (the
	// recipe's ENV); a create's own env vars are laid over it.
	Env map[string]string `json:"env,omitempty"`
	// User and Workdir are envd's default user and working directory.
	User    string `json:"user,omitempty"`
	Workdir string `json:"workdir,omitempty"`
	// VCPUs, MemoryMB and DiskMB are the defaults of a create that asks
	// for none; DiskMB is also the smallest disk its image fits.
	VCPUs    int `json:"vcpus,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
	DiskMB   int `json:"disk_mb,omitempty"`
	// Start is the command the build started before the memory snapshot
	// (informational: the snapshot holds it running).
	Start []string `json:"start,omitempty"`
	// Build and Version name the build that made it.
	Build     string    `json:"build,omitempty"`
	Version   int       `json:"version,omitempty"`
	Digest    string    `json:"digest,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// WriteTemplateConfig writes c into a template directory.
func WriteTemplateConfig(dir string, c TemplateConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode template config: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, TemplateConfigName), b, 0o644); err != nil {
		return fmt.Errorf("write template config: %w", err)
	}
	return nil
}

// withDefaults fills a create's unset shape from the template and returns
// its environment: the template's, with the request's laid over it.
func (c *TemplateConfig) withDefaults(req *CreateRequest) map[string]string {
	for _, f := range []struct {
		req *int
		def int
	}{{&req.VCPUs, c.VCPUs}, {&req.MemoryMB, c.MemoryMB}, {&req.DiskMB, c.DiskMB}} {
		if *f.req == 0 {
			*f.req = f.def
		}
	}
	env := maps.Clone(c.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, req.Env)
	return env
}

// templateConfig reads template name's configuration: nil when it has
// none.
func (m *Manager) templateConfig(name string) (*TemplateConfig, error) {
	b, err := os.ReadFile(filepath.Join(m.cfg.Dir, "images", name, TemplateConfigName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read template %s config: %w", name, err)
	}
	var c TemplateConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode template %s config: %w", name, err)
	}
	return &c, nil
}
