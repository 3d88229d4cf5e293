package sandboxes

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Bounds every front door applies (api/openapi.yaml documents them).
const (
	MaxCreateAttempts = 3
	MaxMetadataKeys   = 50
	MaxMetadataKey    = 64
	MaxMetadataValue  = 512
	MaxEnvVars        = 200
	MaxPublicPorts    = 20
	MaxForks          = 20
	MaxNetworkEntries = 256
)

// EnvdPort is envd's port in every guest.
const EnvdPort = 49983

// Defaults of a create.
const (
	DefaultTemplate   = "minimal"
	DefaultVCPUs      = 1
	DefaultMemoryMB   = 512
	DefaultDiskMB     = 2048
	DefaultTimeoutSec = 300
)

// OnTimeout values.
const (
	OnTimeoutKill  = "kill"
	OnTimeoutPause = "pause"
)

// errNoRoom is what a create answers when no host can take the sandbox.
var errNoRoom = errdefs.New(errdefs.ErrUnavailable, "no host with room")

// Network is a sandbox's egress policy as stored (sandboxes.network) and
// sent to its agent. Nil AllowInternet means allowed.
type Network struct {
	AllowInternet *bool     `json:"allow_internet,omitempty"`
	AllowOut      *[]string `json:"allow_out,omitempty"`
	DenyOut       *[]string `json:"deny_out,omitempty"`
}

// CheckNetwork validates a policy's CIDRs (IPv4, as the agent enforces).
// Field names in messages are the /v1 API's.
func CheckNetwork(p *Network) error {
	if p == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		list *[]string
	}{{"allow_out", p.AllowOut}, {"deny_out", p.DenyOut}} {
		if f.list == nil {
			continue
		}
		if len(*f.list) > MaxNetworkEntries {
			return errdefs.New(errdefs.ErrInvalidArgument, "network.%s: at most %d entries", f.name, MaxNetworkEntries)
		}
		for _, c := range *f.list {
			pfx, err := netip.ParsePrefix(c)
			if err != nil || !pfx.Addr().Is4() {
				return errdefs.New(errdefs.ErrInvalidArgument, "network.%s: %q is not an IPv4 CIDR (e.g. 10.0.0.0/8)", f.name, c)
			}
		}
	}
	return nil
}

// proto converts a policy for the agent; nil means the default (internet
// allowed).
func (p *Network) proto() *hostagentv1.NetworkPolicy {
	out := &hostagentv1.NetworkPolicy{AllowInternet: true}
	if p == nil {
		return out
	}
	if p.AllowInternet != nil {
		out.AllowInternet = *p.AllowInternet
	}
	if p.AllowOut != nil {
		out.AllowOut = *p.AllowOut
	}
	if p.DenyOut != nil {
		out.DenyOut = *p.DenyOut
	}
	return out
}

// StoredNetwork reads a row's policy (nil when it is the default).
func StoredNetwork(sb store.Sandbox) *Network {
	var pol Network
	if len(sb.Network) == 0 || json.Unmarshal(sb.Network, &pol) != nil || pol == (Network{}) {
		return nil
	}
	return &pol
}

// CheckEnv validates environment variables for a sandbox or a process.
func CheckEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return errdefs.New(errdefs.ErrInvalidArgument, "env: at most %d variables", MaxEnvVars)
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return errdefs.New(errdefs.ErrInvalidArgument, "env name %q: must be non-empty, without '=' or NUL", k)
		}
		if strings.ContainsRune(v, 0) {
			return errdefs.New(errdefs.ErrInvalidArgument, "env %s: value contains NUL", k)
		}
	}
	return nil
}

// CheckMetadata validates a sandbox's metadata.
func CheckMetadata(meta map[string]string) error {
	if len(meta) > MaxMetadataKeys {
		return errdefs.New(errdefs.ErrInvalidArgument, "metadata: at most %d keys", MaxMetadataKeys)
	}
	for k, v := range meta {
		if k == "" || len(k) > MaxMetadataKey {
			return errdefs.New(errdefs.ErrInvalidArgument, "metadata key %q: must be 1-%d bytes", k, MaxMetadataKey)
		}
		if len(v) > MaxMetadataValue {
			return errdefs.New(errdefs.ErrInvalidArgument, "metadata %q: value over %d bytes", k, MaxMetadataValue)
		}
	}
	return nil
}

