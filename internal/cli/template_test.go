package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
)

// fakeBuilds speaks the template build routes of api/openapi.yaml: a POST
// makes the build, whose log and final state the test sets beforehand.
type fakeBuilds struct {
	mu       sync.Mutex
	build    api.TemplateBuild // the final state GET answers
	logs     []api.TemplateBuildLogEntry
	hold     bool          // a followed log stays open until the client leaves
	served   chan struct{} // closed once a followed log sent its entries
	once     sync.Once
	query    url.Values
	files    []string
	registry string
	deletes  int
}

func newFakeBuilds(t *testing.T) (*fakeBuilds, *harness) {
	f := &fakeBuilds{served: make(chan struct{}), build: api.TemplateBuild{
		Id: uuid.New(), Template: "my-app-2", Version: 1, Status: api.TemplateBuildStatusReady,
		RecipeFile: "Dockerfile", Steps: 2, CachedSteps: 1, CreatedAt: time.Now().UTC(),
	}}
	d := float32(2.5)
	f.build.DurationSeconds = &d
	one, two := 1, 2
	cached := true
	f.logs = []api.TemplateBuildLogEntry{
		{Seq: 1, Phase: api.TemplateBuildLogEntryPhaseQueued, Text: "queued on host h1"},
		{Seq: 2, Phase: api.TemplateBuildLogEntryPhaseStep, Step: &one, Steps: &two, Cached: &cached, Text: "Dockerfile:1: FROM minimal"},
		{Seq: 3, Phase: api.TemplateBuildLogEntryPhaseStep, Step: &two, Steps: &two, Text: "Dockerfile:2: RUN make"},
		{Seq: 4, Phase: api.TemplateBuildLogEntryPhaseStep, Step: &two, Steps: &two, Text: "cc -o app main.c"},
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	h := &harness{t: t, env: map[string]string{"HOME": t.TempDir(), "WRENN_API_URL": srv.URL, "WRENN_API_KEY": "wrn_test"}}
	return f, h
}

func (f *fakeBuilds) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b := f.build
	f.mu.Unlock()
	bp := "/v1/templates/" + b.Template + "/builds/" + b.Id.String()
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/templates":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, `{"error":{"code":"invalid_argument","message":"not gzip"}}`, 400)
			return
		}
		var names []string
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		reg, _ := base64.URLEncoding.DecodeString(r.Header.Get("X-Registry-Auth"))
		f.mu.Lock()
		f.query, f.files, f.registry = r.URL.Query(), names, string(reg)
		f.mu.Unlock()
		if r.URL.Query().Get("name") != b.Template {
			http.Error(w, `{"error":{"code":"invalid_argument","message":"unexpected name"}}`, 400)
			return
		}
		b.Status = api.TemplateBuildStatusBuilding
		w.WriteHeader(202)
		_ = json.NewEncoder(w).Encode(b)
	case r.Method == "GET" && r.URL.Path == bp:
		_ = json.NewEncoder(w).Encode(b)
	case r.Method == "GET" && r.URL.Path == "/v1/templates/"+b.Template+"/builds":
		_ = json.NewEncoder(w).Encode(map[string]any{"builds": []api.TemplateBuild{b}})
	case r.Method == "DELETE" && r.URL.Path == bp:
		f.mu.Lock()
		f.deletes++
		f.mu.Unlock()
		w.WriteHeader(204)
	case r.Method == "GET" && r.URL.Path == bp+"/logs":
		for _, e := range f.logs {
			line, _ := json.Marshal(e)
			_, _ = w.Write(append(line, '\n'))
		}
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("follow") == "true" {
			f.once.Do(func() { close(f.served) })
			if f.hold {
				<-r.Context().Done()
			}
		}
	default:
		http.Error(w, `{"error":{"code":"not_found","message":"no route"}}`, 404)
	}
}

