package sandboxes

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// DeleteTemplate removes a team template's files from its host, then its
// row. A host that no longer holds them is fine; an unreachable one keeps
// the row (unavailable) so the files are not orphaned unseen.
func (s *Service) DeleteTemplate(ctx context.Context, t store.Template) error {
	ctx = context.WithoutCancel(ctx)
	if t.HostID != nil {
		actx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
		defer cancel()
		ag, err := s.agentFor(actx, t.HostID)
		if err != nil {
			return err
		}
		_, err = ag.DeleteTemplate(actx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Name: t.AgentName, TeamId: teamString(t.TeamID)}))
		if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
			return agentErr("delete template "+t.Name, err)
		}
	}
	if err := s.q.DeleteTemplate(ctx, t.ID); err != nil {
		return fmt.Errorf("delete template %s: %w", t.Name, err)
	}
	return nil
}

func teamString(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	return id.String()
}
