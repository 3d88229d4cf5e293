package recipe

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func mustParse(t *testing.T, file, data string, args map[string]string) *Recipe {
	t.Helper()
	r, err := Parse(file, []byte(data), nil, args)
	if err != nil {
		t.Fatalf("Parse(%s): %v\n%s", file, err, data)
	}
	return r
}

// checkErr asserts err is a recipe *Error, an invalid argument, and that
// its text contains want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *recipe.Error", err, err)
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("error %v is not ErrInvalidArgument", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func envMap(kvs []KV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestInstructions(t *testing.T) {
	tests := []struct {
		name  string
		body  string // after "FROM minimal\n"
		check func(t *testing.T, r *Recipe)
	}{
		{"run shell", "RUN apt-get update && apt-get install -y python3\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[0]
			if s.Kind != KindRun || s.Shell != "apt-get update && apt-get install -y python3" || s.Exec != nil || s.Line != 2 || s.File != "Dockerfile" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"run exec", `RUN ["echo", "a b", "$HOME"]` + "\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[0]
			if s.Shell != "" || !reflect.DeepEqual(s.Exec, []string{"echo", "a b", "$HOME"}) {
				t.Fatalf("step %+v", s)
			}
		}},
		{"run not expanded", "ENV X=1\nRUN echo $X ${X}\n", func(t *testing.T, r *Recipe) {
			if s := r.Steps[1]; s.Shell != "echo $X ${X}" || envMap(s.Env)["X"] != "1" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"copy", "COPY --chown=user:user --chmod=0755 a.txt /opt/a.txt\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[0]
			if s.Kind != KindCopy || !reflect.DeepEqual(s.Sources, []string{"a.txt"}) || s.Dest != "/opt/a.txt" || s.Chown != "user:user" || s.Chmod != "0755" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"copy json form and relative dest", "WORKDIR /srv\nCOPY [\"a b.txt\", \"c\", \"sub/\"]\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[1]
			if !reflect.DeepEqual(s.Sources, []string{"a b.txt", "c"}) || s.Dest != "/srv/sub/" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"copy dot dest is a dir", "WORKDIR /app\nCOPY . .\n", func(t *testing.T, r *Recipe) {
			if s := r.Steps[1]; s.Dest != "/app/" || !reflect.DeepEqual(s.Sources, []string{"."}) {
				t.Fatalf("step %+v", s)
			}
		}},
		{"copy leading slash source is the context root", "COPY /src/x.py /x.py\n", func(t *testing.T, r *Recipe) {
			if s := r.Steps[0]; !reflect.DeepEqual(s.Sources, []string{"src/x.py"}) {
				t.Fatalf("step %+v", s)
			}
		}},
		{"copy expands", "ARG D=/opt/app\nENV F=main.py\nCOPY --chown=${OWNER:-user} $F ${D}/\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[2]
			if !reflect.DeepEqual(s.Sources, []string{"main.py"}) || s.Dest != "/opt/app/" || s.Chown != "user" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"add local", "ADD conf.ini /etc/app/\n", func(t *testing.T, r *Recipe) {
			if s := r.Steps[0]; s.Kind != KindAdd || s.Dest != "/etc/app/" {
				t.Fatalf("step %+v", s)
			}
		}},
		{"env both forms", "ENV A=1 B=\"two words\"\nENV C three words here\n", func(t *testing.T, r *Recipe) {
			if got := r.Steps[0].Vars; !reflect.DeepEqual(got, []KV{{"A", "1"}, {"B", "two words"}}) {
				t.Fatalf("vars %v", got)
			}
			if got := r.Steps[1].Vars; !reflect.DeepEqual(got, []KV{{"C", "three words here"}}) {
				t.Fatalf("vars %v", got)
			}
			env := envMap(r.Env)
			if env["A"] != "1" || env["B"] != "two words" || env["C"] != "three words here" {
				t.Fatalf("final env %v", r.Env)
			}
		}},
		{"env sees previous values only", "ENV A=1\nENV A=2 B=$A\n", func(t *testing.T, r *Recipe) {
			if got := envMap(r.Env); got["A"] != "2" || got["B"] != "1" {
				t.Fatalf("env %v", got)
			}
		}},
		{"env path extends default", "ENV PATH=/opt/venv/bin:$PATH\n", func(t *testing.T, r *Recipe) {
			if got := envMap(r.Env)["PATH"]; got != "/opt/venv/bin:"+DefaultPath {
				t.Fatalf("PATH %q", got)
			}
		}},
		{"workdir relative and expanded", "WORKDIR /a\nWORKDIR b\nENV D=c\nWORKDIR $D/../d\nRUN pwd\n", func(t *testing.T, r *Recipe) {
			if r.Steps[1].Value != "/a/b" || r.Steps[3].Value != "/a/b/d" || r.Steps[4].Workdir != "/a/b/d" || r.Workdir != "/a/b/d" {
				t.Fatalf("steps %+v", r.Steps)
			}
		}},
		{"user", "USER user:user\nRUN id\n", func(t *testing.T, r *Recipe) {
			if r.Steps[0].Kind != KindUser || r.Steps[1].RunAs != "user:user" || r.RunAs != "user:user" || r.User != "" {
				t.Fatalf("recipe %+v", r)
			}
		}},
		{"arg", "ARG A B=2\nRUN true\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[0]
			if s.Kind != KindArg || !reflect.DeepEqual(s.Vars, []KV{{"B", "2"}}) {
				t.Fatalf("step %+v", s)
			}
			env := envMap(r.Steps[1].Env)
			if _, ok := env["A"]; ok || env["B"] != "2" {
				t.Fatalf("run env %v", env)
			}
			if _, ok := envMap(r.Env)["B"]; ok {
				t.Fatalf("ARG leaked into the image env %v", r.Env)
			}
		}},
		{"label expose maintainer", "LABEL a=b \"c d\"=e\nEXPOSE 8000 9000/udp\nMAINTAINER me\n", func(t *testing.T, r *Recipe) {
			if !reflect.DeepEqual(r.Labels, map[string]string{"a": "b", "c d": "e", "maintainer": "me"}) || !reflect.DeepEqual(r.Expose, []int{8000, 9000}) || len(r.Steps) != 0 {
				t.Fatalf("recipe %+v", r)
			}
		}},
		{"comments and blank lines", "# a comment\n\n   # indented comment\nRUN true # not a comment\n", func(t *testing.T, r *Recipe) {
			if len(r.Steps) != 1 || r.Steps[0].Shell != "true # not a comment" || r.Steps[0].Line != 5 {
				t.Fatalf("steps %+v", r.Steps)
			}
		}},
		{"continuations", "RUN apt-get update \\\n    && apt-get install -y \\\n# comment inside\n       curl\nRUN next\n", func(t *testing.T, r *Recipe) {
			s := r.Steps[0]
			if s.Line != 2 || !strings.Contains(s.Shell, "apt-get update") || !strings.HasSuffix(s.Shell, "curl") || strings.Contains(s.Shell, "comment") || strings.Contains(s.Shell, "\\") {
				t.Fatalf("step %+v", s)
			}
			if r.Steps[1].Line != 6 {
				t.Fatalf("line of the next step %d, want 6", r.Steps[1].Line)
			}
		}},
		{"lowercase instructions", "run echo hi\ncopy a /a\n", func(t *testing.T, r *Recipe) {
			if r.Steps[0].Kind != KindRun || r.Steps[1].Kind != KindCopy {
				t.Fatalf("steps %+v", r.Steps)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, "Dockerfile", "FROM minimal\n"+tt.body, nil))
		})
	}
}

