package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// errNoRoom is what a create answers when no host can take the sandbox.
var errNoRoom = errdefs.New(errdefs.ErrUnavailable, "no host with room")

// createSpec is a validated create request with its defaults applied.
type createSpec struct {
	template    string
	vcpus       int
	memoryMB    int
	diskMB      int
	timeoutSec  int
	onTimeout   string
	env         map[string]string
	metadata    map[string]string
	network     *api.NetworkPolicy
	publicPorts []int32
}

func parseCreate(req api.CreateSandboxRequest) (createSpec, error) {
	c := createSpec{
		template: defaultTemplate, vcpus: defaultVCPUs, memoryMB: defaultMemoryMB,
		diskMB: defaultDiskMB, timeoutSec: defaultTimeoutSec, onTimeout: string(api.Kill),
		env: map[string]string{}, metadata: map[string]string{}, network: req.Network,
	}
	if req.Template != nil {
		c.template = *req.Template
	}
	if !templateNameRE.MatchString(c.template) {
		return c, invalid("template %q: must match %s", c.template, templateNameRE)
	}
	for _, f := range []struct {
		name     string
		v        *int
		dst      *int
		min, max int
	}{
		{"vcpus", req.Vcpus, &c.vcpus, 1, 16},
		{"memory_mb", req.MemoryMb, &c.memoryMB, 128, 65536},
		{"disk_mb", req.DiskMb, &c.diskMB, 256, 524288},
		{"timeout_sec", req.TimeoutSec, &c.timeoutSec, 1, 86400},
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
		c.onTimeout = string(*req.OnTimeout)
	}
	if req.Env != nil {
		if err := checkEnv(*req.Env); err != nil {
			return c, err
		}
		c.env = *req.Env
	}
	if req.Metadata != nil {
		if len(*req.Metadata) > maxMetadataKeys {
			return c, invalid("metadata: at most %d keys", maxMetadataKeys)
		}
		for k, v := range *req.Metadata {
			if k == "" || len(k) > maxMetadataKey {
				return c, invalid("metadata key %q: must be 1-%d bytes", k, maxMetadataKey)
			}
			if len(v) > maxMetadataValue {
				return c, invalid("metadata %q: value over %d bytes", k, maxMetadataValue)
			}
		}
		c.metadata = *req.Metadata
	}
	if err := checkNetwork(req.Network); err != nil {
		return c, err
	}
	if req.PublicPorts != nil {
		if len(*req.PublicPorts) > maxPublicPorts {
			return c, invalid("public_ports: at most %d", maxPublicPorts)
		}
		for _, p := range *req.PublicPorts {
			if p < 1 || p > 65535 {
				return c, invalid("public_ports: %d is not a port (1-65535)", p)
			}
			if p == envdPort {
				return c, invalid("public_ports: %d is envd's port and is never public", p)
			}
			c.publicPorts = append(c.publicPorts, int32(p))
		}
	}
	return c, nil
}

// checkEnv validates environment variables for a sandbox or a process.
func checkEnv(env map[string]string) error {
	if len(env) > maxEnvVars {
		return invalid("env: at most %d variables", maxEnvVars)
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid("env name %q: must be non-empty, without '=' or NUL", k)
		}
		if strings.ContainsRune(v, 0) {
			return invalid("env %s: value contains NUL", k)
		}
	}
	return nil
}

// templateRef is a template resolved for a team.
type templateRef struct {
	// agentName is the name on the hosts.
	agentName string
	builtin   bool
	// home is where a team template's files are.
	home *uuid.UUID
}

// resolveTemplate finds the template a team means by name: its own first,
// then a built-in one (a base image an online host it may use has).
func (s *Server) resolveTemplate(ctx context.Context, team uuid.UUID, name string) (templateRef, error) {
	t, err := s.q.GetTeamTemplate(ctx, store.GetTeamTemplateParams{TeamID: team, Name: name})
	switch {
	case err == nil:
		return templateRef{agentName: t.AgentName, home: t.HostID}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return templateRef{}, fmt.Errorf("look up template %s: %w", name, err)
	}
	builtins, err := s.q.BuiltinTemplates(ctx, team)
	if err != nil {
		return templateRef{}, fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == name {
			return templateRef{agentName: name, builtin: true}, nil
		}
	}
	return templateRef{}, notFound("template", name)
}

