package rest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

func (a *fakeAgent) UploadBuildContext(_ context.Context, stream *connect.ClientStream[hostagentv1.UploadBuildContextRequest]) (*connect.Response[hostagentv1.UploadBuildContextResponse], error) {
	var n int64
	var id string
	for stream.Receive() {
		id = stream.Msg().GetBuildId()
		n += int64(len(stream.Msg().GetData()))
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.uploads == nil {
		a.uploads = map[string]int64{}
	}
	a.uploads[id] = n
	a.calls["UploadBuildContext"]++
	a.mu.Unlock()
	return connect.NewResponse(&hostagentv1.UploadBuildContextResponse{Bytes: n}), nil
}

func (a *fakeAgent) BuildTemplate(ctx context.Context, req *connect.Request[hostagentv1.BuildTemplateRequest], stream *connect.ServerStream[hostagentv1.BuildTemplateResponse]) error {
	a.mu.Lock()
	a.calls["BuildTemplate"]++
	build := a.build
	a.mu.Unlock()
	if build == nil {
		return connect.NewError(connect.CodeUnimplemented, nil)
	}
	return build(ctx, req.Msg, stream.Send)
}

// okBuild logs two steps and succeeds; creds collects what the host got.
func okBuild(creds *[]*hostagentv1.RegistryCredential, mu *sync.Mutex) func(context.Context, *hostagentv1.BuildTemplateRequest, func(*hostagentv1.BuildTemplateResponse) error) error {
	return func(_ context.Context, req *hostagentv1.BuildTemplateRequest, send func(*hostagentv1.BuildTemplateResponse) error) error {
		if creds != nil {
			mu.Lock()
			*creds = append(*creds, req.GetCredentials()...)
			mu.Unlock()
		}
		for i, text := range []string{"Dockerfile:2: RUN make", "compiling", "Dockerfile:3: COPY . /app"} {
			step := int32(1 + i/2)
			if err := send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Log{Log: &hostagentv1.BuildLog{Step: step, Steps: 2, Phase: "step", Text: text}}}); err != nil {
				return err
			}
		}
		return send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: &hostagentv1.BuildResult{
			ImageBytes: 300 << 20, DiskBytes: 310 << 20, Digest: "sha256:abc", Steps: 2, Vcpus: 2, MemoryMb: 1024,
		}}})
	}
}

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (e *sbEnv) postBuild(t *testing.T, key, query string, body []byte, hdr http.Header) *http.Response {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	if hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "application/x-tar")
	}
	return e.doHeader(t, "POST", "/v1/templates?"+query, key, body, hdr)
}

// waitBuild follows a build's log to its end and returns it and the build.
func (e *sbEnv) waitBuild(t *testing.T, key, name, id string) (api.TemplateBuild, []api.TemplateBuildLogEntry) {
	t.Helper()
	resp := e.do(t, "GET", "/v1/templates/"+name+"/builds/"+id+"/logs?follow=true", key, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow build: %d", resp.StatusCode)
	}
	var lines []api.TemplateBuildLogEntry
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l api.TemplateBuildLogEntry
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	var b api.TemplateBuild
	e.doJSON(t, "GET", "/v1/templates/"+name+"/builds/"+id, key, nil, http.StatusOK, &b)
	return b, lines
}

