package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// ErrRevoked is returned by Heartbeater.Run once the control plane has
// said the host no longer exists (or may no longer report): the
// credentials are deleted and the agent must stop serving.
var ErrRevoked = errors.New("host registration revoked by the control plane")

// Clock tells the time; tests inject one to pass renewal deadlines.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// StatusSource reads the host for a heartbeat (*hostinfo.Collector).
type StatusSource interface {
	Collect(ctx context.Context) (hostinfo.Status, error)
}

// HeartbeatConfig wires a Heartbeater.
type HeartbeatConfig struct {
	Client   hostagentv1connect.HostRegistryServiceClient
	Store    *Store
	Identity *Identity
	Status   StatusSource
	// Interval between heartbeats; 30 s when zero.
	Interval time.Duration
	// Clock decides when renewal is due; the system clock when nil.
	Clock  Clock
	Logger *slog.Logger
	// OnRevoked runs once, after the credentials are deleted, when the
	// control plane has deleted the host: it stops the RPC server.
	OnRevoked func(reason error)
	// Destroy destroys a sandbox the control plane's records say is gone
	// (HeartbeatResponse.destroy_sandbox_ids); nil: such answers are
	// only logged.
	Destroy func(ctx context.Context, id string) error
}

// maxDestroyPerBeat bounds the sandboxes one heartbeat answer may have
// destroyed (the rest come again in the next answer).
const maxDestroyPerBeat = 64

// Heartbeater reports the host to the control plane and renews its
// credentials when the control plane says they are due.
type Heartbeater struct {
	cfg HeartbeatConfig
}

// NewHeartbeater returns a Heartbeater.
func NewHeartbeater(cfg HeartbeatConfig) *Heartbeater {
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnRevoked == nil {
		cfg.OnRevoked = func(error) {}
	}
	return &Heartbeater{cfg: cfg}
}

