// Package quota enforces per-team limits: how many sandboxes a team may
// have, and how many vCPUs, MiB of memory and MiB of disk they may hold in
// total, and how many snapshot templates it may keep.
//
// What counts (as a cloud provider bills it):
//   - every sandbox that exists (starting, running, paused, hibernated,
//     missing) counts against max_sandboxes and holds its disk_mb against
//     max_disk_mb: a paused or hibernated sandbox keeps its disk (and a
//     hibernated one its memory image) on the host;
//   - vCPUs and memory count while a VMM holds them: starting, running,
//     paused (its RAM stays in place) and missing (it may still run on an
//     unreachable host). A hibernated sandbox gives them back, so resuming
//     it is checked again;
//   - every snapshot template of the team counts against max_templates.
//
// A limit of 0 is unlimited. Defaults come from the control plane's
// configuration (WRENN_TEAM_MAX_*); a platform admin may override any of
// them per team (team_limits, NULL = the default).
//
// Admit must run inside the transaction that records what it admits (the
// sandbox row, the template row, or a hold): it takes a per-team advisory
// lock first, so concurrent requests of one team are checked one after the
// other, each seeing what the previous one recorded.
package quota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// MaxLimit bounds any single limit a platform admin may set: large enough
// for any real team, small enough that sums never overflow.
const MaxLimit = 1 << 40

// Limits are a team's ceilings; 0 means unlimited.
type Limits struct {
	MaxSandboxes int64 `json:"max_sandboxes"`
	MaxVCPUs     int64 `json:"max_vcpus"`
	MaxMemoryMB  int64 `json:"max_memory_mb"`
	MaxDiskMB    int64 `json:"max_disk_mb"`
	MaxTemplates int64 `json:"max_templates"`
}

// Amount is usage, or what a request would add to it.
type Amount struct {
	Sandboxes int64 `json:"sandboxes"`
	VCPUs     int64 `json:"vcpus"`
	MemoryMB  int64 `json:"memory_mb"`
	DiskMB    int64 `json:"disk_mb"`
	Templates int64 `json:"templates"`
}

// Sandboxes is what n sandboxes of one size need.
func Sandboxes(n int, vcpus, memoryMB, diskMB int32) Amount {
	k := int64(n)
	return Amount{Sandboxes: k, VCPUs: k * int64(vcpus), MemoryMB: k * int64(memoryMB), DiskMB: k * int64(diskMB)}
}

// Overrides are a team's own values; nil fields fall back to the default.
type Overrides struct {
	MaxSandboxes *int64 `json:"max_sandboxes"`
	MaxVCPUs     *int64 `json:"max_vcpus"`
	MaxMemoryMB  *int64 `json:"max_memory_mb"`
	MaxDiskMB    *int64 `json:"max_disk_mb"`
	MaxTemplates *int64 `json:"max_templates"`
}

// Apply returns d with o's set fields in place of the defaults.
func (o Overrides) Apply(d Limits) Limits {
	pick := func(v *int64, def int64) int64 {
		if v != nil {
			return *v
		}
		return def
	}
	return Limits{
		MaxSandboxes: pick(o.MaxSandboxes, d.MaxSandboxes),
		MaxVCPUs:     pick(o.MaxVCPUs, d.MaxVCPUs),
		MaxMemoryMB:  pick(o.MaxMemoryMB, d.MaxMemoryMB),
		MaxDiskMB:    pick(o.MaxDiskMB, d.MaxDiskMB),
		MaxTemplates: pick(o.MaxTemplates, d.MaxTemplates),
	}
}

// Validate checks every set field is 0..MaxLimit, naming the first bad one.
func (o Overrides) Validate() error {
	for _, f := range []struct {
		name string
		v    *int64
	}{
		{"max_sandboxes", o.MaxSandboxes}, {"max_vcpus", o.MaxVCPUs}, {"max_memory_mb", o.MaxMemoryMB},
		{"max_disk_mb", o.MaxDiskMB}, {"max_templates", o.MaxTemplates},
	} {
		if f.v != nil && (*f.v < 0 || *f.v > MaxLimit) {
			return errdefs.New(errdefs.ErrInvalidArgument, "%s %d: must be 0 (unlimited) to %d", f.name, *f.v, int64(MaxLimit))
		}
	}
	return nil
}