// TestTemplateBuildRefusals: bad input is a 4xx with its code before any
// host is asked.
func TestTemplateBuildRefusals(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	key := env.team.Key
	good := tarOf(t, map[string]string{"Dockerfile": "FROM minimal\nRUN true\n"})
	auth := func(s string) http.Header { return http.Header{"X-Registry-Auth": {s}} }
	for _, c := range []struct {
		name, query string
		body        []byte
		hdr         http.Header
		status      int
		code, says  string
	}{
		{"bad name", "name=Bad_Name", good, nil, 400, "invalid_argument", "name"},
		{"no name", "", good, nil, 400, "invalid_argument", "name"},
		{"json body", "name=a", good, http.Header{"Content-Type": {"application/json"}}, 400, "invalid_argument", "Content-Type"},
		{"empty body", "name=a", nil, nil, 400, "invalid_argument", "empty body"},
		{"not a tar", "name=a", []byte("this is not a tar archive at all, just text that goes on and on"), nil, 400, "invalid_argument", ""},
		{"no recipe", "name=a", tarOf(t, map[string]string{"main.py": "print(1)"}), nil, 400, "invalid_argument", "no recipe"},
		{"named recipe missing", "name=a&file=build%2FDockerfile", good, nil, 400, "invalid_argument", "build/Dockerfile"},
		{"bad line", "name=a", tarOf(t, map[string]string{"Dockerfile": "FROM minimal\nHEALTHCHECK CMD true\n"}), nil, 400, "invalid_argument", "Dockerfile:2"},
		{"escaping context", "name=a", tarOf(t, map[string]string{"Dockerfile": "FROM minimal\n", "../evil": "x"}), nil, 400, "invalid_argument", ""},
		{"bad build arg", "name=a&build_arg=novalue", good, nil, 400, "invalid_argument", "build_arg"},
		{"bad auth", "name=a", good, auth("%%%"), 400, "invalid_argument", "X-Registry-Auth"},
		{"auth without user", "name=a", good, auth(base64.StdEncoding.EncodeToString([]byte(`{"r.io":{}}`))), 400, "invalid_argument", "X-Registry-Auth"},
		{"unknown FROM", "name=a", tarOf(t, map[string]string{"Dockerfile": "FROM nosuch\n"}), nil, 404, "not_found", "nosuch"},
		{"built-in name", "name=minimal", good, nil, 409, "already_exists", "built-in"},
		{"no key", "name=a", good, nil, 401, "unauthenticated", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := key
			if c.code == "unauthenticated" {
				k = ""
			}
			resp := env.postBuild(t, k, c.query, c.body, c.hdr)
			msg := wantError(t, resp, c.status, c.code)
			if !strings.Contains(msg, c.says) {
				t.Errorf("message %q does not say %q", msg, c.says)
			}
		})
	}
	if n := agent.Calls("BuildTemplate") + agent.Calls("UploadBuildContext"); n != 0 {
		t.Errorf("a refused build reached the host (%d calls)", n)
	}
	resp := env.do(t, "GET", "/v1/templates/a/builds/not-a-uuid", key, nil)
	wantError(t, resp, 404, "not_found")
	resp = env.do(t, "GET", "/v1/templates/a/builds", key, nil)
	wantError(t, resp, 404, "not_found")
}

