package rest

import (
	"net/http"
	"testing"
)

// TestOnlyPlatformAdminAddsRegularHosts: regular hosts run every team's
// sandboxes, so only the installation's first user (and keys they made)
// may add one; any team admin may add a byoc host.
func TestOnlyPlatformAdminAddsRegularHosts(t *testing.T) {
	env := newTestEnv(t)
	first := env.newTeam(t, "first") // first signup: platform admin
	other := env.newTeam(t, "other")

	env.doJSON(t, "POST", "/v1/hosts", first.Key, map[string]string{"type": "regular"}, http.StatusCreated, nil)
	env.doJSON(t, "POST", "/v1/hosts", first.JWT, map[string]string{"type": "regular"}, http.StatusCreated, nil)

	resp := env.do(t, "POST", "/v1/hosts", other.Key, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")
	resp = env.do(t, "POST", "/v1/hosts", other.JWT, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")
	env.doJSON(t, "POST", "/v1/hosts", other.Key, map[string]string{"type": "byoc"}, http.StatusCreated, nil)
}