// contextDir makes a build context in a directory named "My App_2".
func contextDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "My App_2")
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"Dockerfile": "FROM minimal\nRUN make\n", "src/main.c": "int main(){}", "notes.tmp": "x", ".dockerignore": "*.tmp\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTemplateBuildFollow(t *testing.T) {
	f, h := newFakeBuilds(t)
	dir := contextDir(t)
	r := h.runIn(strings.NewReader("s3cret pass\n"), "template", "build", "--build-arg", "A=1", "--build-arg", "B=x=y", "--registry-login", "127.0.0.1:5000=bob:-", "--registry-login", "ghcr.io=me:tok", dir)
	if r.code != 0 {
		t.Fatalf("build: %+v", r)
	}
	want := "building template my-app-2 version 1 (build " + f.build.Id.String() + ")\n" +
		"[queued] queued on host h1\n" +
		"[1/2] Dockerfile:1: FROM minimal (cached)\n" +
		"[2/2] Dockerfile:2: RUN make\n" +
		"    cc -o app main.c\n" +
		"template my-app-2 version 1 ready in 2.5s (1 of 2 steps cached)\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.query; q.Get("name") != "my-app-2" || strings.Join(q["build_arg"], ",") != "A=1,B=x=y" || q.Has("file") {
		t.Errorf("query = %v", q)
	}
	if got := strings.Join(f.files, ","); got != ".dockerignore,Dockerfile,src/,src/main.c" {
		t.Errorf("uploaded %s", got)
	}
	var reg map[string]map[string]string
	if err := json.Unmarshal([]byte(f.registry), &reg); err != nil || reg["127.0.0.1:5000"]["password"] != "s3cret pass" || reg["127.0.0.1:5000"]["username"] != "bob" || reg["ghcr.io"]["password"] != "tok" {
		t.Errorf("registry logins = %q (%v)", f.registry, err)
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret") {
		t.Error("the password was printed")
	}
}

func TestTemplateBuildFailure(t *testing.T) {
	f, h := newFakeBuilds(t)
	msg, code, step := "Dockerfile:2: RUN make: exit status 2\nmake: *** No rule to make target", "invalid_argument", 2
	f.build.Status, f.build.Error, f.build.ErrorCode, f.build.CurrentStep = api.TemplateBuildStatusFailed, &msg, &code, &step
	r := h.run("template", "build", "--name", "my-app-2", contextDir(t))
	if r.code != 1 {
		t.Fatalf("failed build exited %d: %+v", r.code, r)
	}
	want := "wrenn: template my-app-2 version 1 failed at step 2/2 after 2.5s (invalid_argument):\n  Dockerfile:2: RUN make: exit status 2\n  make: *** No rule to make target\n"
	if r.stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
	}
	if !strings.Contains(r.stdout, "    cc -o app main.c\n") || strings.Contains(r.stdout, "ready") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

// TestTemplateBuildInterrupt: Ctrl-C (the context ending) cancels the
// build with DELETE; with --detach it does not.
func TestTemplateBuildInterrupt(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprint("detach=", detach), func(t *testing.T) {
			f, h := newFakeBuilds(t)
			f.hold = true
			f.build.Status = api.TemplateBuildStatusBuilding
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-f.served
				cancel()
			}()
			args := []string{"template", "build", contextDir(t)}
			if detach {
				args = append(args, "--detach")
			}
			var out, errOut bytes.Buffer
			code := Run(ctx, args, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return h.env[k] }})
			f.mu.Lock()
			deletes := f.deletes
			f.mu.Unlock()
			if detach && (code != 0 || deletes != 0 || !strings.Contains(errOut.String(), "template logs my-app-2 "+f.build.Id.String()+" -f")) {
				t.Errorf("detached: exit %d, %d DELETEs, stderr %q", code, deletes, errOut.String())
			}
			if !detach && (code != exitInterrupted || deletes != 1 || !strings.Contains(errOut.String(), "canceled")) {
				t.Errorf("interrupted: exit %d, %d DELETEs, stderr %q", code, deletes, errOut.String())
			}
		})
	}
}

