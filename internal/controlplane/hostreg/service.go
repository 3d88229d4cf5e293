// Package hostreg is how hosts join the cluster and stay in it: the
// cluster's certificate authority, one-time registration tokens, host
// credentials, and the HostRegistryService that agents call to register,
// heartbeat and renew. Heartbeats also reconcile the database's view of a
// host's sandboxes with what the agent reports.
package hostreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostaddr"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/rpclimit"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Limits on what an agent may send.
const (
	maxRequestBytes = 4 << 20
	maxSandboxIDs   = 50_000
	maxListItems    = 10_000
	maxString       = 256
)

// requestLimits apply before a request is decoded: the counts above are
// checked on decoded messages, too late for a few MiB of nested empty
// entries that decode to hundreds of MiB.
var requestLimits = rpclimit.Limits{
	Peer:            "host agent",
	MaxMessageBytes: maxRequestBytes,
	MaxRepeated:     3*maxSandboxIDs + 8*maxListItems, // ids, their states and versions, plus lists
}

// resolveTimeout bounds the lookup of a byoc host's name at registration.
const resolveTimeout = 5 * time.Second

// VanishGrace: a running sandbox is stopped for being absent from a
// heartbeat only if it was created longer ago than this, because the agent
// may have listed its sandboxes before a create finished.
const VanishGrace = 2 * time.Minute

// Service implements HostRegistryService.
type Service struct {
	pool *pgxpool.Pool
	q    *store.Queries
	ca   *CA
	clk  Clock
	log  *slog.Logger
	// resolver, when set, checks byoc hosts' addresses (RefusePrivateBYOC).
	resolver hostaddr.Resolver
}

// RefusePrivateBYOC makes registration refuse a byoc host whose address
// is, or resolves to, a loopback, private, link-local or other internal
// address (see internal/controlplane/hostaddr); wrenn-cp calls it unless
// WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=true. r nil is the system resolver.
// Call it before serving.
func (s *Service) RefusePrivateBYOC(r hostaddr.Resolver) {
	if r == nil {
		r = net.DefaultResolver
	}
	s.resolver = r
}

var _ hostagentv1connect.HostRegistryServiceHandler = (*Service)(nil)

