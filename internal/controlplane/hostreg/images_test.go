package hostreg_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// TestHeartbeatImagesExcludeSnapshots: hosts.images are the built-in
// templates every team may use, so a snapshot template (one team's memory
// and disk) that an agent lists among its images as well, as agents did
// before snapshot templates had owners, is not stored there.
func TestHeartbeatImagesExcludeSnapshots(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	e.clk.Advance(30 * time.Second)

	sp := specs()
	sp.Images = []string{"minimal", "t-abcdef"}
	if _, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		Specs:     sp,
		Templates: []*hostagentv1.Template{{Name: "minimal"}, {Name: "t-abcdef", Snapshot: true}},
	}); err != nil {
		t.Fatal(err)
	}
	h, err := e.q.GetTeamHost(context.Background(), store.GetTeamHostParams{ID: id, TeamID: e.teamID})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Host.Images, []string{"minimal"}) {
		t.Errorf("images = %v, want only the base image", h.Host.Images)
	}
	if !slices.Equal(h.Host.SnapshotTemplates, []string{"t-abcdef"}) {
		t.Errorf("snapshot templates = %v", h.Host.SnapshotTemplates)
	}
}