func TestEscapeDirective(t *testing.T) {
	r := mustParse(t, "Dockerfile", "# escape=`\nFROM minimal\nRUN echo a `\n  b\nCOPY C:\\dir\\x /x\n", nil)
	if s := r.Steps[0]; s.Shell != "echo a   b" || s.Line != 3 {
		t.Fatalf("step %+v", s)
	}
	if s := r.Steps[1]; s.Sources[0] != `C:\dir\x` {
		t.Fatalf("with ` as escape, \\ is literal: %+v", s)
	}
}

func TestRefused(t *testing.T) {
	tests := []struct{ df, want string }{
		{"FROM minimal\nHEALTHCHECK CMD curl -f http://localhost/\n", "Dockerfile:2: HEALTHCHECK is not supported (use the readiness check of wrenn.yaml)"},
		{"FROM minimal\nRUN true\nSHELL [\"/bin/bash\", \"-c\"]\n", "Dockerfile:3: SHELL is not supported"},
		{"FROM minimal\nONBUILD RUN true\n", "Dockerfile:2: ONBUILD is not supported"},
		{"FROM minimal\nSTOPSIGNAL SIGTERM\n", "Dockerfile:2: STOPSIGNAL is not supported"},
		{"FROM minimal\nVOLUME /data\n", "Dockerfile:2: VOLUME is not supported"},
		{"FROM minimal\nBOGUS x\n", "Dockerfile:2: unknown instruction BOGUS"},
		{"FROM minimal AS a\nRUN true\nFROM minimal\n", "Dockerfile:3: a second FROM"},
		{"FROM minimal\nCOPY --from=build /x /x\n", "Dockerfile:2: COPY --from is not supported"},
		{"FROM minimal\nCOPY --link a /a\n", "Dockerfile:2: COPY --link is not supported"},
		{"FROM minimal\nADD --checksum=sha256:00 a /a\n", "Dockerfile:2: ADD --checksum is not supported"},
		{"FROM minimal\nRUN --mount=type=cache,target=/root/.cache pip install x\n", "Dockerfile:2: RUN --mount is not supported"},
		{"FROM minimal\nRUN --network=none true\n", "Dockerfile:2: RUN --network is not supported"},
		{"FROM minimal\nRUN <<EOF\necho hi\nEOF\n", "Dockerfile:2: heredocs"},
		{"FROM minimal\nCOPY <<EOF /x\nhi\nEOF\n", "Dockerfile:2: heredocs"},
		{"FROM minimal\nRUN echo $((1 << 2))\n", "Dockerfile:2: unterminated heredoc (heredocs are not supported"},
		{"FROM minimal\nADD https://example.com/x.tgz /x\n", "Dockerfile:2: ADD from a URL"},
		{"FROM minimal\nADD git@github.com:a/b.git /b\n", "Dockerfile:2: ADD from a URL"},
		{"FROM minimal\nADD app.tar.gz /app/\n", "Dockerfile:2: ADD of an archive"},
		{"FROM minimal\nCOPY ../secret /x\n", "Dockerfile:2: COPY: source \"../secret\" leaves the build context"},
		{"FROM minimal\nCOPY a b /dest\n", "Dockerfile:2: COPY with more than one source needs a destination directory ending in /"},
		{"FROM minimal\nCOPY a\n", "Dockerfile:2: COPY needs at least one source and a destination"},
		{"FROM minimal\nCOPY --chmod=u+x a /a\n", "Dockerfile:2: COPY --chmod=u+x: only octal modes"},
		{"FROM minimal\nCOPY --chown=a:b:c a /a\n", "Dockerfile:2: COPY --chown=a:b:c"},
		{"RUN true\n", "Dockerfile:1: RUN before FROM"},
		{"ARG X=1\n", "Dockerfile: no FROM instruction"},
		{"FROM --platform=linux/arm64 minimal\n", "Dockerfile:1: FROM --platform is not supported"},
		{"FROM minimal\nEXPOSE 8000-8010\n", "Dockerfile:2: EXPOSE: invalid port \"8000-8010\""},
		{"FROM minimal\nENV A\n", "Dockerfile:2: ENV must have two arguments"},
		{"FROM minimal\nENV 1A=x\n", "Dockerfile:2: ENV: invalid name \"1A\""},
		{"FROM minimal\nRUN\n", "Dockerfile:2: RUN needs a command"},
		{"FROM minimal\nCMD [\"a\", 1]\n", "Dockerfile:2:"},
		{"FROM minimal\nWORKDIR $UNSET\n", "Dockerfile:2: WORKDIR is empty after expansion"},
		{"FROM python:3.12\n", "Dockerfile:1: \"python:3.12\": a template version is a number"},
		{"FROM library/python\n", "Dockerfile:1: \"library/python\" does not name its registry"},
		{"FROM minimal\nRUN echo ${X:?unset}\nENV Y=${X:?required}\n", "Dockerfile:3: expanding"},
		{"", "Dockerfile:"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Parse("Dockerfile", []byte(tt.df), nil, nil)
			checkErr(t, err, tt.want)
		})
	}
}

