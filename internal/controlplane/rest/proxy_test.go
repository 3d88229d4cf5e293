package rest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestPortProxy(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	// Like the real agent pool, speak HTTP/2 to the agent: WebSocket
	// upgrades must still get through (over an HTTP/1.1 side connection).
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	agent.Client = &http.Client{Transport: &http.Transport{Protocols: h2c}}
	sb := env.create(t, map[string]any{"public_ports": []int{9000}})
	token := *sb.AccessToken
	base := "/v1/sandboxes/" + sb.Id + "/ports/"
	other := env.newTeam(t, "other")

	get := func(t *testing.T, method, path string, hdr http.Header, body string) (int, string) {
		t.Helper()
		var b any
		if body != "" {
			b = []byte(body)
		}
		resp := env.doHeader(t, method, path, "", b, hdr)
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	tok := http.Header{"X-Access-Token": {token}}

	tests := []struct {
		name       string
		method     string
		path       string
		hdr        http.Header
		body       string
		wantStatus int
		wantIn     []string
		wantNotIn  []string
	}{
		{name: "token header", method: "GET", path: base + "8080/hello/world?x=1", hdr: tok, wantStatus: 200,
			wantIn: []string{"GET /hello/world?x=1", `token=""`}},
		{name: "token in query is stripped", method: "POST", path: base + "8080/p?access_token=" + token + "&keep=1", body: "payload",
			wantStatus: 200, wantIn: []string{"POST /p?keep=1", "body=payload"}, wantNotIn: []string{token}},
		{name: "no trailing path", method: "GET", path: base + "8080", hdr: tok, wantStatus: 200, wantIn: []string{"GET /?"}},
		{name: "escaped path kept", method: "GET", path: base + "8080/a%2Fb", hdr: tok, wantStatus: 200, wantIn: []string{"GET /a/b"}},
		{name: "team key is stripped", method: "GET", path: base + "8080/k", hdr: http.Header{"Authorization": {"Bearer " + env.team.Key}},
			wantStatus: 200, wantIn: []string{`auth=""`}, wantNotIn: []string{env.team.Key}},
		{name: "team key in X-API-Key", method: "GET", path: base + "8080/k", hdr: http.Header{"X-API-Key": {env.team.Key}},
			wantStatus: 200, wantIn: []string{`key=""`}},
		{name: "public port needs nothing", method: "GET", path: base + "9000/pub", wantStatus: 200, wantIn: []string{"GET /pub"}},
		{name: "no credentials", method: "GET", path: base + "8080/x", wantStatus: 401},
		{name: "wrong token", method: "GET", path: base + "8080/x", hdr: http.Header{"X-Access-Token": {"nope"}}, wantStatus: 401},
		{name: "another team's key", method: "GET", path: base + "8080/x", hdr: http.Header{"Authorization": {"Bearer " + other.Key}}, wantStatus: 404},
		{name: "envd port never", method: "GET", path: base + "49983/health", hdr: tok, wantStatus: 403},
		{name: "bad port", method: "GET", path: base + "70000/x", hdr: tok, wantStatus: 400},
		{name: "missing sandbox", method: "GET", path: "/v1/sandboxes/nosuch/ports/8080/x", hdr: tok, wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(t, tt.method, tt.path, tt.hdr, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, body)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(body, s) {
					t.Errorf("guest saw %q, want it to contain %q", body, s)
				}
			}
			for _, s := range tt.wantNotIn {
				if strings.Contains(body, s) {
					t.Errorf("guest saw %q, which contains %q", body, s)
				}
			}
		})
	}

	t.Run("host name form", func(t *testing.T) {
		for _, host := range []string{"8080-" + sb.Id + ".wrenn.test", "8080-" + sb.Id + ".WRENN.test:443"} {
			req, _ := http.NewRequest("GET", env.Srv.URL+"/some/path?q=1", nil)
			req.Host = host
			req.Header.Set("X-Access-Token", token)
			resp, err := env.Srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), "GET /some/path?q=1") || !strings.Contains(string(b), "host="+host) {
				t.Errorf("Host %s: %d %s", host, resp.StatusCode, b)
			}
		}
		// Other names are the API as usual.
		req, _ := http.NewRequest("GET", env.Srv.URL+"/v1/sandboxes/"+sb.Id, nil)
		req.Host = "api.wrenn.test"
		req.Header.Set("Authorization", "Bearer "+env.team.Key)
		resp, err := env.Srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("API on another host name: %d", resp.StatusCode)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		url := "ws" + strings.TrimPrefix(env.Srv.URL, "http") + base + "8080/ws?access_token=" + token
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatalf("dial through the proxy: %v", err)
		}
		defer c.CloseNow()
		for _, msg := range []string{"one", "two"} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, b, err := c.Read(ctx)
			if err != nil || string(b) != "echo:"+msg {
				t.Fatalf("read %q %v", b, err)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("paused sandbox", func(t *testing.T) {
		env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/pause", env.team.Key, nil, http.StatusOK, nil)
		status, body := get(t, "GET", base+"8080/x", tok, "")
		if status != http.StatusConflict {
			t.Errorf("proxy to a paused sandbox: %d %s", status, body)
		}
	})
}
