package recipe

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// files is a FileReader over a map.
type files map[string]string

func (f files) ReadFile(name string) ([]byte, error) {
	s, ok := f[name]
	if !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, "%s: not found", name)
	}
	return []byte(s), nil
}

const fullYAML = `from: minimal
steps:
  - run: apt-get update && apt-get install -y python3-pandas
  - copy: {src: [app/], dest: /home/user/app, chown: "user:user"}
  - env: {PORT: "8000", HOME: /home/user}
  - workdir: $HOME/app
  - user: user
  - run: [python3, -c, "print(1)"]
start: python3 -m http.server $PORT
ready:
  port: 8000
  timeout: 90s
resources: {vcpus: 2, memory_mb: 1024, disk_mb: 4096}
user: user
labels: {team: data}
`

func TestNativeFull(t *testing.T) {
	r := mustParse(t, "wrenn.yaml", fullYAML, nil)
	if r.From != (From{Template: "minimal", Line: 1}) {
		t.Fatalf("from %+v", r.From)
	}
	kinds := []Kind{}
	for _, s := range r.Steps {
		kinds = append(kinds, s.Kind)
		if s.File != "wrenn.yaml" {
			t.Fatalf("file %q", s.File)
		}
	}
	if !reflect.DeepEqual(kinds, []Kind{KindRun, KindCopy, KindEnv, KindWorkdir, KindUser, KindRun}) {
		t.Fatalf("kinds %v", kinds)
	}
	if s := r.Steps[0]; s.Shell != "apt-get update && apt-get install -y python3-pandas" || s.Line != 3 {
		t.Fatalf("run %+v", s)
	}
	if s := r.Steps[1]; !reflect.DeepEqual(s.Sources, []string{"app/"}) || s.Dest != "/home/user/app" || s.Chown != "user:user" || s.Line != 4 {
		t.Fatalf("copy %+v", s)
	}
	if s := r.Steps[3]; s.Value != "/home/user/app" {
		t.Fatalf("workdir expanded from env: %+v", s)
	}
	if s := r.Steps[5]; !reflect.DeepEqual(s.Exec, []string{"python3", "-c", "print(1)"}) || s.RunAs != "user" || s.Workdir != "/home/user/app" || envMap(s.Env)["PORT"] != "8000" {
		t.Fatalf("last run %+v", s)
	}
	if r.Start == nil || r.Start.Shell != "python3 -m http.server $PORT" {
		t.Fatalf("start %+v", r.Start)
	}
	if r.Ready == nil || *r.Ready != (Ready{Port: 8000, Timeout: 90 * time.Second}) {
		t.Fatalf("ready %+v", r.Ready)
	}
	if r.Resources != (Resources{VCPUs: 2, MemoryMB: 1024, DiskMB: 4096}) || r.User != "user" || r.Labels["team"] != "data" {
		t.Fatalf("recipe %+v", r)
	}
}

func TestNativeJSON(t *testing.T) {
	js := "{\n\t\"from\": \"docker.io/library/node:22\",\n\t\"steps\": [{\"copy\": {\"src\": \"package.json\", \"dest\": \"/app/\"}}, {\"run\": \"npm ci\"}],\n\t\"start\": [\"node\", \"server.js\"],\n\t\"ready\": {\"http\": \"http://127.0.0.1:3000/health\"}\n}\n"
	r := mustParse(t, "wrenn.json", js, nil)
	if r.From.Image != "index.docker.io/library/node:22" || len(r.Steps) != 2 || r.Steps[1].Line != 3 {
		t.Fatalf("recipe %+v", r)
	}
	if !reflect.DeepEqual(r.Start, &Command{Exec: []string{"node", "server.js"}}) || r.Ready.HTTP != "http://127.0.0.1:3000/health" || r.Ready.Timeout != DefaultReadyTimeout {
		t.Fatalf("start %+v ready %+v", r.Start, r.Ready)
	}
}