func TestFromExpansionAndMetaArgs(t *testing.T) {
	df := "ARG REG=127.0.0.1:5000\nARG TAG=1\nFROM ${REG}/app:${TAG}\nARG TAG\nRUN echo\n"
	r := mustParse(t, "Dockerfile", df, nil)
	if r.From.Image != "127.0.0.1:5000/app:1" || r.From.Line != 3 {
		t.Fatalf("from %+v", r.From)
	}
	if got := envMap(r.Steps[1].Env)["TAG"]; got != "1" {
		t.Fatalf("ARG TAG after FROM should take the global default, got %q", got)
	}
	if _, ok := envMap(r.Steps[1].Env)["REG"]; ok {
		t.Fatalf("a global ARG not redeclared must not be in the stage: %v", r.Steps[1].Env)
	}
	r = mustParse(t, "Dockerfile", df, map[string]string{"TAG": "2", "REG": "reg.example.com"})
	if r.From.Image != "reg.example.com/app:2" || envMap(r.Steps[1].Env)["TAG"] != "2" {
		t.Fatalf("overridden: from %+v env %v", r.From, r.Steps[1].Env)
	}
	r = mustParse(t, "Dockerfile", "FROM minimal\nARG TARGETARCH\nRUN echo\n", nil)
	if got := envMap(r.Steps[1].Env)["TARGETARCH"]; got != "amd64" {
		t.Fatalf("TARGETARCH %q", got)
	}
}

