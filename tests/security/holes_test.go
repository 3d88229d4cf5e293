package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/capin"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Hole 1: team A's snapshot template is team A's alone. Team B neither
// sees it (under its name or the agent's t-… name) nor creates from it;
// team A still can.
func TestHole1TemplatesStayWithTheirTeam(t *testing.T) {
	world(t)
	// The agent reports its images in heartbeats; before the fix the new
	// template showed up as a base image only then.
	waitHeartbeat(t, w.snapshotAt)

	for who, c := range map[string]client{"team B": w.b.keyClient(), "the admin's team": w.admin.keyClient()} {
		r := c.do(t, "GET", "/v1/templates", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/templates as %s: %s", who, r)
		}
		for _, name := range []string{w.templateA, w.templateAAgent} {
			if strings.Contains(string(r.body), name) {
				t.Errorf("GET /v1/templates as %s lists team A's template %q: %s", who, name, r)
			}
		}
	}
	if r := w.a.keyClient().do(t, "GET", "/v1/templates", nil); !strings.Contains(string(r.body), w.templateA) {
		t.Errorf("team A's own listing lacks its template %s: %s", w.templateA, r)
	}

	cb := w.b.keyClient()
	for _, name := range []string{w.templateA, w.templateAAgent} {
		wantError(t, "B: GET /v1/templates/"+name, cb.do(t, "GET", "/v1/templates/"+name, nil), http.StatusNotFound, "not_found")
		wantError(t, "B: DELETE /v1/templates/"+name, cb.do(t, "DELETE", "/v1/templates/"+name, nil), http.StatusNotFound, "not_found")
		r := cb.do(t, "POST", "/v1/sandboxes", map[string]any{"template": name, "timeout_sec": 300})
		if r.status == http.StatusCreated {
			t.Errorf("team B created a sandbox from team A's template %q: %s", name, r)
			readLeak(t, cb, r.body)
			continue
		}
		wantError(t, "B: create from team A's template "+name, r, http.StatusNotFound, "not_found")
	}

	// The owner still can: a restore of its own snapshot, secret included.
	ca := w.a.keyClient()
	var sb struct {
		ID string `json:"id"`
	}
	ca.json(t, "POST", "/v1/sandboxes", map[string]any{"template": w.templateA, "timeout_sec": 300}, http.StatusCreated, &sb)
	defer ca.do(t, "DELETE", "/v1/sandboxes/"+sb.ID, nil)
	var res struct {
		Stdout string `json:"stdout"`
	}
	ca.json(t, "POST", "/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"cmd": "cat " + secretPath}, http.StatusOK, &res)
	if strings.TrimSpace(res.Stdout) != w.secretA {
		t.Errorf("team A's restore of its own template: secret file holds %q, want %q", res.Stdout, w.secretA)
	}
}

// readLeak shows what a wrongly created sandbox exposes, then removes it.
func readLeak(t *testing.T, c client, created []byte) {
	t.Helper()
	id := jsonField(created, "id")
	if id == "" {
		return
	}
	defer c.do(t, "DELETE", "/v1/sandboxes/"+id, nil)
	r := c.do(t, "POST", "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": "cat " + secretPath})
	if strings.Contains(string(r.body), w.secretA) {
		t.Errorf("... and read team A's secret %q in it", w.secretA)
	}
}