func onTimeoutProto(v string) hostagentv1.OnTimeout {
	if v == OnTimeoutPause {
		return hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE
	}
	return hostagentv1.OnTimeout_ON_TIMEOUT_KILL
}

// Spec is a validated create with its defaults applied (the front door
// validates fields in its own words; the service trusts their bounds).
type Spec struct {
	Template    string
	VCPUs       int
	MemoryMB    int
	DiskMB      int
	TimeoutSec  int
	OnTimeout   string
	Env         map[string]string
	Metadata    map[string]string
	Network     *Network
	PublicPorts []int32
	// EndAt, when set, is an absolute deadline at which OnTimeout applies
	// (E2B's timeout); the agent's idle timeout still applies as well.
	EndAt *time.Time
	// AutoResume: a paused sandbox resumes when traffic or a call for it
	// arrives.
	AutoResume bool
	// PublicTraffic: every user port is served without credentials.
	PublicTraffic bool
	// TrafficToken asks for a token that opens the sandbox's user ports
	// (E2B's trafficAccessToken for sandboxes without public traffic).
	TrafficToken bool
	// Idempotency, when set, makes the create idempotent by its key: a
	// retry gets the first request's sandbox (idempotency.go).
	Idempotency *Idempotency
}

// Created is a sandbox a create or fork made, with the secrets shown once.
type Created struct {
	Sandbox     store.Sandbox
	AccessToken string
	// TrafficToken is set when the spec asked for one.
	TrafficToken string
}

// TemplateRef is a template resolved for a team.
type TemplateRef struct {
	// AgentName is the name on the hosts.
	AgentName string
	Builtin   bool
	// Home is where a team template's files are.
	Home *uuid.UUID
	// VCPUs and MemoryMB are a snapshot template's shape (its memory image
	// restores only into the same); 0 for images that boot any shape.
	VCPUs    int
	MemoryMB int
	// DiskMB is a built template's disk (a warm one's only size); 0 for
	// the rest.
	DiskMB int
	// Portable: a built template, copied from Home to the host that runs
	// a sandbox of it; Digest is its image's, which the copy must match.
	Portable bool
	Digest   string
	// Snapshot: the template holds a memory snapshot.
	Snapshot bool
}

// ResolveTemplate finds the template a team means by name: its own first,
// then a built-in one (a base image an online host it may use has).
func (s *Service) ResolveTemplate(ctx context.Context, team uuid.UUID, name string) (TemplateRef, error) {
	if base, v, ok := strings.Cut(name, ":"); ok {
		return s.resolveVersion(ctx, team, base, v)
	}
	t, err := s.q.GetTeamTemplate(ctx, store.GetTeamTemplateParams{TeamID: team, Name: name})
	switch {
	case err == nil:
		if t.Status != TemplateReady {
			return TemplateRef{}, errdefs.New(errdefs.ErrFailedPrecondition, "template %q is still being made", name)
		}
		ref := TemplateRef{AgentName: t.AgentName, Home: t.HostID, Snapshot: t.Snapshot}
		if t.Snapshot || t.BuildID != nil {
			ref.VCPUs, ref.MemoryMB = int(t.Vcpus), int(t.MemoryMb)
		}
		if t.BuildID != nil && t.TeamID != nil {
			b, err := s.q.GetTemplateBuild(ctx, store.GetTemplateBuildParams{ID: *t.BuildID, TeamID: *t.TeamID, TemplateName: t.Name})
			if err != nil {
				return TemplateRef{}, fmt.Errorf("look up the build of template %s: %w", name, err)
			}
			ref.DiskMB = int(b.DiskMb)
			ref.Portable, ref.Digest = b.Digest != nil, deref(b.Digest)
		}
		return ref, nil
	case !store.IsNoRows(err):
		return TemplateRef{}, fmt.Errorf("look up template %s: %w", name, err)
	}
	builtins, err := s.q.BuiltinTemplates(ctx, team)
	if err != nil {
		return TemplateRef{}, fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == name {
			return TemplateRef{AgentName: name, Builtin: true}, nil
		}
	}
	return TemplateRef{}, errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
}