func TestNativeReadyKinds(t *testing.T) {
	for _, tt := range []struct {
		ready string
		want  Ready
	}{
		{"port: 8080", Ready{Port: 8080, Timeout: DefaultReadyTimeout}},
		{"http: https://localhost:8443/ok\n  timeout: 2m", Ready{HTTP: "https://localhost:8443/ok", Timeout: 2 * time.Minute}},
		{"command: test -f /tmp/ok", Ready{Command: "test -f /tmp/ok", Timeout: DefaultReadyTimeout}},
	} {
		r := mustParse(t, "wrenn.yaml", "from: minimal\nstart: ./serve\nready:\n  "+tt.ready+"\n", nil)
		if *r.Ready != tt.want {
			t.Errorf("%q: ready %+v, want %+v", tt.ready, *r.Ready, tt.want)
		}
	}
}

func TestNativeErrors(t *testing.T) {
	tests := []struct{ y, want string }{
		{"from: minimal\nbogus: 1\n", `wrenn.yaml:2: unknown key "bogus"`},
		{"from: minimal\nstart: x\nready: {port: 1, colour: red}\n", `wrenn.yaml:3: unknown key "colour"`},
		{"from: minimal\nresources: {cpus: 2}\n", `wrenn.yaml:2: unknown key "cpus"`},
		{"from: minimal\nsteps:\n  - copy: {src: a, dest: /a, mode: 1}\n", `wrenn.yaml:3: unknown key "mode"`},
		{"from: minimal\nsteps:\n  - healthcheck: x\n", `wrenn.yaml:3: unknown step "healthcheck"`},
		{"from: minimal\nsteps:\n  - {run: a, user: b}\n", "wrenn.yaml:3: a step is one of"},
		{"from: minimal\nfrom: other\n", `wrenn.yaml:2: key "from" given twice`},
		{"steps: []\n", "wrenn.yaml: missing from"},
		{"from: minimal\ndockerfile: Dockerfile\n", "wrenn.yaml:1: give either from or dockerfile"},
		{"from: python:3.12\n", "wrenn.yaml:1: from: \"python:3.12\": a template version is a number"},
		{"from: minimal\nready: {port: 80}\n", "wrenn.yaml:2: a readiness check needs a start command"},
		{"from: minimal\nstart: x\nready: {}\n", "wrenn.yaml:3: ready needs exactly one of port, http and command"},
		{"from: minimal\nstart: x\nready: {port: 80, command: true}\n", "wrenn.yaml:3: ready needs exactly one"},
		{"from: minimal\nstart: x\nready: {port: 70000}\n", "wrenn.yaml:3: ready.port: 70000 is not a port"},
		{"from: minimal\nstart: x\nready: {port: \"80\"}\n", "wrenn.yaml:3: ready.port: expected a whole number"},
		{"from: minimal\nstart: x\nready: {http: \"ftp://x/\"}\n", "wrenn.yaml:3: ready.http: \"ftp://x/\" is not an http"},
		{"from: minimal\nstart: x\nready:\n  port: 80\n  timeout: forever\n", "wrenn.yaml:5: ready.timeout: \"forever\" is not a duration"},
		{"from: minimal\nstart: x\nready:\n  port: 80\n  timeout: 2h\n", "wrenn.yaml:5: ready.timeout"},
		{"from: minimal\nresources: {vcpus: 0}\n", "wrenn.yaml:2: resources.vcpus must be at least 1"},
		{"from: minimal\nresources: {memory_mb: 1.5}\n", "wrenn.yaml:2: resources.memory_mb: expected a whole number"},
		{"from: minimal\nstart: []\n", "wrenn.yaml:2: start is empty"},
		{"from: minimal\nstart: {a: b}\n", "wrenn.yaml:2: start: expected a string"},
		{"from: minimal\nuser: \"a b\"\n", "wrenn.yaml:2: user: invalid user name"},
		{"from: minimal\nsteps:\n  - copy: {src: ../x, dest: /x}\n", "wrenn.yaml:3: COPY: source \"../x\" leaves the build context"},
		{"from: minimal\nsteps:\n  - copy: {dest: /x}\n", "wrenn.yaml:3: copy needs src and dest"},
		{"from: minimal\nsteps:\n  - env: {1BAD: x}\n", "wrenn.yaml:3: env: invalid name"},
		{"from: minimal\nsteps:\n  - env: {A: [1]}\n", "wrenn.yaml:3: env.A: expected a string"},
		{"from: minimal\nsteps: {run: x}\n", "wrenn.yaml:2: steps: expected a list"},
		{"- from\n", "wrenn.yaml:1: expected a mapping"},
		{"from: [\n", "wrenn.yaml:1: did not find expected node content"},
		{"from: minimal\n\tsteps: []\n", "wrenn.yaml:2: found a tab character"},
		{"", "wrenn.yaml: empty recipe"},
		{"from: minimal\ndockerfile: ../Dockerfile\n", "wrenn.yaml:1: give either"},
		{"dockerfile: ../Dockerfile\n", "wrenn.yaml:1: dockerfile: \"../Dockerfile\" is not a file of the build context"},
		{"dockerfile: Dockerfile\n", "wrenn.yaml:1: dockerfile: no build context"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Parse("wrenn.yaml", []byte(tt.y), nil, nil)
			checkErr(t, err, tt.want)
		})
	}
}

