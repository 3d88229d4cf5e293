package agentpool_test

import (
	"context"
	"net"
	"testing"

	"github.com/google/uuid"
)

// TestRefusePrivateBYOC is issue 11 hole 6 at dial time: a byoc host's
// address passed the registration check, but its name may resolve
// elsewhere later (DNS rebinding); the pool refuses to dial an internal
// address for a byoc host. Regular hosts (the operator's) may be anywhere.
func TestRefusePrivateBYOC(t *testing.T) {
	e := newEnv(t)
	e.pool.RefusePrivateBYOC()
	ctx := context.Background()

	byoc := e.addHost(t, "online", "")
	srv := startAgent(t, e.ca, "byoc", byoc, "localhost:1")
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// A name, as a rebinding attacker would use: checked after resolution.
	e.setAddress(t, byoc, "localhost:"+port)
	if name, err := agentName(ctx, e.pool, byoc); err == nil {
		t.Fatalf("byoc host on loopback reached (%q)", name)
	}

	var regular uuid.UUID
	if err := e.db.QueryRow(ctx, "INSERT INTO hosts (team_id, type, status, address) VALUES ($1, 'regular', 'online', '') RETURNING id",
		e.teamID).Scan(&regular); err != nil {
		t.Fatal(err)
	}
	rs := startAgent(t, e.ca, "regular", regular, "")
	e.setAddress(t, regular, rs.Listener.Addr().String())
	if name, err := agentName(ctx, e.pool, regular); err != nil || name != "regular" {
		t.Fatalf("regular host on loopback: %q, %v", name, err)
	}
}