// resolveVersion finds version v of the team's built template name.
func (s *Service) resolveVersion(ctx context.Context, team uuid.UUID, name, v string) (TemplateRef, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return TemplateRef{}, errdefs.New(errdefs.ErrInvalidArgument, "template %s:%s: a version is a number from 1", name, v)
	}
	b, err := s.q.ReadyTemplateVersion(ctx, store.ReadyTemplateVersionParams{TeamID: team, TemplateName: name, Version: int32(n)})
	if store.IsNoRows(err) {
		return TemplateRef{}, errdefs.New(errdefs.ErrNotFound, "template %s has no ready version %d", name, n)
	}
	if err != nil {
		return TemplateRef{}, fmt.Errorf("look up template %s:%d: %w", name, n, err)
	}
	ref := TemplateRef{AgentName: b.AgentName, Home: b.HostID, Snapshot: b.Snapshot, VCPUs: int(b.Vcpus), MemoryMB: int(b.MemoryMb), DiskMB: int(b.DiskMb),
		Portable: b.Digest != nil, Digest: deref(b.Digest)}
	if b.Snapshot {
		ref.VCPUs, ref.MemoryMB = cmp.Or(ref.VCPUs, 1), cmp.Or(ref.MemoryMB, defaultBuildMemoryMB)
	}
	return ref, nil
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

