package rest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Issue 11 hole 10: NUL bytes and invalid UTF-8 reached PostgreSQL (text
// columns reject NUL, jsonb rejects \u0000) and answered 500. Each must be
// a 400 invalid_argument naming the field.
func TestBadTextIsInvalidArgument(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	key := env.team.Key
	sb := env.create(t, map[string]any{})
	// raw JSON bodies: `\u0000` is a JSON escape for NUL; "\xff" is a raw
	// byte that is not UTF-8.
	cases := []struct {
		name, method, path, cred, body string
		// wantInMsg must appear in the error message (the field).
		wantInMsg string
	}{
		{"login email NUL", "POST", "/v1/auth/login", "", `{"email":"a\u0000@example.com","password":"x"}`, `"email"`},
		{"login email invalid UTF-8", "POST", "/v1/auth/login", "", "{\"email\":\"a\xff@example.com\",\"password\":\"x\"}", `"email"`},
		{"signup name NUL", "POST", "/v1/auth/signup", "", `{"email":"n@example.com","password":"long enough pw","name":"a\u0000b"}`, `"name"`},
		{"signup team name invalid UTF-8", "POST", "/v1/auth/signup", "", "{\"email\":\"n@example.com\",\"password\":\"long enough pw\",\"team_name\":\"\xc3\"}", `"team_name"`},
		{"team name NUL", "POST", "/v1/teams", env.team.JWT, `{"name":"t\u0000"}`, `"name"`},
		{"api key name NUL", "POST", "/v1/api-keys", key, `{"name":"k\u0000"}`, `"name"`},
		{"metadata value NUL", "POST", "/v1/sandboxes", key, `{"metadata":{"app":"x\u0000"}}`, `"metadata.app"`},
		{"metadata key NUL", "POST", "/v1/sandboxes", key, `{"metadata":{"a\u0000":"x"}}`, `key in field "metadata"`},
		{"metadata value invalid UTF-8", "POST", "/v1/sandboxes", key, "{\"metadata\":{\"app\":\"\xfe\"}}", `"metadata.app"`},
		{"sandbox id in path NUL", "GET", "/v1/sandboxes/ab%00cd", key, "", "sandboxID"},
		{"sandbox id in path invalid UTF-8", "GET", "/v1/sandboxes/ab%FFcd", key, "", "sandboxID"},
		{"sandbox id on the proxy path, unauthenticated", "GET", "/v1/sandboxes/ab%00cd/ports/8080/x", "", "", "sandbox"},
		{"metadata filter NUL", "GET", "/v1/sandboxes?metadata=a%3Db%00", key, "", `"metadata"`},
		{"list cursor NUL", "GET", "/v1/sandboxes?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("1.a\x00b")), key, "", "cursor"},
		{"list cursor invalid UTF-8", "GET", "/v1/sandboxes?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("1.a\xffb")), key, "", "cursor"},
		{"query state invalid UTF-8", "GET", "/v1/sandboxes?state=%FF", key, "", `"state"`},
		{"template name NUL", "GET", "/v1/templates/x%00", key, "", "templateName"},
		{"file path NUL", "GET", "/v1/sandboxes/" + sb.Id + "/files?path=/tmp/a%00", key, "", `"path"`},
		{"process selector NUL", "POST", "/v1/sandboxes/" + sb.Id + "/processes/a%00/signal", key, `{"signal":"SIGKILL"}`, "selector"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = []byte(c.body)
			}
			hdr := http.Header{}
			if c.body != "" {
				hdr.Set("Content-Type", "application/json")
			}
			resp := env.doHeader(t, c.method, c.path, c.cred, body, hdr)
			data, _ := io.ReadAll(resp.Body)
			var b errorBody
			_ = json.Unmarshal(data, &b)
			if resp.StatusCode != http.StatusBadRequest || b.Error.Code != "invalid_argument" {
				t.Fatalf("status %d body %s; want 400 invalid_argument", resp.StatusCode, data)
			}
			if !strings.Contains(b.Error.Message, c.wantInMsg) {
				t.Errorf("message %q does not name %s", b.Error.Message, c.wantInMsg)
			}
		})
	}
	// Nothing with a bad field was stored.
	var n int
	if err := env.Pool.QueryRow(t.Context(), `SELECT count(*) FROM sandboxes`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d sandboxes stored, want only the one made before", n)
	}
}

// The host-name proxy ({port}-{id}.domain) is unauthenticated and reads
// the id from Host: a bad one must not reach the store either.
func TestBadTextInProxyHost(t *testing.T) {
	env := newTestEnv(t)
	for _, host := range []string{"8080-ab\xffcd.wrenn.test", "8080-ab\x00cd.wrenn.test"} {
		status := rawRequest(t, env.Srv.Listener.Addr().String(), "GET / HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if status != http.StatusBadRequest {
			t.Errorf("Host %q: status %d, want 400", host, status)
		}
	}
}

// The proxy's guest path and query belong to the guest: they are not
// checked as text (only the sandbox id is), so a missing sandbox answers
// 404, not 400.
func TestProxyGuestPathNotChecked(t *testing.T) {
	env := newTestEnv(t)
	resp := env.do(t, "GET", "/v1/sandboxes/nosuch/ports/8080/a%FF?q=%00", "", nil)
	wantError(t, resp, http.StatusNotFound, "not_found")
}

// rawRequest sends req on a new connection and returns the status.
func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// Unit checks of the JSON walk: field paths, keys, arrays, depth.
func TestCheckJSONText(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"a":"ok","b":["x","y\u0000"]}`, `field "b[1]" contains a NUL byte`},
		{`{"a":{"b":{"c\u0000":1}}}`, `a key in field "a.b" contains a NUL byte`},
		{`{"a\u0000":1}`, `a key in the top-level object contains a NUL byte`},
		{"{\"a\":[1,{\"b\":\"\xff\"}]}", `field "a[1].b" is not valid UTF-8`},
		{`"\u0000"`, `the request body contains a NUL byte`},
		{`{"we ird":"\u0000"}`, `field "\"we ird\"" contains a NUL byte`},
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), "nests deeper than 64"},
		{`{"a":"\\u0000"}`, ""}, // an escaped backslash, not a NUL
		{`{"a":"ünïcødé ✓"}`, ""},
	}
	for _, c := range cases {
		err := checkJSONText([]byte(c.in))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("checkJSONText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