// schedulerHosts loads the hosts a team may use with the store's view of
// what is reserved on each.
func schedulerHosts(ctx context.Context, q *store.Queries, team uuid.UUID) ([]scheduler.Host, error) {
	rows, err := q.SchedulableHosts(ctx, team)
	if err != nil {
		return nil, fmt.Errorf("load hosts: %w", err)
	}
	out := make([]scheduler.Host, len(rows))
	for i, h := range rows {
		out[i] = scheduler.Host{
			ID: h.ID, TeamID: h.TeamID, Type: h.Type, Status: h.Status,
			CPUs: int(h.Cpus), MemoryBytes: h.MemoryBytes, MemoryAvailableBytes: h.MemoryAvailableBytes,
			Load1: h.Load1, ReservedVCPUs: int(h.ReservedVcpus), ReservedMemoryBytes: h.ReservedMemoryMb << 20,
			Images: h.Images, Templates: h.Templates, SnapshotTemplates: h.SnapshotTemplates,
			ReservedDiskBytes: h.ReservedDiskMb << 20, DiskAvailableBytes: h.DiskAvailableBytes,
			SandboxDiskUsedBytes: h.SandboxDiskUsedBytes, GuestMemoryBytes: h.GuestMemoryBytes,
			GuestMemoryAvailableBytes: h.GuestMemoryAvailableBytes,
		}
	}
	return out, nil
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	p := principal(ctx)
	id := newSandboxID()
	defer func() { s.audit(ctx, "sandbox", id, "create", err, nil) }()

	var req api.CreateSandboxRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	spec, err := parseCreate(req)
	if err != nil {
		return err
	}
	tmpl, err := s.resolveTemplate(ctx, p.TeamID, spec.template)
	if err != nil {
		return err
	}
	sreq := scheduler.Request{
		TeamID: p.TeamID, VCPUs: spec.vcpus, MemoryBytes: int64(spec.memoryMB) << 20,
		DiskBytes: int64(spec.diskMB) << 20, Template: tmpl.agentName, Builtin: tmpl.builtin, Home: tmpl.home,
	}
	meta, _ := json.Marshal(spec.metadata)
	netJSON := []byte("{}")
	if spec.network != nil {
		netJSON, _ = json.Marshal(spec.network)
	}
	if spec.publicPorts == nil {
		spec.publicPorts = []int32{}
	}
	// Check the team's quota, choose the hosts and reserve room on the
	// first in one transaction under the team's quota lock and the
	// placement lock: the new row is what the next create's quota and
	// reservations count.
	var ranked []scheduler.Host
	err = s.inTx(ctx, func(q *store.Queries) error {
		if err := s.quota().Admit(ctx, q, p.TeamID, quota.Sandboxes(1, int32(spec.vcpus), int32(spec.memoryMB), int32(spec.diskMB))); err != nil {
			return err
		}
		if err := q.LockPlacement(ctx); err != nil {
			return fmt.Errorf("lock placement: %w", err)
		}
		hosts, err := schedulerHosts(ctx, q, p.TeamID)
		if err != nil {
			return err
		}
		rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		ranked = scheduler.Rank(hosts, sreq, scheduler.Policy{}, rnd, maxCreateAttempts)
		if len(ranked) == 0 {
			return errNoRoom
		}
		if s.placementHook != nil {
			s.placementHook()
		}
		first := ranked[0].ID
		if _, err := q.InsertSandbox(ctx, store.InsertSandboxParams{
			ID: id, TeamID: p.TeamID, HostID: &first, Template: spec.template, State: stStarting,
			Vcpus: int32(spec.vcpus), MemoryMb: int32(spec.memoryMB), DiskMb: int32(spec.diskMB),
			TimeoutSec: int32(spec.timeoutSec), OnTimeout: spec.onTimeout,
			Metadata: meta, Network: netJSON, PublicPorts: spec.publicPorts, Now: s.clk.Now(),
		}); err != nil {
			return fmt.Errorf("insert sandbox %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// From here on the store must follow what the hosts do, whether or not
	// the client waits for the answer.
	ctx = context.WithoutCancel(ctx)
	areq := &hostagentv1.CreateSandboxRequest{
		Id: id, Template: tmpl.agentName, Vcpus: int32(spec.vcpus), MemoryMb: int32(spec.memoryMB),
		DiskMb: int32(spec.diskMB), Env: spec.env, Metadata: spec.metadata,
		Network: networkProto(spec.network), TimeoutMs: int64(spec.timeoutSec) * 1000,
		OnTimeout: onTimeoutProto(spec.onTimeout),
		// The agent refuses to create from a snapshot template another
		// team owns: the second line behind resolveTemplate.
		TeamId: p.TeamID.String(),
	}
	var failures []string
	for i, h := range ranked {
		if i > 0 {
			if err := s.q.SetSandboxHost(ctx, store.SetSandboxHostParams{ID: id, HostID: &h.ID, Now: s.clk.Now()}); err != nil {
				return s.failCreate(ctx, id, fmt.Errorf("move sandbox %s to host %s: %w", id, h.ID, err))
			}
		}
		token, err := s.createOn(r, h.ID, areq)
		if err == nil {
			row, err := s.q.MarkSandboxRunning(ctx, store.MarkSandboxRunningParams{ID: id, AccessTokenHash: hashToken(token), Now: s.clk.Now()})
			if errors.Is(err, pgx.ErrNoRows) {
				// Deleted (or its host declared lost) while it started: the
				// store no longer expects it, so do not leave it running.
				dctx, cancel := detached(r, agentDestroyTimeout)
				defer cancel()
				_ = s.destroyOnHost(dctx, h.ID, id)
				return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s was deleted or lost while it started", id)
			}
			if err != nil {
				return fmt.Errorf("record sandbox %s running: %w", id, err)
			}
			writeJSON(w, http.StatusCreated, sandboxJSON(row, token))
			return nil
		}
		s.log.Warn("create sandbox on host failed", "sandbox_id", id, "host_id", h.ID, "attempt", i+1, "err", err)
		failures = append(failures, fmt.Sprintf("host %s: %v", h.ID, err))
		// The same request fails on every host: do not try the others.
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return s.failCreate(ctx, id, err)
		}
	}
	s.failCreate(ctx, id, errors.New(strings.Join(failures, "; ")))
	return errdefs.New(errdefs.ErrUnavailable, "no host could start the sandbox (%d tried)", len(ranked))
}

// createOn asks one host to create the sandbox. A failed attempt is
// destroyed on that host (best effort): a call that timed out may still
// finish there.
func (s *Server) createOn(r *http.Request, host uuid.UUID, req *hostagentv1.CreateSandboxRequest) (string, error) {
	ctx, cancel := detached(r, agentCreateTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, &host)
	if err != nil {
		return "", err
	}
	resp, err := ag.CreateSandbox(ctx, connect.NewRequest(req))
	if err != nil {
		cerr := agentErr("create sandbox "+req.Id, err)
		if !errors.Is(cerr, errdefs.ErrInvalidArgument) {
			dctx, dcancel := detached(r, agentDestroyTimeout)
			defer dcancel()
			if derr := s.destroyOnHost(dctx, host, req.Id); derr != nil {
				s.log.Warn("clean up failed create", "sandbox_id", req.Id, "host_id", host, "err", derr)
			}
		}
		return "", cerr
	}
	return resp.Msg.GetSandbox().GetAccessToken(), nil
}

// failCreate records a create that will not finish and returns err.
func (s *Server) failCreate(ctx context.Context, id string, err error) error {
	if ferr := s.q.MarkSandboxFailed(context.WithoutCancel(ctx), store.MarkSandboxFailedParams{ID: id, Error: err.Error(), Now: s.clk.Now()}); ferr != nil {
		s.log.Error("record failed create", "sandbox_id", id, "err", ferr)
	}
	return err
}