func TestTemplateBuildArgs(t *testing.T) {
	f, h := newFakeBuilds(t)
	dir := contextDir(t)
	outside := filepath.Join(t.TempDir(), "Dockerfile")
	_ = os.WriteFile(outside, []byte("FROM minimal\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-f", outside, dir}, "must be inside the build context"},
		{[]string{"-f", "nope", dir}, "no such file"},
		{[]string{"--build-arg", "novalue", dir}, "want KEY=value"},
		{[]string{"--registry-login", "ghcr.io=justuser", dir}, "want host=user:password"},
		{[]string{"--registry-login", "a=u:-", "--registry-login", "b=u:-", dir}, "only one password"},
		{[]string{"--name", "x", t.TempDir()}, "no Dockerfile"},
		{[]string{"--name", "x", dir}, "unexpected name (invalid_argument)"},
	}
	for _, c := range cases {
		r := h.runIn(strings.NewReader("pw\n"), append([]string{"template", "build"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("build %v: exit %d, stderr %q; want %q", c.args, r.code, r.stderr, c.want)
		}
	}
	// -f relative to the context; --no-follow prints only the ID.
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile.dev"), []byte("FROM minimal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := h.mustRun("template", "build", "--no-follow", "-f", "Dockerfile.dev", dir)
	f.mu.Lock()
	file := f.query.Get("file")
	f.mu.Unlock()
	if out != f.build.Id.String()+"\n" || file != "Dockerfile.dev" {
		t.Errorf("--no-follow printed %q; file=%q", out, file)
	}
}

func TestTemplateNameFrom(t *testing.T) {
	for in, want := range map[string]string{
		"My App_2":                     "my-app-2",
		"python":                       "python",
		"--Weird..Name--":              "weird-name",
		"日本":                           "",
		"x" + strings.Repeat("y", 50):  "x" + strings.Repeat("y", 39),
		strings.Repeat("a", 39) + "-b": strings.Repeat("a", 39),
	} {
		if got := templateNameFrom(in); got != want {
			t.Errorf("templateNameFrom(%q) = %q, want %q", in, got, want)
		}
	}
	h := newHarness(t)
	root := filepath.Join(t.TempDir(), "日本")
	_ = os.MkdirAll(root, 0o755)
	if r := h.run("template", "build", root); r.code != 1 || !strings.Contains(r.stderr, "pass --name") {
		t.Errorf("unnameable dir: %+v", r)
	}
}

func TestTemplateBuildsLogsCancel(t *testing.T) {
	f, h := newFakeBuilds(t)
	id := f.build.Id.String()
	table := h.mustRun("template", "builds", "my-app-2")
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], id) || !strings.Contains(lines[1], "ready") || !strings.Contains(lines[1], "2.5s") {
		t.Errorf("builds table:\n%s", table)
	}
	var bs []api.TemplateBuild
	if err := json.Unmarshal([]byte(h.mustRun("template", "builds", "my-app-2", "--json")), &bs); err != nil || len(bs) != 1 || bs[0].Id != f.build.Id {
		t.Errorf("builds --json = %v, %v", bs, err)
	}
	logs := h.mustRun("template", "logs", "my-app-2", id)
	if !strings.HasPrefix(logs, "[queued] queued on host h1\n[1/2] ") || strings.Contains(logs, "ready in") {
		t.Errorf("logs:\n%s", logs)
	}
	if logs := h.mustRun("template", "logs", "-f", "my-app-2", id); !strings.HasSuffix(logs, "ready in 2.5s (1 of 2 steps cached)\n") {
		t.Errorf("logs -f:\n%s", logs)
	}
	if out := h.mustRun("template", "cancel", "my-app-2", id); out != id+"\n" || f.deletes != 1 {
		t.Errorf("cancel printed %q, %d DELETEs", out, f.deletes)
	}
	if r := h.run("template", "logs", "my-app-2", uuid.NewString()); r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
		t.Errorf("logs of unknown build: %+v", r)
	}
}

func TestTemplateLsVersionColumn(t *testing.T) {
	h := newHarness(t)
	v := 4
	h.srv.AddTemplate(api.Template{Name: "built", Version: &v, Status: "ready"})
	table := h.mustRun("template", "ls")
	var row string
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, "built ") {
			row = l
		}
	}
	if !strings.Contains(table, "VERSION") || !strings.Contains(table, "STATUS") || !strings.Contains(row, " 4 ") || !strings.Contains(row, "ready") {
		t.Errorf("ls:\n%s", table)
	}
}

// TestBuildPrinterProgressLine: on a terminal each log line first erases
// the progress line, which is redrawn under it.
func TestBuildPrinterProgressLine(t *testing.T) {
	var out bytes.Buffer
	start := time.Now()
	p := &buildPrinter{w: &out, tty: true, start: start, now: func() time.Time { return start.Add(12 * time.Second) }}
	three, seven := 3, 7
	p.entry(api.TemplateBuildLogEntry{Seq: 1, Phase: api.TemplateBuildLogEntryPhaseStep, Step: &three, Steps: &seven, Text: "Dockerfile:5: RUN make"})
	p.entry(api.TemplateBuildLogEntry{Seq: 2, Phase: api.TemplateBuildLogEntryPhaseStep, Step: &three, Steps: &seven, Text: "ok\ndone"})
	p.redraw()
	p.clear()
	want := "[3/7] Dockerfile:5: RUN make\n==> step 3/7, 12s" +
		"\r\x1b[K    ok\n    done\n==> step 3/7, 12s" +
		"\r\x1b[K==> step 3/7, 12s" +
		"\r\x1b[K"
	if out.String() != want {
		t.Errorf("printed %q\nwant    %q", out.String(), want)
	}
}