func TestArgEnvPrecedenceAndOverride(t *testing.T) {
	df := "FROM minimal\nARG V=default\nARG W\nRUN echo $V\nENV V=fromenv\nRUN echo $V\nCOPY $V /x\n"
	r := mustParse(t, "Dockerfile", df, nil)
	if got := envMap(r.Steps[2].Env); got["V"] != "default" {
		t.Fatalf("ARG default: %v", got)
	}
	if _, ok := envMap(r.Steps[2].Env)["W"]; ok {
		t.Fatalf("an ARG without value or build arg is unset")
	}
	if got := envMap(r.Steps[4].Env)["V"]; got != "fromenv" {
		t.Fatalf("ENV must win over ARG: %q", got)
	}
	if got := r.Steps[5].Sources[0]; got != "fromenv" {
		t.Fatalf("COPY expanded with ENV: %q", got)
	}
	r = mustParse(t, "Dockerfile", df, map[string]string{"V": "given", "W": "w", "NOPE": "x"})
	if got := envMap(r.Steps[2].Env); got["V"] != "given" || got["W"] != "w" {
		t.Fatalf("build args override: %v", got)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "NOPE") {
		t.Fatalf("warnings %v", r.Warnings)
	}
}

func TestBaseEnv(t *testing.T) {
	r, err := ParseWith("Dockerfile", []byte("FROM docker.io/library/python:3.12\nENV PATH=/venv/bin:$PATH\nRUN x\n"), nil,
		Options{BaseEnv: []string{"PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"}})
	if err != nil {
		t.Fatal(err)
	}
	env := envMap(r.Steps[1].Env)
	if env["PATH"] != "/venv/bin:/usr/local/bin:/usr/bin" || env["LANG"] != "C.UTF-8" {
		t.Fatalf("env %v", env)
	}
	if r.Env[0] != (KV{"PATH", "/venv/bin:/usr/local/bin:/usr/bin"}) || r.Env[1] != (KV{"LANG", "C.UTF-8"}) {
		t.Fatalf("final env keeps the base order: %v", r.Env)
	}
}

