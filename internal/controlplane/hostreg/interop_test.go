package hostreg_test

import (
	"context"
	"testing"

	"github.com/wrenn/wrenn/internal/agent/registration"
)

// The agent's own registration client (internal/agent/registration)
// registers with this service and accepts what it returns (it checks the
// certificate is for its key, for server auth, and chains to the CA).
func TestInteropWithAgentRegistration(t *testing.T) {
	e := newEnv(t)
	id, tok := e.newHost(t)
	c, err := registration.Register(context.Background(), e.client, registration.RegisterRequest{
		Token: tok, Address: "192.0.2.10:50051", CPURL: "http://cp.invalid", Specs: specs(),
	})
	if err != nil {
		t.Fatalf("agent registration: %v", err)
	}
	if c.HostID != id.String() {
		t.Errorf("host id %s, want %s", c.HostID, id)
	}
	if e.hostStatus(t, id) != "online" {
		t.Error("host not online after the agent registered")
	}
}
