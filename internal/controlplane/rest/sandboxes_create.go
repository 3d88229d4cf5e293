package rest

import (
	"net/http"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
)

// parseCreate validates a /v1 create request and applies its defaults.
func parseCreate(req api.CreateSandboxRequest) (sandboxes.Spec, error) {
	c := sandboxes.Spec{
		// VCPUs, MemoryMB and DiskMB left 0: the template's, or the
		// defaults (sandboxes.Service.Create).
		Template:   sandboxes.DefaultTemplate,
		TimeoutSec: sandboxes.DefaultTimeoutSec, OnTimeout: sandboxes.OnTimeoutKill,
		Env: map[string]string{}, Metadata: map[string]string{}, Network: networkPolicy(req.Network),
	}
	if req.Template != nil {
		c.Template = *req.Template
	}
	if !templateRefRE.MatchString(c.Template) {
		return c, invalid("template %q: must match %s (a name, or name:version)", c.Template, templateRefRE)
	}
	for _, f := range []struct {
		name     string
		v        *int
		dst      *int
		min, max int
	}{
		{"vcpus", req.Vcpus, &c.VCPUs, 1, 16},
		{"memory_mb", req.MemoryMb, &c.MemoryMB, 128, 65536},
		{"disk_mb", req.DiskMb, &c.DiskMB, 256, 524288},
		{"timeout_sec", req.TimeoutSec, &c.TimeoutSec, 1, 86400},
	} {
		if f.v == nil {
			continue
		}
		if *f.v < f.min || *f.v > f.max {
			return c, invalid("%s %d: must be %d-%d", f.name, *f.v, f.min, f.max)
		}
		*f.dst = *f.v
	}
	if req.OnTimeout != nil {
		if *req.OnTimeout != api.Kill && *req.OnTimeout != api.Pause {
			return c, invalid("on_timeout %q: must be kill or pause", *req.OnTimeout)
		}
		c.OnTimeout = string(*req.OnTimeout)
	}
	if req.Env != nil {
		if err := sandboxes.CheckEnv(*req.Env); err != nil {
			return c, err
		}
		c.Env = *req.Env
	}
	if req.Metadata != nil {
		if err := sandboxes.CheckMetadata(*req.Metadata); err != nil {
			return c, err
		}
		c.Metadata = *req.Metadata
	}
	if err := sandboxes.CheckNetwork(c.Network); err != nil {
		return c, err
	}
	if req.PublicPorts != nil {
		if len(*req.PublicPorts) > sandboxes.MaxPublicPorts {
			return c, invalid("public_ports: at most %d", sandboxes.MaxPublicPorts)
		}
		for _, p := range *req.PublicPorts {
			if p < 1 || p > 65535 {
				return c, invalid("public_ports: %d is not a port (1-65535)", p)
			}
			if p == envdPort {
				return c, invalid("public_ports: %d is envd's port and is never public", p)
			}
			c.PublicPorts = append(c.PublicPorts, int32(p))
		}
	}
	return c, nil
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := sandboxes.NewID()
	defer func() { s.audit(ctx, "sandbox", id, "create", err, nil) }()
	idem, err := idempotencyOf(w, r)
	if err != nil {
		return err
	}
	var req api.CreateSandboxRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	spec, err := parseCreate(req)
	if err != nil {
		return err
	}
	spec.Idempotency = idem
	c, err := s.sandboxes.Create(ctx, principal(ctx).TeamID, id, spec)
	if err != nil {
		return err
	}
	id = c.Sandbox.ID // a replay answers the first request's sandbox
	writeJSON(w, http.StatusCreated, sandboxJSON(c.Sandbox, c.AccessToken))
	return nil
}
