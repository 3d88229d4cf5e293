package recipe

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// state is the build state while a recipe is read: what Docker keeps
// between the instructions of a stage.
type state struct {
	opts Options
	lex  *shell.Lex

	// metaArgs are the ARGs before FROM (and the predefined platform
	// arguments): usable in FROM, and by a later `ARG NAME` as its default.
	metaArgs map[string]string
	// args are the ARGs declared in the stage that have a value.
	args map[string]string
	// declared records every ARG name seen, to warn about unused build args.
	declared map[string]bool
	// env is ENV in force: the base environment, then ENV instructions.
	env     map[string]string
	envKeys []string // first-set order, for Recipe.Env

	workdir string
	user    string

	fromSet bool
	from    From
	steps   []Step

	cmd, entrypoint *command
	start           *Command
	ready           *Ready
	readyFile       string
	readyLine       int
	resources       Resources
	envdUser        string
	labels          map[string]string
	expose          []int
	warnings        []string
}

// command is a CMD or ENTRYPOINT as written.
type command struct {
	json  bool
	words []string // exec form
	shell string   // shell form
}

func newParser(opts Options) *state {
	arch := opts.Arch
	if arch == "" {
		arch = "amd64"
	}
	s := &state{
		opts: opts,
		lex:  shell.NewLex('\\'),
		metaArgs: map[string]string{
			"TARGETPLATFORM": "linux/" + arch, "TARGETOS": "linux", "TARGETARCH": arch, "TARGETVARIANT": "",
			"BUILDPLATFORM": "linux/" + arch, "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": "",
		},
		args:     map[string]string{},
		declared: map[string]bool{},
		env:      map[string]string{},
		workdir:  "/",
		labels:   map[string]string{},
	}
	for _, kv := range opts.BaseEnv {
		k, v, _ := strings.Cut(kv, "=")
		if k != "" {
			s.setEnv(k, v)
		}
	}
	if _, ok := s.env["PATH"]; !ok {
		s.setEnv("PATH", DefaultPath)
	}
	return s
}

func (s *state) setEnv(k, v string) {
	if _, ok := s.env[k]; !ok {
		s.envKeys = append(s.envKeys, k)
	}
	s.env[k] = v
}

// scope is what $VAR expands against: ARG values, then ENV over them (an
// ENV always wins over an ARG of the same name, as in Docker).
type scope struct{ s *state }

func (e scope) Get(k string) (string, bool) {
	if v, ok := e.s.env[k]; ok {
		return v, true
	}
	v, ok := e.s.args[k]
	return v, ok
}

func (e scope) Keys() []string {
	keys := slices.Collect(maps.Keys(e.s.args))
	for k := range e.s.env {
		if _, ok := e.s.args[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// metaScope is what FROM and pre-FROM ARG defaults expand against.
type metaScope map[string]string

func (m metaScope) Get(k string) (string, bool) { v, ok := m[k]; return v, ok }
func (m metaScope) Keys() []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}

// expand expands $VAR references in one word, removing quotes as Docker does.
func (s *state) expand(file string, line int, word string) (string, error) {
	out, _, err := s.lex.ProcessWord(word, scope{s})
	if err != nil {
		return "", errorf(file, line, "expanding %q: %v", word, err)
	}
	return out, nil
}

// runEnv is the environment in force, sorted, one value per key.
func (s *state) runEnv() []KV {
	m := maps.Clone(s.args)
	maps.Copy(m, s.env)
	out := make([]KV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, KV{k, m[k]})
	}
	return out
}

// add appends a step with the state in force.
func (s *state) add(st Step) error {
	if len(s.steps) >= MaxSteps {
		return errorf(st.File, st.Line, "more than %d steps", MaxSteps)
	}
	st.Env = s.runEnv()
	st.Workdir = s.workdir
	st.RunAs = s.user
	s.steps = append(s.steps, st)
	return nil
}

// absPath joins p to the workdir, keeping a trailing "/" (or a final "."),
// which mean "a directory" to COPY.
func (s *state) absPath(p string) string {
	dir := strings.HasSuffix(p, "/") || p == "." || strings.HasSuffix(p, "/.")
	if !path.IsAbs(p) {
		p = path.Join(s.workdir, p)
	}
	p = path.Clean(p)
	if dir && p != "/" {
		p += "/"
	}
	return p
}

// declareArg handles `ARG name[=default]` inside the stage.
func (s *state) declareArg(name string, def *string) (KV, bool) {
	s.declared[name] = true
	if v, ok := s.opts.Args[name]; ok {
		s.args[name] = v
		return KV{name, v}, true
	}
	if def != nil {
		s.args[name] = *def
		return KV{name, *def}, true
	}
	if v, ok := s.metaArgs[name]; ok {
		s.args[name] = v
		return KV{name, v}, true
	}
	return KV{}, false
}

func (s *state) finish() (*Recipe, error) {
	start := s.start
	if start == nil {
		start = combineStart(s.entrypoint, s.cmd)
	}
	if s.ready != nil && start == nil {
		return nil, errorf(s.readyFile, s.readyLine, "a readiness check needs a start command (start, CMD or ENTRYPOINT)")
	}
	for _, k := range slices.Sorted(maps.Keys(s.opts.Args)) {
		if !s.declared[k] {
			s.warnings = append(s.warnings, fmt.Sprintf("build argument %s is not declared by any ARG and was not used", k))
		}
	}
	env := make([]KV, 0, len(s.envKeys))
	for _, k := range s.envKeys {
		env = append(env, KV{k, s.env[k]})
	}
	r := &Recipe{
		From: s.from, Steps: s.steps, Start: start, Ready: s.ready, Resources: s.resources,
		User: s.envdUser, RunAs: s.user, Workdir: s.workdir, Env: env,
		Labels: s.labels, Expose: s.expose, Warnings: s.warnings,
	}
	return r, nil
}

// combineStart applies Docker's ENTRYPOINT/CMD rules.
func combineStart(entry, cmd *command) *Command {
	switch {
	case entry == nil && cmd == nil:
		return nil
	case entry == nil:
		if !cmd.json {
			return &Command{Shell: cmd.shell}
		}
		if len(cmd.words) == 0 {
			return nil
		}
		return &Command{Exec: slices.Clone(cmd.words)}
	case !entry.json:
		// A shell-form ENTRYPOINT ignores CMD.
		return &Command{Shell: entry.shell}
	}
	argv := slices.Clone(entry.words)
	if cmd != nil {
		if cmd.json {
			argv = append(argv, cmd.words...)
		} else {
			argv = append(argv, "/bin/sh", "-c", cmd.shell)
		}
	}
	if len(argv) == 0 {
		return nil
	}
	return &Command{Exec: argv}
}