// TestTemplateBuildLifecycle: a build runs on the host, its log streams,
// its template gets versions; credentials reach the host only; a
// failed build says why; a cancelled one stops; another team sees none.
func TestTemplateBuildLifecycle(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	var mu sync.Mutex
	var creds []*hostagentv1.RegistryCredential
	agent.mu.Lock()
	agent.build = okBuild(&creds, &mu)
	agent.mu.Unlock()
	key := env.team.Key
	ctxTar := tarOf(t, map[string]string{"Dockerfile": "FROM minimal\nRUN make\nCOPY . /app\n", "Makefile": "all:\n"})
	secret := "s3cret-registry-password"
	hdr := http.Header{"X-Registry-Auth": {base64.URLEncoding.EncodeToString([]byte(`{"registry.example.com":{"username":"bob","password":"` + secret + `"}}`))}}

	var first api.TemplateBuild
	resp := env.postBuild(t, key, "name=app&build_arg=A%3D1", ctxTar, hdr)
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("build: %d %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&first); err != nil {
		t.Fatal(err)
	}
	if first.Version != 1 || first.Status != api.TemplateBuildStatusBuilding || first.From == nil || *first.From != "minimal" {
		t.Errorf("accepted build %+v", first)
	}
	done, lines := env.waitBuild(t, key, "app", first.Id.String())
	if done.Status != api.TemplateBuildStatusReady || done.ImageBytes == nil || *done.ImageBytes != 300<<20 {
		t.Fatalf("finished build %+v", done)
	}
	var texts []string
	for _, l := range lines {
		texts = append(texts, l.Text)
	}
	if !strings.Contains(strings.Join(texts, "\n"), "compiling") || lines[0].Phase != api.TemplateBuildLogEntryPhaseQueued {
		t.Errorf("log %q: want the queued line, then the host's lines", texts)
	}
	// The log again from an offset: only what follows it.
	resp = env.do(t, "GET", "/v1/templates/app/builds/"+first.Id.String()+"/logs?offset=2", key, nil)
	body, _ := io.ReadAll(resp.Body)
	if n := strings.Count(string(body), "\n"); n != len(lines)-2 {
		t.Errorf("log from offset 2: %d lines, want %d", n, len(lines)-2)
	}
	mu.Lock()
	if len(creds) != 1 || creds[0].GetRegistry() != "registry.example.com" || creds[0].GetPassword() != secret {
		t.Errorf("the host got credentials %v", creds)
	}
	mu.Unlock()
	var leaked int
	if err := env.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM template_build_logs WHERE text LIKE '%'||$1||'%') +
		(SELECT count(*) FROM template_builds WHERE row_to_json(template_builds)::text LIKE '%'||$1||'%') +
		(SELECT count(*) FROM audit_logs WHERE row_to_json(audit_logs)::text LIKE '%'||$1||'%')`, secret).Scan(&leaked); err != nil {
		t.Fatal(err)
	}
	if leaked != 0 {
		t.Errorf("the registry password is stored in %d rows", leaked)
	}

	var tpl api.Template
	env.doJSON(t, "GET", "/v1/templates/app", key, nil, http.StatusOK, &tpl)
	if tpl.Version == nil || *tpl.Version != 1 || tpl.BuildId == nil || *tpl.BuildId != first.Id || tpl.Builtin {
		t.Errorf("template after its first build %+v", tpl)
	}
	// A second version; creates take the newest, name:1 the first.
	resp = env.postBuild(t, key, "name=app", ctxTar, nil)
	var second api.TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&second); err != nil || second.Version != 2 {
		t.Fatalf("second build: %v %+v", err, second)
	}
	env.waitBuild(t, key, "app", second.Id.String())
	env.doJSON(t, "GET", "/v1/templates/app", key, nil, http.StatusOK, &tpl)
	if tpl.Version == nil || *tpl.Version != 2 {
		t.Errorf("template after its second build %+v", tpl)
	}
	var v1, v2 string
	if err := env.Pool.QueryRow(context.Background(), `SELECT
		(SELECT agent_name FROM template_builds WHERE id = $1), (SELECT agent_name FROM template_builds WHERE id = $2)`,
		first.Id, second.Id).Scan(&v1, &v2); err != nil {
		t.Fatal(err)
	}
	for tplName, want := range map[string]string{"app": v2, "app:1": v1} {
		before := agent.Calls("CreateSandbox")
		sb := env.create(t, map[string]any{"template": tplName})
		var got string
		if err := env.Pool.QueryRow(context.Background(), `SELECT template FROM sandboxes WHERE id = $1`, sb.Id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !agent.Has(sb.Id) || agent.Calls("CreateSandbox") != before+1 {
			t.Errorf("create from %s: not on the host", tplName)
		}
		if tmpl := agent.lastTemplate(); tmpl != want {
			t.Errorf("create from %s asked the host for template %q, want %q", tplName, tmpl, want)
		}
		if got != tplName {
			t.Errorf("create from %s recorded template %q", tplName, got)
		}
	}
	resp = env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"template": "app:9"})
	wantError(t, resp, 404, "not_found")
	var list struct{ Builds []api.TemplateBuild }
	env.doJSON(t, "GET", "/v1/templates/app/builds", key, nil, http.StatusOK, &list)
	if len(list.Builds) != 2 || list.Builds[0].Version != 2 {
		t.Errorf("builds %+v: want 2, newest first", list.Builds)
	}

	// A warm template (a snapshot) of 512 MiB: a create naming no size
	// restores it at that size.
	agent.mu.Lock()
	agent.build = func(_ context.Context, _ *hostagentv1.BuildTemplateRequest, send func(*hostagentv1.BuildTemplateResponse) error) error {
		return send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: &hostagentv1.BuildResult{
			ImageBytes: 1 << 20, Digest: "sha256:warm", Steps: 1, Snapshot: true, Vcpus: 1, MemoryMb: 512, DiskMb: 2048,
		}}})
	}
	agent.mu.Unlock()
	resp = env.postBuild(t, key, "name=warm", ctxTar, nil)
	var warm api.TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&warm); err != nil {
		t.Fatal(err)
	}
	env.waitBuild(t, key, "warm", warm.Id.String())
	env.create(t, map[string]any{"template": "warm"})
	agent.mu.Lock()
	if agent.lastMem != 512 {
		t.Errorf("create from a 512 MiB warm template asked the host for %d MiB", agent.lastMem)
	}
	agent.build = okBuild(nil, nil)
	agent.mu.Unlock()

	// Another team sees none of it and cannot build on it.
	other := env.newTeam(t, "other")
	for _, p := range []string{"/v1/templates/app", "/v1/templates/app/builds", "/v1/templates/app/builds/" + first.Id.String(),
		"/v1/templates/app/builds/" + first.Id.String() + "/logs"} {
		wantError(t, env.do(t, "GET", p, other.Key, nil), 404, "not_found")
	}
	wantError(t, env.postBuild(t, other.Key, "name=mine", tarOf(t, map[string]string{"Dockerfile": "FROM app\n"}), nil), 404, "not_found")
	wantError(t, env.do(t, "POST", "/v1/sandboxes", other.Key, map[string]any{"template": "app:1"}), 404, "not_found")

	// A failing step: the build fails with the host's words and code.
	agent.mu.Lock()
	agent.build = func(_ context.Context, _ *hostagentv1.BuildTemplateRequest, send func(*hostagentv1.BuildTemplateResponse) error) error {
		_ = send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Log{Log: &hostagentv1.BuildLog{Step: 1, Steps: 1, Phase: "step", Text: "make: *** no rule"}}})
		return errdefs.ToConnect(errdefs.New(errdefs.ErrFailedPrecondition, "Dockerfile:2: RUN make: exited with code 2\nmake: *** no rule"))
	}
	agent.mu.Unlock()
	resp = env.postBuild(t, key, "name=app", ctxTar, nil)
	var bad api.TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&bad); err != nil {
		t.Fatal(err)
	}
	bad, _ = env.waitBuild(t, key, "app", bad.Id.String())
	if bad.Status != api.TemplateBuildStatusFailed || bad.ErrorCode == nil || *bad.ErrorCode != "failed_precondition" ||
		bad.Error == nil || !strings.Contains(*bad.Error, "Dockerfile:2") {
		t.Errorf("failed build %+v", bad)
	}
	env.doJSON(t, "GET", "/v1/templates/app", key, nil, http.StatusOK, &tpl)
	if *tpl.Version != 2 {
		t.Errorf("a failed build changed the current version to %d", *tpl.Version)
	}

	// Cancel: the host's build ends, the build says canceled.
	started := make(chan struct{})
	agent.mu.Lock()
	agent.build = func(ctx context.Context, _ *hostagentv1.BuildTemplateRequest, _ func(*hostagentv1.BuildTemplateResponse) error) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}
	agent.mu.Unlock()
	resp = env.postBuild(t, key, "name=app", ctxTar, nil)
	var slow api.TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&slow); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the build never reached the host")
	}
	wantError(t, env.do(t, "DELETE", "/v1/templates/app/builds/"+slow.Id.String(), other.Key, nil), 404, "not_found")
	if resp := env.do(t, "DELETE", "/v1/templates/app/builds/"+slow.Id.String(), key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	slow, _ = env.waitBuild(t, key, "app", slow.Id.String())
	if slow.Status != api.TemplateBuildStatusCanceled {
		t.Errorf("cancelled build %+v", slow)
	}
	wantError(t, env.do(t, "DELETE", "/v1/templates/app/builds/"+slow.Id.String(), key, nil), 409, "already_exists")
}

func (a *fakeAgent) ExportTemplate(_ context.Context, req *connect.Request[hostagentv1.ExportTemplateRequest], stream *connect.ServerStream[hostagentv1.TemplateChunk]) error {
	a.count("ExportTemplate")
	a.mu.Lock()
	a.setTeam("ExportTemplate", req.Msg.GetTeamId())
	has := a.templates[req.Msg.GetName()]
	a.mu.Unlock()
	if !has {
		return connect.NewError(connect.CodeNotFound, errors.New("no such template"))
	}
	for _, part := range []string{"packed:", req.Msg.GetName()} {
		if err := stream.Send(&hostagentv1.TemplateChunk{Data: []byte(part)}); err != nil {
			return err
		}
	}
	return nil
}

func (a *fakeAgent) ImportTemplate(_ context.Context, stream *connect.ClientStream[hostagentv1.ImportTemplateRequest]) (*connect.Response[hostagentv1.ImportTemplateResponse], error) {
	a.count("ImportTemplate")
	var name, digest, team string
	var data []byte
	for stream.Receive() {
		if name == "" {
			name, digest, team = stream.Msg().GetName(), stream.Msg().GetDigest(), stream.Msg().GetTeamId()
		}
		data = append(data, stream.Msg().GetData()...)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if string(data) != "packed:"+name || digest == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("import %s: got %q with digest %q", name, data, digest))
	}
	a.mu.Lock()
	a.setTeam("ImportTemplate", team)
	a.templates[name] = true
	a.mu.Unlock()
	return connect.NewResponse(&hostagentv1.ImportTemplateResponse{}), nil
}

// TestBuiltTemplateCopiedToAnotherHost: a sandbox of a built template
// placed on a host without it gets it copied from its home host first (the
// digest the build recorded goes with it); deleting the template removes
// the copy too.
func TestBuiltTemplateCopiedToAnotherHost(t *testing.T) {
	env := newSandboxEnv(t)
	home := env.addHost(t)
	home.mu.Lock()
	home.build = func(_ context.Context, req *hostagentv1.BuildTemplateRequest, send func(*hostagentv1.BuildTemplateResponse) error) error {
		home.mu.Lock()
		home.templates[req.GetName()] = true
		home.mu.Unlock()
		return send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: &hostagentv1.BuildResult{
			ImageBytes: 1 << 20, Digest: "sha256:feed", Steps: 1,
		}}})
	}
	home.mu.Unlock()
	key := env.team.Key
	resp := env.postBuild(t, key, "name=app", tarOf(t, map[string]string{"Dockerfile": "FROM minimal\nRUN true\n"}), nil)
	var b api.TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if b, _ = env.waitBuild(t, key, "app", b.Id.String()); b.Status != api.TemplateBuildStatusReady {
		t.Fatalf("build %+v", b)
	}
	// The home host is full now; another host takes the sandbox.
	if _, err := env.Pool.Exec(context.Background(), `UPDATE hosts SET memory_bytes = 64 << 20, memory_available_bytes = 0 WHERE id = $1`, home.HostID); err != nil {
		t.Fatal(err)
	}
	other := env.addHost(t)
	sb := env.create(t, map[string]any{"template": "app"})
	if !other.Has(sb.Id) || home.Has(sb.Id) {
		t.Fatalf("sandbox %s: on the other host %v, on home %v", sb.Id, other.Has(sb.Id), home.Has(sb.Id))
	}
	if home.Calls("ExportTemplate") != 1 || other.Calls("ImportTemplate") != 1 {
		t.Errorf("export %d, import %d: want one copy", home.Calls("ExportTemplate"), other.Calls("ImportTemplate"))
	}
	if got := other.Team("ImportTemplate"); got != env.team.ID.String() {
		t.Errorf("import for team %q", got)
	}
	// Its heartbeat lists the copy: the next sandbox there needs none.
	var agentName string
	if err := env.Pool.QueryRow(context.Background(), `SELECT agent_name FROM template_builds WHERE id = $1`, b.Id).Scan(&agentName); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Pool.Exec(context.Background(), `UPDATE hosts SET templates = ARRAY[$2::text] WHERE id = $1`, other.HostID, agentName); err != nil {
		t.Fatal(err)
	}
	env.create(t, map[string]any{"template": "app"})
	if n := other.Calls("ImportTemplate"); n != 1 {
		t.Errorf("%d imports: the second create copied again", n)
	}
	// Deleting the template removes the copy as well as the original.
	for _, id := range []string{sb.Id} {
		env.doJSON(t, "DELETE", "/v1/sandboxes/"+id, key, nil, http.StatusNoContent, nil)
	}
	resp = env.do(t, "DELETE", "/v1/templates/app", key, nil)
	if resp.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("delete template: %d %s", resp.StatusCode, body)
	}
	if home.Calls("DeleteTemplate") != 1 || other.Calls("DeleteTemplate") != 1 {
		t.Errorf("deletes: home %d, other %d; want one each", home.Calls("DeleteTemplate"), other.Calls("DeleteTemplate"))
	}
}