// Create places a sandbox and starts it, trying up to MaxCreateAttempts
// hosts. id names it (NewID; the caller audits under it).
func (s *Service) Create(ctx context.Context, team uuid.UUID, id string, spec Spec) (Created, error) {
	idem := spec.Idempotency
	if idem != nil {
		if c, ok, err := s.replayCreate(ctx, team, idem); ok {
			return c, err
		}
	}
	tmpl, err := s.ResolveTemplate(ctx, team, spec.Template)
	if err != nil {
		return Created{}, err
	}
	// A size the request left out (0) is the template's (a snapshot's
	// only shape, a built template's default), else the default.
	if spec.VCPUs == 0 {
		spec.VCPUs = cmp.Or(tmpl.VCPUs, DefaultVCPUs)
	}
	if spec.MemoryMB == 0 {
		spec.MemoryMB = cmp.Or(tmpl.MemoryMB, DefaultMemoryMB)
	}
	if spec.DiskMB == 0 {
		spec.DiskMB = cmp.Or(tmpl.DiskMB, DefaultDiskMB)
	}
	sreq := scheduler.Request{
		TeamID: team, VCPUs: spec.VCPUs, MemoryBytes: int64(spec.MemoryMB) << 20,
		DiskBytes: int64(spec.DiskMB) << 20, Template: tmpl.AgentName, Builtin: tmpl.Builtin, Home: tmpl.Home,
		Portable: tmpl.Portable,
	}
	meta, err := json.Marshal(nonNilMap(spec.Metadata))
	if err != nil {
		return Created{}, fmt.Errorf("encode metadata: %w", err)
	}
	netJSON := []byte("{}")
	if spec.Network != nil {
		if netJSON, err = json.Marshal(spec.Network); err != nil {
			return Created{}, fmt.Errorf("encode network policy: %w", err)
		}
	}
	ports := spec.PublicPorts
	if ports == nil {
		ports = []int32{}
	}
	var traffic string
	if spec.TrafficToken {
		traffic = RandomName(32)
	}
	// Check the team's quota, choose the hosts and reserve room on the
	// first in one transaction under the team's quota lock and the
	// placement lock: the new row is what the next create's quota and
	// reservations count.
	var ranked []scheduler.Host
	err = s.inTx(ctx, func(q *store.Queries) error {
		// The key first: a concurrent first request with it waits here
		// until this transaction ends, then replays what it recorded.
		if idem != nil {
			if err := s.claimKey(ctx, q, team, idemCreate, idem, &id, s.seal.seal(trafficAAD(id), traffic)); err != nil {
				return err
			}
		}
		if err := s.quota.Admit(ctx, q, team, quota.Sandboxes(1, int32(spec.VCPUs), int32(spec.MemoryMB), int32(spec.DiskMB))); err != nil {
			return err
		}
		if err := q.LockPlacement(ctx); err != nil {
			return fmt.Errorf("lock placement: %w", err)
		}
		hosts, err := schedulerHosts(ctx, q, team)
		if err != nil {
			return err
		}
		rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		ranked = scheduler.Rank(hosts, sreq, scheduler.Policy{}, rnd, MaxCreateAttempts)
		if len(ranked) == 0 {
			return errNoRoom
		}
		if s.hook != nil {
			s.hook()
		}
		first := ranked[0].ID
		if _, err := q.InsertSandbox(ctx, store.InsertSandboxParams{
			ID: id, TeamID: team, HostID: &first, Template: spec.Template, State: string(Starting),
			Vcpus: int32(spec.VCPUs), MemoryMb: int32(spec.MemoryMB), DiskMb: int32(spec.DiskMB),
			TimeoutSec: int32(spec.TimeoutSec), OnTimeout: spec.OnTimeout,
			Metadata: meta, Network: netJSON, PublicPorts: ports, Now: s.clk.Now(),
			EndAt: spec.EndAt, AutoResume: spec.AutoResume, PublicTraffic: spec.PublicTraffic,
			TrafficTokenHash: HashToken(traffic),
		}); err != nil {
			return fmt.Errorf("insert sandbox %s: %w", id, err)
		}
		return nil
	})
	if errors.Is(err, errKeyTaken) {
		c, ok, err := s.replayCreate(ctx, team, idem)
		if !ok {
			err = keyVanished(idem)
		}
		return c, err
	}
	if err != nil {
		return Created{}, err
	}

	// From here on the store must follow what the hosts do, whether or not
	// the client waits for the answer.
	ctx = context.WithoutCancel(ctx)
	stopLease := s.leaseSandboxes(ctx, "create sandbox "+id, []string{id})
	defer stopLease()
	s.faults.Hit(ctx, faultpoint.CPCreateRecorded)
	areq := &hostagentv1.CreateSandboxRequest{
		Id: id, Template: tmpl.AgentName, Vcpus: int32(spec.VCPUs), MemoryMb: int32(spec.MemoryMB),
		DiskMb: int32(spec.DiskMB), Env: spec.Env, Metadata: spec.Metadata,
		Network: spec.Network.proto(), TimeoutMs: int64(spec.TimeoutSec) * 1000,
		OnTimeout: onTimeoutProto(spec.OnTimeout),
		// The agent refuses to create from a snapshot template another
		// team owns: the second line behind ResolveTemplate.
		TeamId: team.String(),
	}
	var failures []string
	for i, h := range ranked {
		if i > 0 {
			if err := s.q.SetSandboxHost(ctx, store.SetSandboxHostParams{ID: id, HostID: &h.ID, Now: s.clk.Now()}); err != nil {
				err = fmt.Errorf("move sandbox %s to host %s: %w", id, h.ID, err)
				return Created{}, s.failCreateKeyed(ctx, team, id, idem, err, err)
			}
		}
		err := s.ensureTemplate(ctx, tmpl, h, team)
		var token string
		if err == nil {
			token, err = s.createOn(ctx, h.ID, areq)
		}
		if err == nil {
			s.faults.Hit(ctx, faultpoint.CPCreateStarted)
			row, err := s.markRunning(ctx, team, id, token)
			if store.IsNoRows(err) {
				// Deleted (or its host declared lost) while it started: the
				// store no longer expects it, so do not leave it running.
				dctx, cancel := detached(ctx, agentDestroyTimeout)
				defer cancel()
				_ = s.destroyOnHost(dctx, h.ID, id)
				err := errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s was deleted or lost while it started", id)
				s.recordKeyFailed(ctx, team, idemCreate, idem, err)
				return Created{}, err
			}
			if err != nil {
				return Created{}, fmt.Errorf("record sandbox %s running: %w", id, err)
			}
			return Created{Sandbox: row, AccessToken: token, TrafficToken: traffic}, nil
		}
		s.log.Warn("create sandbox on host failed", "sandbox_id", id, "host_id", h.ID, "attempt", i+1, "err", err)
		failures = append(failures, fmt.Sprintf("host %s: %v", h.ID, err))
		// The same request fails on every host: do not try the others.
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return Created{}, s.failCreateKeyed(ctx, team, id, idem, err, err)
		}
	}
	return Created{}, s.failCreateKeyed(ctx, team, id, idem, errors.New(strings.Join(failures, "; ")),
		errdefs.New(errdefs.ErrUnavailable, "no host could start the sandbox (%d tried)", len(ranked)))
}