func TestNativeWithDockerfile(t *testing.T) {
	ctx := files{
		"docker/Dockerfile": "FROM docker.io/library/python:3.12-slim\nARG PIP=pip\nENV APP=/app\nWORKDIR $APP\nCOPY req.txt .\nRUN $PIP install -r req.txt\nCMD [\"python3\", \"app.py\"]\nHEALTHCHECK CMD true\n",
	}
	y := "dockerfile: docker/Dockerfile\nsteps:\n  - run: echo after\n"
	_, err := Parse("wrenn.yaml", []byte(y), ctx, nil)
	checkErr(t, err, "Dockerfile:8: HEALTHCHECK is not supported")

	ctx["docker/Dockerfile"] = strings.Replace(ctx["docker/Dockerfile"], "HEALTHCHECK CMD true\n", "", 1)
	r, err := Parse("wrenn.yaml", []byte(y+"ready: {port: 5000}\n"), ctx, map[string]string{"PIP": "pip3"})
	if err != nil {
		t.Fatal(err)
	}
	if r.From.Image != "index.docker.io/library/python:3.12-slim" || r.From.Line != 1 {
		t.Fatalf("from %+v", r.From)
	}
	last := r.Steps[len(r.Steps)-1]
	if last.File != "wrenn.yaml" || last.Line != 3 || last.Workdir != "/app" || envMap(last.Env)["APP"] != "/app" {
		t.Fatalf("the native steps continue the Dockerfile's state: %+v", last)
	}
	if first := r.Steps[0]; first.File != "docker/Dockerfile" || first.Line != 2 {
		t.Fatalf("Dockerfile steps name their file: %+v", first)
	}
	if s := r.Steps[3]; s.Kind != KindCopy || s.Dest != "/app/" {
		t.Fatalf("copy %+v", s)
	}
	if s := r.Steps[4]; s.Shell != "$PIP install -r req.txt" || envMap(s.Env)["PIP"] != "pip3" {
		t.Fatalf("run %+v", s)
	}
	if !reflect.DeepEqual(r.Start, &Command{Exec: []string{"python3", "app.py"}}) || r.Ready.Port != 5000 {
		t.Fatalf("CMD is the start command when start is not given: %+v %+v", r.Start, r.Ready)
	}
	r, err = Parse("wrenn.yaml", []byte(y+"start: [gunicorn, app:app]\n"), ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Start, &Command{Exec: []string{"gunicorn", "app:app"}}) {
		t.Fatalf("start overrides CMD: %+v", r.Start)
	}
	_, err = Parse("wrenn.yaml", []byte("dockerfile: missing/Dockerfile\n"), ctx, nil)
	checkErr(t, err, "wrenn.yaml:1: dockerfile: reading missing/Dockerfile")
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatal("not invalid argument")
	}
}

func TestNativeNoQuoteProcessing(t *testing.T) {
	r := mustParse(t, "wrenn.yaml", "from: minimal\nsteps:\n  - env: {MSG: \"it's $USER's\", USER: me}\n  - env: {B: \"${MSG}\"}\n", nil)
	if got := envMap(r.Env); got["MSG"] != "it's 's" || got["B"] != "it's 's" {
		t.Fatalf("env %v", got)
	}
}