// Hole 2: a regular host runs every team's sandboxes, so re-issuing its
// registration token (which lets a machine register as it) and removing
// it need platform rights, not just the admin role in the team that owns
// the host record.
func TestHole2RegularHostNeedsPlatformRights(t *testing.T) {
	world(t)
	adminSess := client{base: shared.st.URL, cred: w.admin.session, team: w.admin.teamID}

	// Carol: admin (not owner, not platform) of the team owning the host.
	carol := signup(t, "carol")
	adminSess.json(t, "POST", "/v1/teams/"+w.admin.teamID+"/members",
		map[string]string{"email": carol.email, "role": "admin"}, http.StatusCreated, nil)
	carolThere := client{base: shared.st.URL, cred: carol.session, team: w.admin.teamID}
	carolThere.json(t, "GET", "/v1/hosts/"+w.regularHost, nil, http.StatusOK, nil)
	// A key of that team, made without platform rights.
	var k struct {
		Key string `json:"key"`
	}
	adminSess.json(t, "POST", "/v1/api-keys", map[string]string{"name": "team-only"}, http.StatusCreated, &k)
	teamKey := client{base: shared.st.URL, cred: k.Key}

	for who, c := range map[string]client{"a team admin's session": carolThere, "a team API key": teamKey} {
		r := c.do(t, "POST", "/v1/hosts/"+w.regularHost+"/token", nil)
		if r.status == http.StatusCreated {
			t.Errorf("%s re-issued the regular host's registration token (anyone holding it can register as that host and receive every team's sandboxes): %s", who, r)
		} else {
			wantError(t, who+": POST /v1/hosts/{regular}/token", r, http.StatusForbidden, "permission_denied")
		}
		// Never with force, and only while a sandbox is on the host: if
		// the check is missing the delete is refused for that sandbox
		// (409) instead of removing the stack's only host.
		if !sandboxRunning(t, w.sandboxA) {
			t.Errorf("team A's sandbox is not running: the DELETE check is skipped so as not to remove the stack's only host")
			continue
		}
		wantError(t, who+": DELETE /v1/hosts/{regular}", c.do(t, "DELETE", "/v1/hosts/"+w.regularHost, nil), http.StatusForbidden, "permission_denied")
	}

	// The platform admin may: a new token for the live host (harmless:
	// the agent keeps its credential), and removing a spare regular host.
	adminSess.json(t, "POST", "/v1/hosts/"+w.regularHost+"/token", nil, http.StatusCreated, nil)
	var h struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
	}
	adminSess.json(t, "POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusCreated, &h)
	adminSess.json(t, "DELETE", "/v1/hosts/"+h.Host.ID, nil, http.StatusNoContent, nil)
}

func sandboxRunning(t *testing.T, id string) bool {
	t.Helper()
	var sb struct {
		State string `json:"state"`
	}
	w.a.keyClient().json(t, "GET", "/v1/sandboxes/"+id, nil, http.StatusOK, &sb)
	return sb.State == "running"
}

// Hole 3: platform rights are explicit. A team key never carries them
// (even one the platform admin made), only a key made for the purpose by
// a platform admin's session does; nobody else may make such a key; and
// signing up first does not make anyone platform admin.
func TestHole3PlatformRightsAreExplicit(t *testing.T) {
	world(t)
	adminSess := client{base: shared.st.URL, cred: w.admin.session, team: w.admin.teamID}

	var k struct {
		Key string `json:"key"`
	}
	adminSess.json(t, "POST", "/v1/api-keys", map[string]string{"name": "team-only-2"}, http.StatusCreated, &k)
	teamKey := client{base: shared.st.URL, cred: k.Key}
	r := teamKey.do(t, "POST", "/v1/hosts", map[string]string{"type": "regular"})
	if r.status == http.StatusCreated {
		t.Errorf("a team API key (made by the platform admin, without platform rights) added a regular host: %s", r)
		adminSess.do(t, "DELETE", "/v1/hosts/"+jsonField(jsonRaw(r.body, "host"), "id"), nil)
	} else {
		wantError(t, "team key: add a regular host", r, http.StatusForbidden, "permission_denied")
	}

	// A tenant may not give itself platform rights.
	r = w.a.sessionClient().do(t, "POST", "/v1/api-keys", map[string]any{"name": "escalate", "platform": true})
	wantError(t, "team A's owner: create a platform key", r, http.StatusForbidden, "permission_denied")
	if r.status == http.StatusCreated {
		w.a.sessionClient().do(t, "DELETE", "/v1/api-keys/"+jsonField(r.body, "id"), nil)
	}

	// The platform admin may, and that key adds (and removes) a regular host.
	var pk struct {
		Key string `json:"key"`
	}
	adminSess.json(t, "POST", "/v1/api-keys", map[string]any{"name": "platform-ops", "platform": true}, http.StatusCreated, &pk)
	platformKey := client{base: shared.st.URL, cred: pk.Key}
	var h struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
	}
	platformKey.json(t, "POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusCreated, &h)
	platformKey.json(t, "DELETE", "/v1/hosts/"+h.Host.ID, nil, http.StatusNoContent, nil)
}