// ensureTemplate copies a built template from its home host to h when h
// has no copy yet (its heartbeat does not list it).
func (s *Service) ensureTemplate(ctx context.Context, tmpl TemplateRef, h scheduler.Host, team uuid.UUID) error {
	if !tmpl.Portable || tmpl.Home == nil || *tmpl.Home == h.ID ||
		slices.Contains(h.Templates, tmpl.AgentName) || slices.Contains(h.SnapshotTemplates, tmpl.AgentName) {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, agentCopyTimeout)
	defer cancel()
	start := s.clk.Now()
	if err := s.copyTemplate(cctx, *tmpl.Home, h.ID, tmpl.AgentName, team, tmpl.Digest); err != nil {
		return fmt.Errorf("copy template %s to host %s: %w", tmpl.AgentName, h.ID, err)
	}
	s.log.Info("template copied", "template", tmpl.AgentName, "from", *tmpl.Home, "to", h.ID, "duration", s.clk.Now().Sub(start))
	return nil
}

// copyTemplate relays a built template from one host's ExportTemplate to
// another's ImportTemplate (until an object store holds templates).
func (s *Service) copyTemplate(ctx context.Context, from, to uuid.UUID, name string, team uuid.UUID, digest string) error {
	src, err := s.agentFor(ctx, &from)
	if err != nil {
		return err
	}
	dst, err := s.agentFor(ctx, &to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exp, err := src.ExportTemplate(ctx, connect.NewRequest(&hostagentv1.ExportTemplateRequest{Name: name, TeamId: team.String()}))
	if err != nil {
		return agentErr("export template", err)
	}
	defer exp.Close()
	imp := dst.ImportTemplate(ctx)
	first := true
	for exp.Receive() {
		msg := &hostagentv1.ImportTemplateRequest{Data: exp.Msg().GetData()}
		if first {
			msg.Name, msg.TeamId, msg.Digest = name, team.String(), digest
			first = false
		}
		if err := imp.Send(msg); err != nil {
			break // the importer's own error comes with its response
		}
	}
	if err := exp.Err(); err != nil {
		cancel()
		_, _ = imp.CloseAndReceive()
		return agentErr("export template", err)
	}
	if first {
		// An empty export still tells the importer what it was for.
		if err := imp.Send(&hostagentv1.ImportTemplateRequest{Name: name, TeamId: team.String(), Digest: digest}); err != nil {
			_, _ = imp.CloseAndReceive()
			return agentErr("import template", err)
		}
	}
	if _, err := imp.CloseAndReceive(); err != nil {
		return agentErr("import template", err)
	}
	return nil
}

// markRunning records a create or fork the host finished, waiting out a
// PostgreSQL restart. No rows: the row is no longer starting (deleted, or
// given up by the sweeper) and the sandbox must not run.
func (s *Service) markRunning(ctx context.Context, team uuid.UUID, id, token string) (store.Sandbox, error) {
	var row store.Sandbox
	tokenHash := HashToken(token)
	tries := 0
	err := s.retryStore(ctx, func(ctx context.Context) error {
		tries++
		var err error
		row, err = s.q.MarkSandboxRunning(ctx, store.MarkSandboxRunningParams{
			ID: id, AccessTokenHash: tokenHash, AccessTokenSealed: s.seal.seal(id, token), Now: s.clk.Now(),
		})
		return err
	})
	if store.IsNoRows(err) && tries > 1 {
		// An earlier try may have committed before its connection broke.
		cur, gerr := s.q.GetTeamSandbox(ctx, store.GetTeamSandboxParams{ID: id, TeamID: team})
		if gerr == nil && State(cur.State) == Running && bytes.Equal(cur.AccessTokenHash, tokenHash) {
			return cur, nil
		}
	}
	return row, err
}

// createOn asks one host to create the sandbox. A failed attempt is
// destroyed on that host (best effort): a call that timed out may still
// finish there.
func (s *Service) createOn(ctx context.Context, host uuid.UUID, req *hostagentv1.CreateSandboxRequest) (string, error) {
	ctx, cancel := detached(ctx, agentCreateTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, &host)
	if err != nil {
		return "", err
	}
	resp, err := ag.CreateSandbox(ctx, connect.NewRequest(req))
	if err != nil {
		cerr := agentErr("create sandbox "+req.Id, err)
		if !errors.Is(cerr, errdefs.ErrInvalidArgument) {
			dctx, dcancel := detached(ctx, agentDestroyTimeout)
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
func (s *Service) failCreate(ctx context.Context, id string, err error) error {
	if ferr := s.q.MarkSandboxFailed(context.WithoutCancel(ctx), store.MarkSandboxFailedParams{ID: id, Error: err.Error(), Now: s.clk.Now()}); ferr != nil {
		s.log.Error("record failed create", "sandbox_id", id, "err", ferr)
	}
	return err
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