func TestStartCommand(t *testing.T) {
	tests := []struct {
		name, lines string
		want        *Command
	}{
		{"none", "", nil},
		{"cmd shell", "CMD python3 -m http.server\n", &Command{Shell: "python3 -m http.server"}},
		{"cmd exec", "CMD [\"python3\", \"-m\", \"http.server\"]\n", &Command{Exec: []string{"python3", "-m", "http.server"}}},
		{"entrypoint exec + cmd exec", "ENTRYPOINT [\"node\"]\nCMD [\"server.js\"]\n", &Command{Exec: []string{"node", "server.js"}}},
		{"cmd before entrypoint still combines", "CMD [\"server.js\"]\nENTRYPOINT [\"node\"]\n", &Command{Exec: []string{"node", "server.js"}}},
		{"entrypoint exec + cmd shell", "ENTRYPOINT [\"tini\", \"--\"]\nCMD node server.js\n", &Command{Exec: []string{"tini", "--", "/bin/sh", "-c", "node server.js"}}},
		{"entrypoint shell ignores cmd", "ENTRYPOINT node server.js\nCMD [\"ignored\"]\n", &Command{Shell: "node server.js"}},
		{"entrypoint exec alone", "ENTRYPOINT [\"/app\", \"serve\"]\n", &Command{Exec: []string{"/app", "serve"}}},
		{"last cmd wins", "CMD a\nCMD b\n", &Command{Shell: "b"}},
		{"empty exec", "CMD []\n", nil},
		{"not expanded", "ENV P=1\nCMD echo $P\n", &Command{Shell: "echo $P"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustParse(t, "Dockerfile", "FROM minimal\n"+tt.lines, nil)
			if !reflect.DeepEqual(r.Start, tt.want) {
				t.Fatalf("start %#v, want %#v", r.Start, tt.want)
			}
		})
	}
	if got := (Command{Shell: "a b"}).Argv(); !reflect.DeepEqual(got, []string{"/bin/sh", "-c", "a b"}) {
		t.Fatalf("argv %v", got)
	}
	if got := (Command{Exec: []string{"a", "b"}}).Argv(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("argv %v", got)
	}
}

