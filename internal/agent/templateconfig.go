package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/templates/builder"
)

// TemplateConfig is a built template's configuration, written by the
// builder beside its image as images/<name>/template.json: who owns it and
// what its sandboxes start with. Base images and snapshot templates taken
// from a sandbox have none.
type TemplateConfig = builder.TemplateConfig

// templateConfigName is the file a built template's TemplateConfig is in.
const templateConfigName = "template.json"

// templateDefaults fills a create's unset shape from a built template and
// returns its environment: the template's, with the request's laid over it.
func templateDefaults(c *TemplateConfig, req *CreateRequest) map[string]string {
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
	b, err := os.ReadFile(filepath.Join(m.cfg.Dir, "images", name, templateConfigName))
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
