package rest

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
)

type auditPage struct {
	Entries    []api.AuditEntry `json:"entries"`
	NextCursor string           `json:"next_cursor"`
}

// auditAll walks every page of the filtered log with pages of limit.
func auditAll(t *testing.T, env *testEnv, cred string, q url.Values, limit int) []api.AuditEntry {
	t.Helper()
	var all []api.AuditEntry
	q.Set("limit", strconv.Itoa(limit))
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
		var page auditPage
		env.doJSON(t, "GET", "/v1/audit-logs?"+q.Encode(), cred, nil, http.StatusOK, &page)
		if len(page.Entries) > limit {
			t.Fatalf("page of %d with limit %d", len(page.Entries), limit)
		}
		all = append(all, page.Entries...)
		if page.NextCursor == "" {
			return all
		}
		q.Set("cursor", page.NextCursor)
	}
}

func ids(es []api.AuditEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Id
	}
	return out
}

// The audit list's filters select on the server, page with a cursor, and
// never reach another team's entries.
func TestAuditLogFilters(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")         // signup, key create (user)
	other := env.newTeam(t, "other") // the same kinds of entries, in its own log

	var byKey api.CreatedAPIKey
	env.doJSON(t, "POST", "/v1/api-keys", a.Key, map[string]any{"name": "by key"}, http.StatusCreated, &byKey)
	env.doJSON(t, "POST", "/v1/teams/"+a.ID.String()+"/members", a.JWT, map[string]any{"email": other.Email, "role": "member"}, http.StatusCreated, nil)
	wantError(t, env.do(t, "POST", "/v1/teams/"+a.ID.String()+"/members", a.JWT, map[string]any{"email": other.Email, "role": "member"}), 409, "already_exists")
	if resp := env.do(t, "DELETE", "/v1/api-keys/"+byKey.Id.String(), a.JWT, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	env.doJSON(t, "POST", "/v1/api-keys", other.Key, map[string]any{"name": "other's"}, http.StatusCreated, nil)

	full := auditAll(t, env, a.JWT, url.Values{}, 100)
	if len(full) != 6 {
		t.Fatalf("team a has %d entries, want 6: %+v", len(full), full)
	}
	// want filters the unfiltered list as the server should.
	want := func(keep func(api.AuditEntry) bool) []int64 {
		var out []int64
		for _, e := range full {
			if keep(e) {
				out = append(out, e.Id)
			}
		}
		return out
	}
	keyID := meKeyID(t, env, a.Key)
	mid := full[2].CreatedAt // entries are newest first
	for _, tc := range []struct {
		name  string
		q     url.Values
		limit int
		want  []int64
	}{
		{"resource type, paged by 1", url.Values{"resource_type": {"api_key"}}, 1,
			want(func(e api.AuditEntry) bool { return e.ResourceType == "api_key" })},
		{"action and actor type", url.Values{"action": {"create"}, "resource_type": {"api_key"}, "actor_type": {"api_key"}}, 10,
			want(func(e api.AuditEntry) bool {
				return e.Action == "create" && e.ResourceType == "api_key" && e.ActorType == "api_key"
			})},
		{"actor id (a key)", url.Values{"actor_id": {keyID}}, 10,
			want(func(e api.AuditEntry) bool { return e.ActorId == keyID })},
		{"resource id", url.Values{"resource_id": {byKey.Id.String()}}, 10,
			want(func(e api.AuditEntry) bool { return e.ResourceId == byKey.Id.String() })},
		{"outcome", url.Values{"outcome": {"failure"}}, 10,
			want(func(e api.AuditEntry) bool { return e.Outcome == "failure" })},
		{"since", url.Values{"since": {mid.Format(time.RFC3339Nano)}}, 2,
			want(func(e api.AuditEntry) bool { return !e.CreatedAt.Before(mid) })},
		{"until", url.Values{"until": {mid.Format(time.RFC3339Nano)}}, 2,
			want(func(e api.AuditEntry) bool { return e.CreatedAt.Before(mid) })},
		{"no match", url.Values{"action": {"no-such-action"}}, 10, nil},
		// A member of a who acted only in their own team: nothing in a's log.
		{"other team's actor", url.Values{"actor_id": {other.UserID.String()}}, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(auditAll(t, env, a.JWT, tc.q, tc.limit))
			if len(tc.want) == 0 && len(got) == 0 {
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// The checks above would pass with a server that ignores filters only
	// if every filter kept everything: make sure they select.
	if n := len(want(func(e api.AuditEntry) bool { return e.ResourceType == "api_key" })); n == 0 || n == len(full) {
		t.Fatalf("the api_key filter selects %d of %d: the test does not test", n, len(full))
	}

	// Cross-team: the other team filtering by a's ids sees none of a's
	// entries, and its own filtered list is only its own.
	for _, q := range []url.Values{
		{"actor_id": {a.UserID.String()}},
		{"resource_id": {byKey.Id.String()}},
		{"actor_id": {keyID}},
	} {
		if got := auditAll(t, env, other.Key, q, 10); len(got) != 0 {
			t.Fatalf("other team, %v: %d of a's entries", q, len(got))
		}
	}
	own := auditAll(t, env, other.Key, url.Values{"resource_type": {"api_key"}, "action": {"create"}}, 10)
	if len(own) != 2 {
		t.Fatalf("other team's key creates: %d, want 2 (its first key and the one it made)", len(own))
	}
	for _, e := range own {
		if slices.Contains(ids(full), e.Id) {
			t.Fatalf("other team sees a's entry %d", e.Id)
		}
	}

	for _, tc := range []struct{ name, query string }{
		{"actor type", "?actor_type=robot"},
		{"outcome", "?outcome=maybe"},
		{"since not a time", "?since=yesterday"},
		{"until not a time", "?until=2026-13-01T00:00:00Z"},
		{"empty range", "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"},
		{"long action", "?action=" + strings.Repeat("a", 65)},
		{"NUL in actor id", "?actor_id=a%00b"},
		{"invalid UTF-8 in action", "?action=%ff"},
	} {
		t.Run("bad "+tc.name, func(t *testing.T) {
			wantError(t, env.do(t, "GET", "/v1/audit-logs"+tc.query, a.JWT, nil), 400, "invalid_argument")
		})
	}
}