// Check returns an ErrQuotaExceeded error naming the first limit that
// usage plus want would pass, or nil. Only the dimensions want asks for
// are checked: a team already over a lowered limit may still do what does
// not add to it.
func Check(l Limits, usage, want Amount) error {
	for _, d := range []struct {
		name       string
		limit      int64
		used, more int64
	}{
		{"max_sandboxes", l.MaxSandboxes, usage.Sandboxes, want.Sandboxes},
		{"max_vcpus", l.MaxVCPUs, usage.VCPUs, want.VCPUs},
		{"max_memory_mb", l.MaxMemoryMB, usage.MemoryMB, want.MemoryMB},
		{"max_disk_mb", l.MaxDiskMB, usage.DiskMB, want.DiskMB},
		{"max_templates", l.MaxTemplates, usage.Templates, want.Templates},
	} {
		if d.limit <= 0 || d.more <= 0 || d.used+d.more <= d.limit {
			continue
		}
		return errdefs.New(errdefs.ErrQuotaExceeded,
			"team limit %s (%d) reached: %d in use, %d more requested", d.name, d.limit, d.used, d.more)
	}
	return nil
}

// Enforcer applies the configured defaults and the stored overrides.
type Enforcer struct {
	Defaults Limits
}

// Report is a team's effective limits, its overrides and its usage.
type Report struct {
	Limits    Limits
	Overrides Overrides
	Usage     Amount
}

// Load reads a team's limits and current usage.
func (e Enforcer) Load(ctx context.Context, q *store.Queries, team uuid.UUID) (Report, error) {
	var r Report
	row, err := q.GetTeamLimits(ctx, team)
	switch {
	case err == nil:
		r.Overrides = FromRow(row)
	case !isNoRows(err):
		return r, fmt.Errorf("read limits of team %s: %w", team, err)
	}
	r.Limits = r.Overrides.Apply(e.Defaults)
	u, err := q.TeamUsage(ctx, team)
	if err != nil {
		return r, fmt.Errorf("read usage of team %s: %w", team, err)
	}
	r.Usage = Amount{Sandboxes: u.Sandboxes, VCPUs: u.Vcpus, MemoryMB: u.MemoryMb, DiskMB: u.DiskMb, Templates: u.Templates}
	return r, nil
}

// FromRow converts a stored row.
func FromRow(row store.TeamLimit) Overrides {
	return Overrides{
		MaxSandboxes: row.MaxSandboxes, MaxVCPUs: row.MaxVcpus, MaxMemoryMB: row.MaxMemoryMb,
		MaxDiskMB: row.MaxDiskMb, MaxTemplates: row.MaxTemplates,
	}
}

// Admit locks the team's quota for the rest of the transaction q runs in
// and checks that want fits. The caller records what it admitted (a row
// that TeamUsage counts) in the same transaction.
func (e Enforcer) Admit(ctx context.Context, q *store.Queries, team uuid.UUID, want Amount) error {
	if err := q.LockTeamQuota(ctx, team.String()); err != nil {
		return fmt.Errorf("lock quota of team %s: %w", team, err)
	}
	r, err := e.Load(ctx, q, team)
	if err != nil {
		return err
	}
	return Check(r.Limits, r.Usage, want)
}

// Hold admits want and records it as a hold (counted in the team's usage
// and, with host set, in that host's reservations) until Release or ttl.
// For operations whose sandbox rows only exist after a host answered.
func (e Enforcer) Hold(ctx context.Context, q *store.Queries, team uuid.UUID, host *uuid.UUID, want Amount, ttl time.Duration) (uuid.UUID, error) {
	if err := e.Admit(ctx, q, team, want); err != nil {
		return uuid.Nil, err
	}
	id, err := q.InsertQuotaHold(ctx, store.InsertQuotaHoldParams{
		TeamID: team, HostID: host, Sandboxes: want.Sandboxes, Vcpus: want.VCPUs,
		MemoryMb: want.MemoryMB, DiskMb: want.DiskMB, TtlSeconds: ttl.Seconds(),
	})
	if err != nil {
		return uuid.Nil, fmt.Errorf("record quota hold of team %s: %w", team, err)
	}
	return id, nil
}

// Release deletes a hold (and, on the way, any expired ones).
func Release(ctx context.Context, q *store.Queries, id uuid.UUID) error {
	if err := q.DeleteQuotaHold(ctx, id); err != nil {
		return fmt.Errorf("release quota hold %s: %w", id, err)
	}
	if err := q.DeleteExpiredQuotaHolds(ctx); err != nil {
		return fmt.Errorf("delete expired quota holds: %w", err)
	}
	return nil
}

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