func TestParseFrom(t *testing.T) {
	tests := []struct {
		in   string
		want From
		err  string
	}{
		{in: "minimal", want: From{Template: "minimal"}},
		{in: "my-tpl", want: From{Template: "my-tpl"}},
		{in: "my-tpl:3", want: From{Template: "my-tpl", Version: 3}},
		{in: "my_tpl:latest", want: From{Template: "my_tpl"}},
		{in: "127.0.0.1:5000/app:1", want: From{Image: "127.0.0.1:5000/app:1"}},
		{in: "localhost/app", want: From{Image: "localhost/app:latest"}},
		{in: "localhost:5000/team/app:v2", want: From{Image: "localhost:5000/team/app:v2"}},
		{in: "docker.io/library/python:3.12-slim", want: From{Image: "index.docker.io/library/python:3.12-slim"}},
		{in: "ghcr.io/x/y@sha256:" + strings.Repeat("ab", 32), want: From{Image: "ghcr.io/x/y@sha256:" + strings.Repeat("ab", 32)}},
		{in: "", err: "needs"},
		{in: "python:3.12", err: "a template version is a number"},
		{in: "my-tpl:0", err: "a template version is a number"},
		{in: "Minimal", err: "not a template name"},
		{in: "library/python", err: "does not name its registry"},
		{in: "my-tpl@sha256:abc", err: "not by digest"},
		{in: "ghcr.io/X/Y:1", err: "invalid image reference"},
		{in: "ghcr.io/x/y@sha256:short", err: "invalid image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFrom(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestFormDetection(t *testing.T) {
	for name, want := range map[string]form{
		"Dockerfile": formDockerfile, "sub/Dockerfile.dev": formDockerfile, "app.dockerfile": formDockerfile,
		"Containerfile": formDockerfile, "wrenn.yaml": formNative, "x.yml": formNative, "wrenn.json": formNative,
		"recipe.txt": formUnknown,
	} {
		if got := formOf(name); got != want {
			t.Errorf("formOf(%s) = %v, want %v", name, got, want)
		}
	}
	_, err := Parse("recipe.txt", []byte("FROM minimal"), nil, nil)
	checkErr(t, err, "recipe.txt: unknown recipe kind")
}

func TestLimits(t *testing.T) {
	_, err := Parse("Dockerfile", []byte("FROM minimal\n"+strings.Repeat("# pad\n", MaxRecipeBytes/6+1)), nil, nil)
	checkErr(t, err, "more than the limit of 1048576")
	_, err = Parse("Dockerfile", []byte("FROM minimal\nRUN echo "+strings.Repeat("x", MaxLineBytes)+"\n"), nil, nil)
	checkErr(t, err, "Dockerfile:2: line is")
	var b strings.Builder
	b.WriteString("FROM minimal\n")
	for i := 0; i < MaxSteps+1; i++ {
		fmt.Fprintf(&b, "RUN echo %d\n", i)
	}
	_, err = Parse("Dockerfile", []byte(b.String()), nil, nil)
	checkErr(t, err, fmt.Sprintf("Dockerfile:%d: more than %d steps", MaxSteps+2, MaxSteps))
}

func TestCacheText(t *testing.T) {
	base := Step{
		Kind: KindCopy, File: "Dockerfile", Line: 3, Text: "COPY a /b",
		Sources: []string{"a"}, Dest: "/b", Chown: "user", Chmod: "0644",
		Env: []KV{{"A", "1"}}, Workdir: "/w", RunAs: "user",
	}
	ref := base.CacheText()
	same := base
	same.File, same.Line, same.Text = "wrenn.yaml", 9, "copy: {src: a, dest: /b}"
	if same.CacheText() != ref {
		t.Fatalf("where a step was written must not change its cache text")
	}
	if base.CacheText() != ref {
		t.Fatalf("not stable")
	}
	variants := map[string]func(*Step){
		"kind":    func(s *Step) { s.Kind = KindAdd },
		"sources": func(s *Step) { s.Sources = []string{"a", "c"} },
		"dest":    func(s *Step) { s.Dest = "/b/" },
		"chown":   func(s *Step) { s.Chown = "root" },
		"chmod":   func(s *Step) { s.Chmod = "0755" },
		"env":     func(s *Step) { s.Env = []KV{{"A", "2"}} },
		"env key": func(s *Step) { s.Env = []KV{{"B", "1"}} },
		"workdir": func(s *Step) { s.Workdir = "/" },
		"user":    func(s *Step) { s.RunAs = "root" },
		"shell":   func(s *Step) { s.Shell = "x" },
		"exec":    func(s *Step) { s.Exec = []string{"x"} },
		"vars":    func(s *Step) { s.Vars = []KV{{"A", "1"}} },
		"value":   func(s *Step) { s.Value = "x" },
		// A separator inside a value must not alias another split.
		"split": func(s *Step) { s.Sources = []string{"a\",\"b"} },
	}
	seen := map[string]string{ref: "base"}
	for name, mut := range variants {
		s := base
		s.Sources = append([]string(nil), base.Sources...)
		mut(&s)
		got := s.CacheText()
		if prev, dup := seen[got]; dup {
			t.Errorf("variant %q has the same cache text as %q: %s", name, prev, got)
		}
		seen[got] = name
	}
	// From parsing: an ENV change upstream changes a later RUN's text.
	a := mustParse(t, "Dockerfile", "FROM minimal\nENV X=1\nRUN make\n", nil)
	b := mustParse(t, "Dockerfile", "FROM minimal\nENV X=2\nRUN make\n", nil)
	c := mustParse(t, "Dockerfile", "FROM minimal\n\nENV   X=1\n\nRUN  make\n", nil)
	if a.Steps[1].CacheText() == b.Steps[1].CacheText() {
		t.Fatalf("RUN cache text ignores the ENV in force")
	}
	if a.Steps[1].CacheText() != c.Steps[1].CacheText() {
		t.Fatalf("reformatting changed the RUN cache text:\n%s\n%s", a.Steps[1].CacheText(), c.Steps[1].CacheText())
	}
}

func TestErrorType(t *testing.T) {
	e := &Error{File: "Dockerfile", Line: 7, Msg: "x"}
	if e.Error() != "Dockerfile:7: x" || (&Error{File: "wrenn.yaml", Msg: "y"}).Error() != "wrenn.yaml: y" {
		t.Fatalf("%q", e.Error())
	}
	if !errors.Is(e, errdefs.ErrInvalidArgument) {
		t.Fatalf("not invalid argument")
	}
}

func TestParserWarningsAndChownForms(t *testing.T) {
	r := mustParse(t, "Dockerfile", "FROM minimal\nRUN a \\\n\n  b\nCOPY --chown=user: x /x\nCOPY --chown=1000:1000 y /y\n", nil)
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "Dockerfile:4: Empty continuation line") {
		t.Fatalf("warnings %q", r.Warnings)
	}
	if r.Steps[1].Chown != "user:" || r.Steps[2].Chown != "1000:1000" {
		t.Fatalf("chown %+v", r.Steps[1:])
	}
}
