package security

// The edge tests run last (file order): login throttling locks an account
// and may slow its client address.

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Hole 10: NUL bytes and invalid UTF-8 in any field the API stores or
// looks up are refused at the edge with 400 invalid_argument naming the
// field, never a 500 from PostgreSQL.
func TestHole10BadBytesAre400(t *testing.T) {
	world(t)
	// Two ways to smuggle each kind of bad byte into a JSON string: the
	// \u0000 escape, and a raw byte that is not UTF-8.
	jsonBad := map[string]string{"NUL": `\u0000`, "invalid UTF-8": "\xff\xfe"}
	pathBad := map[string]string{"NUL": "%00", "invalid UTF-8": "%FF%FE"}
	type badCase struct {
		what   string
		method string
		path   string
		body   string // JSON with %s where the bad bytes go
		as     client
		field  []string // the message names one of these
	}
	fresh := func() string { return "bad-" + randHex(4) + "@example.com" }
	cases := []badCase{
		{"login email", "POST", "/v1/auth/login", `{"email":"a%s@example.com","password":"some-password"}`, anon(), []string{"email"}},
		{"signup email", "POST", "/v1/auth/signup", `{"email":"x%s` + fresh() + `","password":"pw-long-enough"}`, anon(), []string{"email"}},
		{"signup name", "POST", "/v1/auth/signup", `{"email":"` + fresh() + `","password":"pw-long-enough","name":"n%s"}`, anon(), []string{"name"}},
		{"signup team_name", "POST", "/v1/auth/signup", `{"email":"` + fresh() + `","password":"pw-long-enough","team_name":"t%s"}`, anon(), []string{"team_name", "team name"}},
		{"team name", "POST", "/v1/teams", `{"name":"t%s"}`, w.b.sessionClient(), []string{"name"}},
		{"API key name", "POST", "/v1/api-keys", `{"name":"k%s"}`, w.b.keyClient(), []string{"name"}},
		{"sandbox metadata value", "POST", "/v1/sandboxes", `{"template":"minimal","timeout_sec":60,"metadata":{"k":"v%s"}}`, w.b.keyClient(), []string{"metadata"}},
		{"sandbox metadata key", "POST", "/v1/sandboxes", `{"template":"minimal","timeout_sec":60,"metadata":{"k%s":"v"}}`, w.b.keyClient(), []string{"metadata"}},
		{"sandbox env", "POST", "/v1/sandboxes", `{"template":"minimal","timeout_sec":60,"env":{"K":"v%s"}}`, w.b.keyClient(), []string{"env"}},
	}
	for _, tc := range cases {
		for kind, bad := range jsonBad {
			t.Run(tc.what+" "+kind, func(t *testing.T) {
				// Unique per run so a signup that wrongly succeeds once
				// does not turn the other kind into a 409.
				body := strings.Replace(fmt.Sprintf(tc.body, bad), "@example.com", randHex(2)+"@example.com", 1)
				r := tc.as.do(t, tc.method, tc.path, []byte(body))
				checkBadField(t, r, tc.field)
				if r.status == http.StatusCreated && tc.path == "/v1/sandboxes" {
					tc.as.do(t, "DELETE", "/v1/sandboxes/"+jsonField(r.body, "id"), nil)
				}
			})
		}
	}

	// Path ids and query parameters, authenticated and on the
	// unauthenticated proxy path.
	cb := w.b.keyClient()
	for kind, bad := range pathBad {
		for _, tc := range []struct {
			what, method, path string
			as                 client
			field              []string
		}{
			{"sandbox id", "GET", "/v1/sandboxes/sb" + bad, cb, []string{"sandbox"}},
			{"sandbox id (exec)", "POST", "/v1/sandboxes/sb" + bad + "/exec", cb, []string{"sandbox"}},
			{"sandbox id (proxy, no credentials)", "GET", "/v1/sandboxes/sb" + bad + "/ports/8080/index.html", anon(), []string{"sandbox"}},
			{"template name", "GET", "/v1/templates/t" + bad, cb, []string{"template"}},
			{"list cursor", "GET", "/v1/sandboxes?cursor=" + bad, cb, []string{"cursor"}},
			{"list cursor (decoded)", "GET", "/v1/sandboxes?cursor=" + b64(t, "1700000000000000.sb"+bad), cb, []string{"cursor"}},
			{"audit cursor", "GET", "/v1/audit-logs?cursor=" + bad, cb, []string{"cursor"}},
			{"metadata filter", "GET", "/v1/sandboxes?metadata=k%3Dv" + bad, cb, []string{"metadata"}},
			{"state filter", "GET", "/v1/sandboxes?state=running" + bad, cb, []string{"state"}},
			{"file path", "GET", "/v1/sandboxes/" + w.sandboxA + "/files/stat?path=/tmp/x" + bad, w.a.keyClient(), []string{"path"}},
		} {
			t.Run(tc.what+" "+kind, func(t *testing.T) {
				checkBadField(t, tc.as.do(t, tc.method, tc.path, nil), tc.field)
			})
		}
	}
}

