package wrenn

import (
	"context"
	"fmt"
	"net/url"

	"github.com/wrenn/wrenn/api"
)

// Templates builds, lists and deletes templates. Reach it as
// Client.Templates. Builds are in builds.go.
type Templates struct{ c *Client }

// List returns the built-in templates and the team's own.
func (t *Templates) List(ctx context.Context) ([]api.Template, error) {
	var out struct {
		Templates []api.Template `json:"templates"`
	}
	if err := t.c.call(ctx, "GET", "/v1/templates", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out.Templates, nil
}

// Get returns one template by name.
func (t *Templates) Get(ctx context.Context, name string) (*api.Template, error) {
	var out api.Template
	if err := t.c.call(ctx, "GET", "/v1/templates/"+seg(name), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get template %s: %w", name, err)
	}
	return &out, nil
}

// Delete removes one of the team's templates and its files on the hosts.
func (t *Templates) Delete(ctx context.Context, name string) error {
	if err := t.c.call(ctx, "DELETE", "/v1/templates/"+seg(name), nil, nil, nil); err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	return nil
}

// Hosts manages the machines that run the team's sandboxes. Reach it as
// Client.Hosts. Adding and removing hosts needs the admin or owner role.
type Hosts struct{ c *Client }

// List returns the team's hosts.
func (h *Hosts) List(ctx context.Context) ([]api.Host, error) {
	var out struct {
		Hosts []api.Host `json:"hosts"`
	}
	if err := h.c.call(ctx, "GET", "/v1/hosts", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out.Hosts, nil
}

// Get returns one host.
func (h *Hosts) Get(ctx context.Context, id string) (*api.Host, error) {
	var out api.Host
	if err := h.c.call(ctx, "GET", "/v1/hosts/"+seg(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get host %s: %w", id, err)
	}
	return &out, nil
}

// Create adds a host of the given type (api.CreateHostRequestTypeRegular
// or ...Byoc) and returns it with a one-time registration token, valid one
// hour, for `wrenn-agent --register`.
func (h *Hosts) Create(ctx context.Context, typ api.CreateHostRequestType) (*api.CreatedHost, error) {
	var out api.CreatedHost
	if err := h.c.call(ctx, "POST", "/v1/hosts", nil, api.CreateHostRequest{Type: typ}, &out); err != nil {
		return nil, fmt.Errorf("add host: %w", err)
	}
	return &out, nil
}

// RegenerateToken replaces a host's registration token; the old one stops
// working.
func (h *Hosts) RegenerateToken(ctx context.Context, id string) (*api.CreatedHost, error) {
	var out api.CreatedHost
	if err := h.c.call(ctx, "POST", "/v1/hosts/"+seg(id)+"/token", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("regenerate token of host %s: %w", id, err)
	}
	return &out, nil
}

// Delete removes a host. The API refuses while sandboxes run on it
// (a conflict error) unless force is set.
func (h *Hosts) Delete(ctx context.Context, id string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	if err := h.c.call(ctx, "DELETE", "/v1/hosts/"+seg(id), q, nil, nil); err != nil {
		return fmt.Errorf("remove host %s: %w", id, err)
	}
	return nil
}