// Hole 3: outside make up's loopback stack signup is closed unless the
// operator opens it, and the first user to sign up is a tenant like any
// other.
func TestHole3SignupClosedByDefault(t *testing.T) {
	world(t)
	body := map[string]string{"email": "walk-in-" + randHex(4) + "@example.com", "password": "pw-" + randHex(12)}
	cp := startBareCP(t, "")
	r := client{base: cp.URL}.do(t, "POST", "/v1/auth/signup", body)
	if r.status == http.StatusCreated {
		t.Errorf("wrenn-cp without WRENN_SIGNUP let anyone sign up: %s", r)
	} else {
		wantError(t, "signup with WRENN_SIGNUP unset", r, http.StatusForbidden, "permission_denied")
	}

	// A fresh installation with open signup: the first user gets no
	// platform rights.
	open := startBareCP(t, freshDatabase(t), "WRENN_SIGNUP=open")
	first := client{base: open.URL}
	var sess struct {
		Token string `json:"token"`
	}
	first.json(t, "POST", "/v1/auth/signup", body, http.StatusCreated, &sess)
	first.cred = sess.Token
	r = first.do(t, "POST", "/v1/hosts", map[string]string{"type": "regular"})
	if r.status == http.StatusCreated {
		t.Errorf("the first user to sign up added a regular host (platform rights by signing up first): %s", r)
	} else {
		wantError(t, "first signup: add a regular host", r, http.StatusForbidden, "permission_denied")
	}
}