// New returns the registry service. clk and log may be nil.
func New(pool *pgxpool.Pool, ca *CA, clk Clock, log *slog.Logger) *Service {
	if clk == nil {
		clk = systemClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{pool: pool, q: store.New(pool), ca: ca, clk: clk, log: log}
}

// Handler returns the path to mount the service at and its handler
// (rest.Deps.RegistryPath and Registry).
func (s *Service) Handler() (string, http.Handler) {
	return hostagentv1connect.NewHostRegistryServiceHandler(s, requestLimits.HandlerOptions()...)
}

var errBadToken = errdefs.New(errdefs.ErrUnauthenticated, "registration token is invalid, expired or already used")

// Register trades a registration token and a CSR for the host's identity.
func (s *Service) Register(ctx context.Context, req *connect.Request[hostagentv1.RegisterRequest]) (*connect.Response[hostagentv1.RegisterResponse], error) {
	m := req.Msg
	// A token may carry the CA's fingerprint after a dot (for the agent to
	// pin; see internal/capin); only the secret before it is ours to check.
	// Agents send the secret alone, older ones the whole string.
	secret, _, err := capin.SplitToken(m.RegistrationToken)
	if err != nil || !wellFormed(secret, RegistrationTokenPrefix, 16) {
		return nil, s.fail(errBadToken)
	}
	if err := checkAddress(m.Address); err != nil {
		return nil, s.fail(err)
	}
	if err := checkSpecs(m.Specs); err != nil {
		return nil, s.fail(err)
	}
	csr, err := ParseCSR(m.CsrPem)
	if err != nil {
		return nil, s.fail(err)
	}
	now := s.clk.Now()
	tokHash := HashSecret(secret)
	host, err := s.q.GetHostByRegistrationToken(ctx, store.GetHostByRegistrationTokenParams{RegistrationTokenHash: tokHash, Now: now})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.fail(errBadToken)
	}
	if err != nil {
		return nil, s.fail(fmt.Errorf("look up registration token: %w", err))
	}
	if host.Type == "byoc" && s.resolver != nil {
		// A slow resolver must not hold the registration open.
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		err := hostaddr.Check(rctx, s.resolver, m.Address)
		cancel()
		if err != nil {
			s.log.Warn("byoc host registration refused: internal address", "host_id", host.ID, "address", m.Address)
			return nil, s.fail(err)
		}
	}
	certPEM, certExpires, err := s.ca.SignHost(csr, host.ID, m.Address, now)
	if err != nil {
		return nil, s.fail(err)
	}
	cred, credHash := NewCredential()
	credExpires := now.Add(CredentialTTL)
	sp := m.Specs
	_, err = s.q.RegisterHost(ctx, store.RegisterHostParams{
		ID:                    host.ID,
		RegistrationTokenHash: tokHash,
		Now:                   now,
		Address:               m.Address,
		Arch:                  sp.GetArch(),
		Cpus:                  sp.GetCpus(),
		MemoryBytes:           sp.GetMemoryBytes(),
		DiskBytes:             sp.GetDiskBytes(),
		Vmm:                   sp.GetVmm(),
		Accelerator:           sp.GetAccelerator(),
		KernelVersion:         sp.GetKernelVersion(),
		AgentVersion:          sp.GetAgentVersion(),
		Images:                nonNil(sp.GetImages()),
		CredentialHash:        credHash,
		CredentialExpiresAt:   credExpires,
		CertificateExpiresAt:  certExpires,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		// Another registration with the same token won the race.
		return nil, s.fail(errBadToken)
	}
	if err != nil {
		return nil, s.fail(fmt.Errorf("register host %s: %w", host.ID, err))
	}
	s.log.Info("host registered", "host_id", host.ID, "address", m.Address, "previous_status", host.Status,
		"arch", sp.GetArch(), "cpus", sp.GetCpus(), "vmm", sp.GetVmm(), "agent_version", sp.GetAgentVersion())
	return connect.NewResponse(&hostagentv1.RegisterResponse{
		HostId:                   host.ID.String(),
		HostToken:                cred,
		HostTokenExpiresAtUnixMs: credExpires.UnixMilli(),
		CertificatePem:           certPEM,
		CaPem:                    s.ca.CertPEM(),
	}), nil
}

// authHost finds the host whose credential the request carries.
func (s *Service) authHost(ctx context.Context, h http.Header, now time.Time) (store.GetHostByCredentialRow, []byte, error) {
	var none store.GetHostByCredentialRow
	cred, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok || !wellFormed(cred, CredentialPrefix, 32) {
		return none, nil, errdefs.New(errdefs.ErrUnauthenticated, "want Authorization: Bearer <host credential>")
	}
	hash := HashSecret(cred)
	host, err := s.q.GetHostByCredential(ctx, hash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return none, nil, errdefs.New(errdefs.ErrUnauthenticated, "unknown host credential")
	case err != nil:
		return none, nil, fmt.Errorf("look up host credential: %w", err)
	case host.Status == "deleted":
		return none, nil, errHostDeleted
	case host.CredentialExpiresAt == nil || !now.Before(*host.CredentialExpiresAt):
		return none, nil, errdefs.New(errdefs.ErrUnauthenticated, "host credential expired; register the host again with a new token")
	}
	return host, hash, nil
}

var errHostDeleted = errdefs.New(errdefs.ErrNotFound, "host deleted")

// Heartbeat records the host's liveness, specs, usage and templates, brings
// an unreachable host back online, and reconciles its sandboxes.
func (s *Service) Heartbeat(ctx context.Context, req *connect.Request[hostagentv1.HeartbeatRequest]) (*connect.Response[hostagentv1.HeartbeatResponse], error) {
	now := s.clk.Now()
	host, credHash, err := s.authHost(ctx, req.Header(), now)
	if err != nil {
		return nil, s.fail(err)
	}
	m := req.Msg
	if err := checkHeartbeat(m); err != nil {
		return nil, s.fail(err)
	}
	p := store.HeartbeatHostParams{
		ID: host.ID, CredentialHash: credHash, Now: now,
		// Specs the agent left out keep their values.
		Arch: host.Arch, Cpus: host.Cpus, MemoryBytes: host.MemoryBytes, DiskBytes: host.DiskBytes,
		Vmm: host.Vmm, Accelerator: host.Accelerator, KernelVersion: host.KernelVersion,
		AgentVersion: host.AgentVersion, Images: nonNil(host.Images),
		Templates: []string{}, SnapshotTemplates: []string{},
	}
	if sp := m.Specs; sp != nil {
		p.Arch, p.Cpus, p.MemoryBytes, p.DiskBytes = sp.Arch, sp.Cpus, sp.MemoryBytes, sp.DiskBytes
		p.Vmm, p.Accelerator, p.KernelVersion, p.AgentVersion = sp.Vmm, sp.Accelerator, sp.KernelVersion, sp.AgentVersion
		p.Images = nonNil(sp.Images)
	}
	if u := m.Usage; u != nil {
		p.ReservedVcpus, p.ReservedMemoryBytes, p.ReservedDiskBytes = u.ReservedVcpus, u.ReservedMemoryBytes, u.ReservedDiskBytes
		p.MemoryAvailableBytes, p.DiskAvailableBytes, p.Load1 = u.MemoryAvailableBytes, u.DiskAvailableBytes, u.Load1
		p.GuestMemoryBytes, p.GuestMemoryAvailableBytes = u.GuestMemoryBytes, u.GuestMemoryAvailableBytes
		p.SandboxDiskUsedBytes = u.SandboxDiskUsedBytes
	}
	for _, t := range m.Templates {
		p.Templates = append(p.Templates, t.Name)
		if t.Snapshot {
			p.SnapshotTemplates = append(p.SnapshotTemplates, t.Name)
		}
	}
	// Images are built-ins every team may use; a snapshot template is one
	// team's, whatever an (older) agent put in its images.
	p.Images = slices.DeleteFunc(p.Images, func(img string) bool { return slices.Contains(p.SnapshotTemplates, img) })
	present := nonNil(m.SandboxIds)

	var (
		hb      store.HeartbeatHostRow
		rec     Reconciled
		unknown []string
		orphans []string
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		var err error
		hb, err = q.HeartbeatHost(ctx, p)
		if errors.Is(err, pgx.ErrNoRows) {
			// Deleted or re-credentialed since authHost.
			return errHostDeleted
		}
		if err != nil {
			return fmt.Errorf("record heartbeat: %w", err)
		}
		rec, err = reconcile(ctx, q, host.ID, present, m.SandboxStates, m.SandboxVersions, now)
		if err != nil {
			return err
		}
		orphans, err = q.OrphanedHostSandboxes(ctx, store.OrphanedHostSandboxesParams{
			HostID: host.ID, Ids: present, LiveIds: liveIDs(present, m.SandboxStates), Before: now.Add(-OrphanGrace),
		})
		if err != nil {
			return fmt.Errorf("list orphaned sandboxes of host %s: %w", host.ID, err)
		}
		known, err := q.HeldHostSandboxes(ctx, store.HeldHostSandboxesParams{HostID: host.ID, Ids: present})
		if err != nil {
			return fmt.Errorf("list known sandboxes of host %s: %w", host.ID, err)
		}
		isKnown := make(map[string]bool, len(known))
		for _, id := range known {
			isKnown[id] = true
		}
		for _, id := range orphans {
			isKnown[id] = true // told to destroy, not unknown
		}
		for _, id := range present {
			if !isKnown[id] {
				unknown = append(unknown, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(err)
	}
	log := s.log.With("host_id", host.ID)
	if hb.PreviousStatus == "unreachable" {
		log.Info("host back online")
	}
	if len(rec.Resumed)+len(rec.Stopped)+len(rec.Vanished) > 0 {
		log.Info("sandboxes reconciled", "missing_to_running", rec.Resumed, "missing_to_stopped", rec.Stopped, "vanished_to_stopped", rec.Vanished)
	}
	for _, d := range rec.Repaired {
		// An event that never arrived (or an older agent's change): worth
		// seeing, since events should have carried it already.
		log.Info("sandbox state repaired from heartbeat", "sandbox_id", d.ID, "from", d.From, "to", d.To, "version", d.Version)
	}
	if len(unknown) > 0 {
		// Sandboxes the database has no record of on this host are never
		// destroyed from here: a database restore or a bug on our side
		// must not cost users their sandboxes. An operator decides.
		// (Every sandbox's row is written before its host makes it, so
		// nothing else leaves a sandbox without a record.)
		log.Warn("host holds sandboxes the database does not place on it", "sandbox_ids", unknown)
	}
	if len(orphans) > 0 {
		log.Info("telling the host to destroy sandboxes whose records say they are gone", "sandbox_ids", orphans)
	}
	return connect.NewResponse(&hostagentv1.HeartbeatResponse{
		RenewAfterUnixMs:  renewAfter(hb.CertificateExpiresAt, hb.CredentialExpiresAt, now).UnixMilli(),
		DestroySandboxIds: orphans,
	}), nil
}

// Reconciled says what a heartbeat changed in a host's sandboxes.
type Reconciled struct {
	// Resumed were missing and the host holds them again, in the state it
	// reports (running unless it says otherwise).
	Resumed []string
	// Stopped were missing and the host no longer holds them.
	Stopped []string
	// Vanished were running, paused or hibernated but the host does not
	// hold them: stopped.
	Vanished []string
	// Repaired are the sandboxes whose state the heartbeat corrected: the
	// host reported a newer version (a lost event).
	Repaired []Repair
}

// Repair is one state a heartbeat corrected.
type Repair struct {
	ID       string
	From, To sandboxes.State
	Version  int64
}

// reconcile brings the store's view of a host's sandboxes in line with a
// heartbeat: missing ones come back or stop, newer reported states win
// over older ones (the same version rule as events), and sandboxes the
// host no longer holds stop.
func reconcile(ctx context.Context, q *store.Queries, hostID uuid.UUID, present []string,
	reported map[string]hostagentv1.SandboxState, versions map[string]int64, now time.Time) (Reconciled, error) {
	var r Reconciled
	states := dbStates(present, reported)
	rows, err := q.ReconcileMissingSandboxes(ctx, store.ReconcileMissingSandboxesParams{HostID: hostID, Present: present, States: states, Now: now})
	if err != nil {
		return r, fmt.Errorf("reconcile missing sandboxes of host %s: %w", hostID, err)
	}
	for _, row := range rows {
		if sandboxes.State(row.State) != sandboxes.Stopped {
			r.Resumed = append(r.Resumed, row.ID)
		} else {
			r.Stopped = append(r.Stopped, row.ID)
		}
	}
	// Only sandboxes whose version the agent reports (older agents send
	// none, and their states then repair only missing sandboxes).
	p := store.ApplyHostSandboxStatesParams{HostID: hostID, Now: now}
	for i, id := range present {
		// Starting is an operation under way (see ReportSandboxEvents).
		if v := versions[id]; v > 0 && reported[id] != hostagentv1.SandboxState_SANDBOX_STATE_STARTING {
			p.Ids, p.States, p.Versions = append(p.Ids, id), append(p.States, states[i]), append(p.Versions, v)
		}
	}
	if len(p.Ids) > 0 {
		fixed, err := q.ApplyHostSandboxStates(ctx, p)
		if err != nil {
			return r, fmt.Errorf("apply reported states of host %s: %w", hostID, err)
		}
		for _, f := range fixed {
			if f.PreviousState != f.State {
				r.Repaired = append(r.Repaired, Repair{ID: f.ID, From: sandboxes.State(f.PreviousState), To: sandboxes.State(f.State), Version: versions[f.ID]})
			}
		}
	}
	r.Vanished, err = q.StopVanishedHostSandboxes(ctx, store.StopVanishedHostSandboxesParams{
		HostID: hostID, Present: present, Now: now, CreatedBefore: now.Add(-VanishGrace),
	})
	if err != nil {
		return r, fmt.Errorf("stop vanished sandboxes of host %s: %w", hostID, err)
	}
	return r, nil
}

// OrphanGrace is how long a sandbox's row must have been stopped (or in
// error) before a heartbeat tells its host to destroy what it still
// holds of it: the operation that stopped it destroys it itself, and is
// not raced.
const OrphanGrace = 10 * time.Second

// liveIDs are the present sandboxes the agent reports as alive (anything
// but stopped or error).
func liveIDs(present []string, reported map[string]hostagentv1.SandboxState) []string {
	out := make([]string, 0, len(present))
	for _, id := range present {
		switch reported[id] {
		case hostagentv1.SandboxState_SANDBOX_STATE_STOPPED, hostagentv1.SandboxState_SANDBOX_STATE_ERROR:
		default:
			out = append(out, id)
		}
	}
	return out
}

// dbStates gives, for each present sandbox, the state the database should
// record when it comes back from missing: what the agent reports, or
// running when the agent does not say (an older agent).
func dbStates(present []string, reported map[string]hostagentv1.SandboxState) []string {
	out := make([]string, len(present))
	for i, id := range present {
		// Starting here means it was running before it went missing;
		// FromAgent maps it (and anything unknown) to running.
		out[i] = string(sandboxes.FromAgent(reported[id]))
	}
	return out
}

// renewAfter is when two thirds of the certificate's or the credential's
// lifetime have passed, whichever comes first.
func renewAfter(certExpires, credExpires *time.Time, now time.Time) time.Time {
	if certExpires == nil || credExpires == nil {
		return now
	}
	return minTime(certExpires.Add(-ServerCertTTL/3), credExpires.Add(-CredentialTTL/3))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Renew issues a new certificate for the CSR and a new credential; the
// credential the request came with stops working.
func (s *Service) Renew(ctx context.Context, req *connect.Request[hostagentv1.RenewRequest]) (*connect.Response[hostagentv1.RenewResponse], error) {
	now := s.clk.Now()
	host, credHash, err := s.authHost(ctx, req.Header(), now)
	if err != nil {
		return nil, s.fail(err)
	}
	csr, err := ParseCSR(req.Msg.CsrPem)
	if err != nil {
		return nil, s.fail(err)
	}
	certPEM, certExpires, err := s.ca.SignHost(csr, host.ID, host.Address, now)
	if err != nil {
		return nil, s.fail(err)
	}
	cred, newHash := NewCredential()
	credExpires := now.Add(CredentialTTL)
	_, err = s.q.RenewHostCredential(ctx, store.RenewHostCredentialParams{
		ID: host.ID, CredentialHash: credHash, NewCredentialHash: newHash,
		CredentialExpiresAt: credExpires, CertificateExpiresAt: certExpires,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		// A concurrent Renew rotated it, or the host was deleted.
		return nil, s.fail(errdefs.New(errdefs.ErrUnauthenticated, "host credential no longer valid"))
	}
	if err != nil {
		return nil, s.fail(fmt.Errorf("renew credential of host %s: %w", host.ID, err))
	}
	s.log.Info("host credential renewed", "host_id", host.ID, "certificate_expires_at", certExpires)
	return connect.NewResponse(&hostagentv1.RenewResponse{
		HostToken:                cred,
		HostTokenExpiresAtUnixMs: credExpires.UnixMilli(),
		CertificatePem:           certPEM,
		CaPem:                    s.ca.CertPEM(),
	}), nil
}

// fail converts err for the agent. Internal errors are logged here and
// reach the agent without their text.
func (s *Service) fail(err error) error {
	if errdefs.ConnectCode(err) == connect.CodeInternal {
		s.log.Error("host registry request failed", "err", err)
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	return errdefs.ToConnect(err)
}

// checkAddress accepts host:port that the control plane can dial: a port
// in 1-65535 and a host that is an IP other than 0.0.0.0/:: or a DNS name.
func checkAddress(addr string) error {
	bad := func(why string) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "address %q: %s", addr, why)
	}
	if addr == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "address is required (host:port the control plane dials)")
	}
	if len(addr) > maxString {
		return bad("too long")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad("want host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return bad("port: want 1-65535")
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return bad("the control plane cannot dial this IP")
		}
		return nil
	}
	if !validDNSName(host) {
		return bad("host: want an IP address or a DNS name")
	}
	return nil
}

func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

func checkSpecs(sp *hostagentv1.HostSpecs) error {
	if sp == nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "specs are required")
	}
	if sp.Cpus < 0 || sp.MemoryBytes < 0 || sp.DiskBytes < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "specs: cpus, memory_bytes and disk_bytes must not be negative")
	}
	for name, v := range map[string]string{"arch": sp.Arch, "vmm": sp.Vmm, "accelerator": sp.Accelerator,
		"kernel_version": sp.KernelVersion, "agent_version": sp.AgentVersion} {
		if len(v) > maxString {
			return errdefs.New(errdefs.ErrInvalidArgument, "specs.%s: over %d bytes", name, maxString)
		}
	}
	return checkNames("specs.images", sp.Images, maxListItems)
}

func checkHeartbeat(m *hostagentv1.HeartbeatRequest) error {
	if m.Specs != nil {
		if err := checkSpecs(m.Specs); err != nil {
			return err
		}
	}
	if len(m.Templates) > maxListItems {
		return errdefs.New(errdefs.ErrInvalidArgument, "templates: over %d", maxListItems)
	}
	for _, t := range m.Templates {
		if t.GetName() == "" || len(t.GetName()) > maxString {
			return errdefs.New(errdefs.ErrInvalidArgument, "templates: a name is empty or over %d bytes", maxString)
		}
	}
	if len(m.SandboxStates) > maxSandboxIDs || len(m.SandboxVersions) > maxSandboxIDs {
		return errdefs.New(errdefs.ErrInvalidArgument, "sandbox_states, sandbox_versions: over %d entries", maxSandboxIDs)
	}
	return checkNames("sandbox_ids", m.SandboxIds, maxSandboxIDs)
}

func checkNames(field string, names []string, max int) error {
	if len(names) > max {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s: over %d entries", field, max)
	}
	for _, n := range names {
		if n == "" || len(n) > maxString {
			return errdefs.New(errdefs.ErrInvalidArgument, "%s: an entry is empty or over %d bytes", field, maxString)
		}
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