// Run heartbeats now and then every interval until ctx ends (returning
// nil) or the control plane revokes the host (returning ErrRevoked).
// Other failures are logged and retried on the next tick.
func (h *Heartbeater) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		err := h.Beat(ctx)
		switch {
		case errors.Is(err, ErrRevoked):
			return err
		case err != nil && ctx.Err() == nil:
			h.cfg.Logger.Warn("heartbeat failed; retrying on the next tick", "err", err, "interval", h.cfg.Interval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Beat sends one heartbeat and renews the credentials if they are due.
func (h *Heartbeater) Beat(ctx context.Context) error {
	creds, ok := h.cfg.Identity.Credentials()
	if !ok {
		return errdefs.New(errdefs.ErrFailedPrecondition, "no host credentials")
	}
	// Bounded, so a hung control plane cannot stop the loop; long enough
	// for the status to wait out a sandbox lock held by a boot.
	ctx, cancel := context.WithTimeout(ctx, max(h.cfg.Interval, requestTimeout))
	defer cancel()
	st, err := h.cfg.Status.Collect(ctx)
	if err != nil {
		return fmt.Errorf("read host status: %w", err)
	}
	req := connect.NewRequest(&hostagentv1.HeartbeatRequest{
		Specs: st.Specs, Usage: st.Usage, Templates: st.Templates, SandboxIds: st.SandboxIDs,
		SandboxStates: st.SandboxStates, SandboxVersions: st.SandboxVersions,
	})
	setBearer(req.Header(), creds.Token)
	res, err := h.cfg.Client.Heartbeat(ctx, req)
	if err != nil {
		switch connect.CodeOf(err) {
		case connect.CodeNotFound, connect.CodePermissionDenied:
			return h.revoke(err)
		case connect.CodeUnauthenticated:
			return fmt.Errorf("heartbeat: the control plane rejected the host token (expired? register again with --register): %w", err)
		}
		return fmt.Errorf("heartbeat: %w", err)
	}
	h.destroyOrphans(ctx, res.Msg.GetDestroySandboxIds())
	if due := res.Msg.GetRenewAfterUnixMs(); due > 0 && !h.cfg.Clock.Now().Before(time.UnixMilli(due)) {
		if err := h.renew(ctx, creds); err != nil {
			return err
		}
	}
	return nil
}

// destroyOrphans destroys the sandboxes the control plane says are gone:
// their creates or forks were given up, or they were deleted while this
// host could not be told. A failure is logged; the next heartbeat's
// answer names them again.
func (h *Heartbeater) destroyOrphans(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	if len(ids) > maxDestroyPerBeat {
		ids = ids[:maxDestroyPerBeat]
	}
	log := h.cfg.Logger
	if h.cfg.Destroy == nil {
		log.Warn("the control plane says these sandboxes are gone; not destroying them (no destroyer wired)", "sandbox_ids", ids)
		return
	}
	for _, id := range ids {
		err := h.cfg.Destroy(ctx, id)
		switch {
		case err == nil:
			log.Info("destroyed a sandbox the control plane's records say is gone", "sandbox_id", id)
		case errors.Is(err, errdefs.ErrNotFound):
		default:
			log.Warn("destroy a sandbox the control plane's records say is gone", "sandbox_id", id, "err", err)
		}
	}
}

// renew trades a fresh CSR for the same key for a new certificate and
// token, and puts them in force and on disk. The key stays: it never left
// the host, and keeping it means no moment where the key on disk and the
// certificate in force disagree.
func (h *Heartbeater) renew(ctx context.Context, old Credentials) error {
	csr, err := CSR(old.KeyPEM, old.Address)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	req := connect.NewRequest(&hostagentv1.RenewRequest{CsrPem: csr})
	setBearer(req.Header(), old.Token)
	res, err := h.cfg.Client.Renew(ctx, req)
	if err != nil {
		return fmt.Errorf("renew: %w", errdefs.FromConnect(err))
	}
	c := old
	c.Token = res.Msg.GetHostToken()
	c.CertPEM = res.Msg.GetCertificatePem()
	c.CAPEM = res.Msg.GetCaPem()
	c.TokenExpiresAt = time.Time{}
	if ms := res.Msg.GetHostTokenExpiresAtUnixMs(); ms > 0 {
		c.TokenExpiresAt = time.UnixMilli(ms)
	}
	// Checked before anything is replaced: a bad answer leaves the old,
	// still valid credentials in force.
	if _, err := parse(c); err != nil {
		return fmt.Errorf("renew: the control plane's answer: %w", err)
	}
	// The cluster CA never changes; the one registration accepted (and
	// pinned) stays the only one the agent trusts. Otherwise a man in the
	// middle of a plain-HTTP control plane could swap in its own CA at the
	// next renewal and then drive the agent with certificates it signs.
	if err := sameCA(old.CAPEM, c.CAPEM); err != nil {
		return fmt.Errorf("renew: refusing the control plane's answer (%w): %w", errdefs.ErrPermissionDenied, err)
	}
	if err := h.cfg.Store.Save(c); err != nil {
		return fmt.Errorf("renew: save credentials: %w", err)
	}
	if err := h.cfg.Identity.Set(c); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	h.cfg.Logger.Info("host credentials renewed", "host_id", c.HostID, "certificate", describeCert(c), "token_expires_at", c.TokenExpiresAt)
	return nil
}

// sameCA checks that next is the CA cur already is (same key).
func sameCA(cur, next []byte) error {
	c, err := capin.ParseCAPEM(cur)
	if err != nil {
		return fmt.Errorf("saved CA: %w", err)
	}
	return capin.Check(next, capin.Hash(c))
}

// revoke lets go of the registration the control plane no longer knows.
func (h *Heartbeater) revoke(cause error) error {
	h.cfg.Identity.Clear()
	reason := fmt.Errorf("%w: %v", ErrRevoked, cause)
	if err := h.cfg.Store.Delete(); err != nil {
		reason = fmt.Errorf("%w (deleting the credentials failed too: %v)", reason, err)
	}
	h.cfg.OnRevoked(reason)
	return reason
}

func setBearer(h http.Header, token string) {
	h.Set("Authorization", "Bearer "+token)
}