// Hole 3: WRENN_SIGNUP=invite admits only the invited email, once, into
// the inviting team with the invited role; a token is not a skeleton key.
func TestHole3InviteOnlySignup(t *testing.T) {
	world(t)
	cp := startBareCP(t, "", "WRENN_SIGNUP=invite")
	c := client{base: cp.URL}
	invited := "invited-" + randHex(4) + "@example.com"
	var inv struct {
		Token string `json:"token"`
	}
	w.a.sessionClient().json(t, "POST", "/v1/teams/"+w.a.teamID+"/invites",
		map[string]string{"email": invited, "role": "member"}, http.StatusCreated, &inv)

	wantError(t, "invite mode: signup without a token", c.do(t, "POST", "/v1/auth/signup",
		map[string]string{"email": "walk-in-" + randHex(4) + "@example.com", "password": "pw-" + randHex(12)}), http.StatusForbidden, "permission_denied")
	r := c.do(t, "POST", "/v1/auth/signup", map[string]string{"email": "thief-" + randHex(4) + "@example.com", "password": "pw-" + randHex(12), "invite_token": inv.Token})
	if r.status < 400 || r.status >= 500 {
		t.Errorf("someone else's email with team A's invitation: got %s, want a 4xx refusal", r)
	}
	var sess struct {
		Team struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"team"`
	}
	c.json(t, "POST", "/v1/auth/signup", map[string]string{"email": invited, "password": "pw-" + randHex(12), "invite_token": inv.Token}, http.StatusCreated, &sess)
	if sess.Team.ID != w.a.teamID || sess.Team.Role != "member" {
		t.Errorf("invited signup joined team %s as %q, want team A %s as member", sess.Team.ID, sess.Team.Role, w.a.teamID)
	}
	r = c.do(t, "POST", "/v1/auth/signup", map[string]string{"email": "again-" + randHex(4) + "@example.com", "password": "pw-" + randHex(12), "invite_token": inv.Token})
	if r.status < 400 || r.status >= 500 {
		t.Errorf("a used invitation again: got %s, want a 4xx refusal", r)
	}
}

// Hole 4: per-team quotas, set by the platform admin, read by members,
// enforced with 429 quota_exceeded naming the limit.
func TestHole4TeamQuota(t *testing.T) {
	world(t)
	adminSess := client{base: shared.st.URL, cred: w.admin.session, team: w.admin.teamID}
	limits := "/v1/teams/" + w.b.teamID + "/limits"
	cb := w.b.keyClient()

	// Members may not raise their own limits; another team does not see them.
	r := cb.do(t, "PUT", limits, map[string]any{"max_vcpus": 1000})
	wantError(t, "team B's key: PUT its own limits", r, http.StatusForbidden, "permission_denied")
	wantError(t, "team A's key: GET team B's limits", w.a.keyClient().do(t, "GET", limits, nil), http.StatusNotFound, "not_found")

	adminSess.json(t, "PUT", limits, map[string]any{"max_vcpus": 1}, http.StatusOK, nil)
	t.Cleanup(func() {
		adminSess.do(t, "PUT", limits, map[string]any{"max_vcpus": nil})
	})
	var got struct {
		Limits struct {
			MaxVCPUs int `json:"max_vcpus"`
		} `json:"limits"`
	}
	r = cb.json(t, "GET", limits, nil, http.StatusOK, &got)
	if got.Limits.MaxVCPUs != 1 {
		t.Errorf("team B's limits after the admin set max_vcpus 1: %s", r)
	}

	r = cb.do(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "vcpus": 2, "timeout_sec": 120})
	if r.status == http.StatusCreated {
		t.Errorf("team B created a 2-vCPU sandbox over its 1-vCPU limit: %s", r)
		cb.do(t, "DELETE", "/v1/sandboxes/"+jsonField(r.body, "id"), nil)
		return
	}
	wantError(t, "team B over max_vcpus", r, http.StatusTooManyRequests, "quota_exceeded")
	if !strings.Contains(r.errorMessage(), "max_vcpus") {
		t.Errorf("quota error does not name the limit: %s", r)
	}
}

// evilEnvd replaces envd inside a guest (a tenant is root there): it
// kills envd, takes its port and answers every call with 64 MiB of zeros
// declared as a protobuf reply. Double fork and setsid: it must outlive
// envd, which started it, and not share the group envd's supervisor kills.
const evilEnvd = `import os, socketserver, time, http.server
if os.fork(): os._exit(0)
os.setsid()
if os.fork(): os._exit(0)
def kill_envd():
    for pid in os.listdir('/proc'):
        try:
            if pid.isdigit() and open('/proc/%s/comm' % pid).read().strip() == 'envd':
                os.kill(int(pid), 9)
        except OSError:
            pass
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def answer(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header('Content-Type', 'application/proto')
        self.send_header('Content-Length', str(64 << 20))
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(bytes(1 << 20))
        except OSError:
            pass
    do_GET = do_POST = do_PUT = do_DELETE = answer
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True
for _ in range(300):
    kill_envd()
    try:
        srv = S(('0.0.0.0', 49983), H)
        break
    except OSError:
        time.sleep(0.05)
srv.serve_forever()
`

// Hole 5: a tenant replaces envd in its guest with one that answers with
// far more than any reply should hold. The control plane reads at most its
// bound and answers 507 resource_exhausted, instead of reading it all
// (memory) and failing on it with a 500.
func TestHole5HostileEnvd(t *testing.T) {
	world(t)
	ca := w.a.keyClient()
	var sb struct {
		ID string `json:"id"`
	}
	ca.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 600}, http.StatusCreated, &sb)
	defer ca.do(t, "DELETE", "/v1/sandboxes/"+sb.ID, nil)
	path := "/v1/sandboxes/" + sb.ID
	ca.json(t, "PUT", path+"/files?path=/tmp/evil.py", strings.NewReader(evilEnvd), http.StatusOK, nil)
	ca.json(t, "POST", path+"/exec", map[string]any{"cmd": "python3 /tmp/evil.py >/tmp/evil.log 2>&1", "user": "root", "background": true}, http.StatusOK, nil)

	// Until the impostor holds the port the real envd may still answer,
	// or nobody (503 unavailable, while envd is down).
	deadline := time.Now().Add(time.Minute)
	for {
		start := time.Now()
		r := ca.do(t, "GET", path+"/files/stat?path=/tmp", nil)
		if r.status != http.StatusOK && r.status != http.StatusServiceUnavailable {
			t.Logf("stat through the hostile envd: %s in %s", r, time.Since(start).Round(time.Millisecond))
			wantError(t, "stat through a hostile envd", r, http.StatusInsufficientStorage, "resource_exhausted")
			if msg := r.errorMessage(); !strings.Contains(strings.ToLower(msg), "limit") && !strings.Contains(msg, "MiB") {
				t.Errorf("the refusal does not say which bound was passed: %q", msg)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hostile envd never took over within a minute (last reply %s)", r)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Hole 6: a byoc host's address may not point the control plane at
// loopback, link-local, private or unspecified addresses. Checked on a
// control plane with default configuration (devstack may allow private
// addresses for its own loopback agent), through the registration
// endpoint an agent (or anyone holding a token) calls.
func TestHole6BYOCAddressSSRF(t *testing.T) {
	world(t)
	cp := startBareCP(t, "")
	mallory := signup(t, "mallory")
	reg := hostagentv1connect.NewHostRegistryServiceClient(http.DefaultClient, cp.URL)
	for _, addr := range []string{"127.0.0.1:1", "10.0.0.1:1", "169.254.169.254:80", "[::1]:1", "192.168.1.1:50051",
		"100.64.0.1:1", "[::ffff:127.0.0.1]:1", "[fd00::1]:1", "localhost:1"} {
		var h struct {
			Token string `json:"registration_token"`
		}
		mallory.keyClient().json(t, "POST", "/v1/hosts", map[string]string{"type": "byoc"}, http.StatusCreated, &h)
		err := register(t, reg, h.Token, addr)
		switch {
		case err == nil:
			t.Errorf("a byoc host registered with address %s: the control plane will dial it for team %s", addr, mallory.teamID)
		case connect.CodeOf(err) != connect.CodeInvalidArgument:
			t.Errorf("register a byoc host at %s: %v, want invalid_argument", addr, err)
		}
	}
	// A public address still registers (the check is not a blanket
	// refusal); nothing dials it here.
	var h struct {
		Token string `json:"registration_token"`
	}
	mallory.keyClient().json(t, "POST", "/v1/hosts", map[string]string{"type": "byoc"}, http.StatusCreated, &h)
	if err := register(t, reg, h.Token, "1.1.1.1:50051"); err != nil {
		t.Errorf("register a byoc host at a public address: %v", err)
	}
}

// register plays an agent registering with tok at addr.
func register(t *testing.T, reg hostagentv1connect.HostRegistryServiceClient, tok, addr string) error {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = reg.Register(ctx, connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: tok, Address: addr,
		Specs:  &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 2, MemoryBytes: 4 << 30, Vmm: "qemu", AgentVersion: "security-test"},
		CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
	}))
	return err
}

// Hole 7: a tenant's allow_out cannot open what the operator's egress
// ceiling closes (private ranges, link-local metadata endpoints), at
// create time or while the sandbox runs; narrowing is still allowed.
func TestHole7EgressCeiling(t *testing.T) {
	world(t)
	ca := w.a.keyClient()
	path := "/v1/sandboxes/" + w.sandboxA + "/network"
	t.Cleanup(func() { ca.do(t, "PUT", path, map[string]any{"allow_internet": true}) })
	for _, cidr := range []string{"10.0.0.0/8", "169.254.169.254/32", "172.16.5.0/24", "127.0.0.1/32"} {
		r := ca.do(t, "PUT", path, map[string]any{"allow_internet": true, "allow_out": []string{cidr}})
		wantError(t, "PUT network allow_out "+cidr, r, http.StatusBadRequest, "invalid_argument")
	}
	// Narrowing: denying more is always fine.
	ca.json(t, "PUT", path, map[string]any{"allow_internet": true, "deny_out": []string{"10.0.0.0/8"}}, http.StatusOK, nil)

	cb := w.b.keyClient()
	r := cb.do(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 120,
		"network": map[string]any{"allow_out": []string{"169.254.169.254/32"}}})
	if r.status == http.StatusCreated {
		cb.do(t, "DELETE", "/v1/sandboxes/"+jsonField(r.body, "id"), nil)
	}
	wantError(t, "create with allow_out 169.254.169.254/32", r, http.StatusBadRequest, "invalid_argument")
}

// Hole 9: a control plane can serve TLS with a certificate from the
// cluster CA, and its registration tokens carry that CA's fingerprint, so
// an agent's first contact trusts only the right CA (the agent's pinning
// itself is tested in internal/agent/registration).
func TestHole9RegistrationTokenPinsTheCA(t *testing.T) {
	world(t)
	cp := startBareCP(t, "", "WRENN_TLS=self-signed")
	var caPEM string
	withDB(t, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, "SELECT cert_pem FROM cluster_ca").Scan(&caPEM); err != nil {
			t.Fatalf("read the cluster CA: %v", err)
		}
	})
	block, _ := pem.Decode([]byte(caPEM))
	if block == nil {
		t.Fatal("cluster CA: no PEM block")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	pinned := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := pinned.Get(cp.URL + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with only the cluster CA trusted: %v", err)
	}
	resp.Body.Close()

	// A tenant's byoc host token, asked for over that TLS connection.
	mallory := signup(t, "tls-tenant")
	req, _ := http.NewRequest("POST", cp.URL+"/v1/hosts", strings.NewReader(`{"type":"byoc"}`))
	req.Header.Set("Authorization", "Bearer "+mallory.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err = pinned.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Token string `json:"registration_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("add a byoc host over TLS: %d %v", resp.StatusCode, err)
	}
	_, pin, err := capin.SplitToken(h.Token)
	if err != nil || pin != capin.Hash(ca) {
		t.Errorf("registration token %q: pin %q (err %v), want the cluster CA's %s", h.Token, pin, err, capin.Hash(ca))
	}
}

// Hole 11: Prometheus metrics are not served on the public API port (they
// name hosts, teams' activity and rate-limit state); they are on the
// separate WRENN_METRICS_ADDR listener.
func TestHole11MetricsNotOnAPIPort(t *testing.T) {
	world(t)
	cp := startBareCP(t, "")
	for _, base := range []string{shared.st.URL, cp.URL} {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s/metrics without credentials: %d (%d bytes, e.g. %.80q), want 404 or 401", base, resp.StatusCode, len(b), b)
		}
	}
	// Where they are instead: the stack's WRENN_METRICS_ADDR.
	resp, err := http.Get(fmt.Sprintf("http://%s/metrics", shared.metricsAddr))
	if err != nil {
		t.Fatalf("metrics listener WRENN_METRICS_ADDR=%s: %v", shared.metricsAddr, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "wrenn_") {
		t.Errorf("metrics listener WRENN_METRICS_ADDR=%s: %d, %d bytes without wrenn_ metrics", shared.metricsAddr, resp.StatusCode, len(b))
	}
}

// jsonField returns a top-level string field of a JSON object, or "".
func jsonField(b []byte, name string) string {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return ""
	}
	s, _ := m[name].(string)
	return s
}

// jsonRaw returns a top-level field of a JSON object, re-encoded.
func jsonRaw(b []byte, name string) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return m[name]
}