// b64 is a cursor-shaped value whose decoded form carries the bad bytes.
func b64(t *testing.T, escaped string) string {
	t.Helper()
	raw, err := url.PathUnescape(escaped)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func checkBadField(t *testing.T, r reply, field []string) {
	t.Helper()
	if r.status >= 500 {
		t.Fatalf("server error: %s", r)
	}
	if r.status != http.StatusBadRequest || r.errorCode() != "invalid_argument" {
		t.Fatalf("got %s, want 400 invalid_argument", r)
	}
	msg := strings.ToLower(r.errorMessage())
	for _, f := range field {
		if strings.Contains(msg, strings.ToLower(f)) {
			return
		}
	}
	t.Errorf("400 message %q names none of %v", r.errorMessage(), field)
}

// Hole 8: a client that trickles its request body is cut off instead of
// holding a connection (and a handler) for as long as it likes.
func TestHole8SlowBodyIsCutOff(t *testing.T) {
	world(t)
	const (
		every = 2 * time.Second
		limit = 2 * time.Minute
	)
	addr := strings.TrimPrefix(shared.st.URL, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"name":"` + strings.Repeat("s", 1000) + `"}`
	fmt.Fprintf(conn, "POST /v1/api-keys HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		addr, w.b.key, len(body))
	// The reader notices as soon as the server answers or closes.
	gone := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			gone <- "closed: " + err.Error()
			return
		}
		resp.Body.Close()
		gone <- "answered " + resp.Status
	}()
	start := time.Now()
	for i := 0; i < len(body); i++ {
		select {
		case how := <-gone:
			t.Logf("after %s and %d of %d body bytes the server %s", time.Since(start).Round(time.Second), i, len(body), how)
			if strings.HasPrefix(how, "answered 2") {
				t.Fatalf("the server processed a request whose body was still arriving")
			}
			return
		case <-time.After(every):
		}
		if time.Since(start) > limit {
			t.Fatalf("the server still reads a body trickled at 1 byte per %s after %s", every, limit)
		}
		if _, err := conn.Write([]byte{body[i]}); err != nil {
			t.Logf("after %s and %d body bytes the server closed the connection: %v", time.Since(start).Round(time.Second), i, err)
			return
		}
	}
	t.Fatalf("the whole %d-byte body was trickled in over %s and the server kept reading", len(body), time.Since(start).Round(time.Second))
}

// Hole 8: repeated wrong passwords for one account are throttled with 429
// rate_limited and Retry-After, also for the right password while
// throttled (else guessing goes on). Runs last: it locks its own victim
// account (and a throttle by address would slow only what follows).
func TestHole8LoginThrottle(t *testing.T) {
	world(t)
	victim := signup(t, "victim")
	c := anon()
	for i := 1; i <= 40; i++ {
		r := c.do(t, "POST", "/v1/auth/login", map[string]string{"email": victim.email, "password": "wrong-" + strconv.Itoa(i)})
		if r.status == http.StatusUnauthorized {
			continue
		}
		if r.status != http.StatusTooManyRequests || r.errorCode() != "rate_limited" {
			t.Fatalf("wrong password #%d: got %s, want 401 or 429 rate_limited", i, r)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("429 after %d wrong passwords without a usable Retry-After (%q)", i-1, r.header.Get("Retry-After"))
		}
		t.Logf("throttled after %d wrong passwords, Retry-After %s", i-1, r.header.Get("Retry-After"))
		// Wait out the delay and fail again until it is long enough that
		// the next request surely falls inside it on a loaded machine.
		wait, _ := strconv.Atoi(r.header.Get("Retry-After"))
		for tries := 0; wait < 4 && tries < 10; tries++ {
			time.Sleep(time.Duration(wait) * time.Second)
			c.do(t, "POST", "/v1/auth/login", map[string]string{"email": victim.email, "password": "wrong-again"})
			r = c.do(t, "POST", "/v1/auth/login", map[string]string{"email": victim.email, "password": "wrong-again"})
			if r.status == http.StatusTooManyRequests {
				wait, _ = strconv.Atoi(r.header.Get("Retry-After"))
			}
		}
		r = c.do(t, "POST", "/v1/auth/login", map[string]string{"email": victim.email, "password": victim.password})
		wantError(t, fmt.Sprintf("the right password while throttled (Retry-After was %d s)", wait), r, http.StatusTooManyRequests, "rate_limited")
		return
	}
	t.Fatalf("40 wrong passwords for one account in a row, none throttled")
}
