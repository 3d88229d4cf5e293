package sandboxes

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Template statuses (templates.status).
const (
	// TemplatePending: its host is making it; nothing can be created
	// from it yet.
	TemplatePending = "pending"
	// TemplateReady: its host has it.
	TemplateReady = "ready"
)

// DeleteTemplate removes a team template's files from its host, then its
// row. A host that no longer holds them is fine; an unreachable one keeps
// the row (unavailable) so the files are not orphaned unseen.
func (s *Service) DeleteTemplate(ctx context.Context, t store.Template) error {
	ctx = context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	if t.BuildID != nil && t.TeamID != nil {
		return s.deleteBuiltTemplate(actx, t)
	}
	if err := s.deleteTemplateOnHost(actx, t.HostID, t.AgentName, t.TeamID); err != nil {
		return err
	}
	if err := s.q.DeleteTemplate(ctx, t.ID); err != nil {
		return fmt.Errorf("delete template %s: %w", t.Name, err)
	}
	return nil
}

// deleteBuiltTemplate removes every version of a built template from its
// host (a version a sandbox still uses stops it: FailedPrecondition, and
// nothing is forgotten), then its builds and its row. Running builds of
// it are cancelled.
func (s *Service) deleteBuiltTemplate(ctx context.Context, t store.Template) error {
	versions, err := s.q.TeamTemplateBuildsOnHosts(ctx, store.TeamTemplateBuildsOnHostsParams{TeamID: *t.TeamID, TemplateName: t.Name})
	if err != nil {
		return fmt.Errorf("list versions of template %s: %w", t.Name, err)
	}
	for _, b := range versions {
		if b.Status == BuildBuilding {
			if err := s.CancelBuild(ctx, b); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
				return err
			}
		}
		if err := s.deleteVersionOnHosts(ctx, b); err != nil {
			return fmt.Errorf("template %s version %d: %w", t.Name, b.Version, err)
		}
		if err := s.q.RetireTemplateBuild(ctx, store.RetireTemplateBuildParams{ID: b.ID, Now: s.clk.Now()}); err != nil {
			return fmt.Errorf("record removed version %d of %s: %w", b.Version, t.Name, err)
		}
	}
	return s.inTx(ctx, func(q *store.Queries) error {
		if err := q.DeleteTemplate(ctx, t.ID); err != nil {
			return fmt.Errorf("delete template %s: %w", t.Name, err)
		}
		if err := q.DeleteTemplateBuilds(ctx, store.DeleteTemplateBuildsParams{TeamID: *t.TeamID, TemplateName: t.Name}); err != nil {
			return fmt.Errorf("delete builds of template %s: %w", t.Name, err)
		}
		return nil
	})
}

// deleteVersionOnHosts removes a built version from its home host and
// from every host that reports a copy of it.
func (s *Service) deleteVersionOnHosts(ctx context.Context, b store.TemplateBuild) error {
	hosts, err := s.q.HostsWithTemplate(ctx, b.AgentName)
	if err != nil {
		return fmt.Errorf("hosts with template %s: %w", b.AgentName, err)
	}
	if b.HostID != nil && !slices.Contains(hosts, *b.HostID) {
		hosts = append(hosts, *b.HostID)
	}
	for _, h := range hosts {
		if err := s.deleteTemplateOnHost(ctx, &h, b.AgentName, &b.TeamID); err != nil {
			return err
		}
	}
	return nil
}

// deleteTemplateOnHost removes a template's files from its host; a host
// without them is success.
func (s *Service) deleteTemplateOnHost(ctx context.Context, host *uuid.UUID, agentName string, team *uuid.UUID) error {
	if host == nil {
		return nil
	}
	ag, err := s.agentFor(ctx, host)
	if err != nil {
		return err
	}
	_, err = ag.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: agentName, TeamId: teamString(team)}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return agentErr("delete template "+agentName, err)
	}
	return nil
}

// settleTemplate decides a pending template whose maker died (its lease
// ran out before before): ready if its host has it, else its row goes
// (the host, asked just now, has nothing to remove: a snapshot cut short
// is rolled back by the agent itself). A host that cannot be asked keeps
// the row for the next sweep; a template whose host was deleted goes.
// If the maker was only cut off from the store and finishes after all,
// its own MarkTemplateReady finds no row and removes the host's copy.
func (s *Service) settleTemplate(ctx context.Context, t store.Template, before time.Time) (string, error) {
	if t.HostID != nil {
		actx, cancel := detached(ctx, agentQuickTimeout)
		defer cancel()
		ag, err := s.agentFor(actx, t.HostID)
		if err != nil {
			return "", err
		}
		resp, err := ag.ListTemplates(actx, connect.NewRequest(&hostagentv1.ListTemplatesRequest{}))
		if err != nil {
			return "", agentErr("list templates", err)
		}
		hts := resp.Msg.GetTemplates()
		if i := slices.IndexFunc(hts, func(h *hostagentv1.Template) bool { return h.GetName() == t.AgentName }); i >= 0 {
			n, err := s.q.MarkTemplateReady(ctx, store.MarkTemplateReadyParams{ID: t.ID, DiskBytes: hts[i].GetDiskBytes(), Now: s.clk.Now()})
			if err != nil {
				return "", fmt.Errorf("record template %s ready: %w", t.Name, err)
			}
			if n == 0 {
				return "", nil // settled by someone else meanwhile
			}
			return TemplateReady, nil
		}
	}
	n, err := s.q.DeleteStalePendingTemplate(ctx, store.DeleteStalePendingTemplateParams{ID: t.ID, Before: before})
	if err != nil {
		return "", fmt.Errorf("remove abandoned template %s: %w", t.Name, err)
	}
	if n == 0 {
		return "", nil
	}
	return "removed", nil
}

func teamString(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	return id.String()
}
