// Package recipe turns a template recipe (a Dockerfile or the native
// wrenn.yaml / wrenn.json form) into a flat list of build steps that the
// template builder runs without knowing any Dockerfile semantics.
//
// # API
//
//	func Parse(file string, data []byte, files FileReader, args map[string]string) (*Recipe, error)
//	func ParseWith(file string, data []byte, files FileReader, opts Options) (*Recipe, error)
//	func ParseFrom(s string) (From, error)
//	func (s Step) CacheText() string
//	func (s Step) ChmodMode() fs.FileMode
//	func (c Command) Argv() []string
//	type Error struct{ File string; Line int; Msg string } // wraps errdefs.ErrInvalidArgument
//
// Parse picks the form by file name: Dockerfile, Dockerfile.*, *.dockerfile
// and Containerfile are Dockerfiles; *.yaml, *.yml and *.json are the native
// form. Every error is an *Error naming the file and line
// ("Dockerfile:7: HEALTHCHECK is not supported ..."), and errors.Is(err,
// errdefs.ErrInvalidArgument) holds for all of them, so the REST layer
// answers 400.
//
// # What the builder gets
//
// Every Step is self-contained: the $VAR references Docker expands (in COPY,
// ADD, ENV, ARG, WORKDIR, USER, LABEL, EXPOSE, FROM) are already expanded,
// COPY/ADD destinations are absolute (relative ones are joined to the
// WORKDIR in force), and each Step carries the environment (Env: the base
// environment, then ARG values, then ENV values, as Docker gives RUN), the
// working directory (Workdir) and the user (RunAs) in force when it runs.
// ENV, ARG and USER steps change nothing on disk (their effect is already
// folded into later steps); they are kept so build logs and cache keys follow
// the recipe line by line. WORKDIR creates its directory when missing, as
// Docker does. RUN and the start command are not expanded: their shell does
// that, with Env.
//
// The base image's environment is not known until FROM is resolved, and
// `ENV PATH=/opt/venv/bin:$PATH` needs it. A builder that knows it (the OCI
// image config's Env, or the parent template's) passes it as
// Options.BaseEnv; Parse is cheap, so parsing once to learn From and again
// with BaseEnv is the intended use. Without BaseEnv, PATH defaults to
// Docker's default PATH, as Docker does for images without one.
//
// CacheText is a canonical text of everything that affects a step's result
// except the parent state and the copied content; the builder hashes it with
// the parent digest and, for COPY/ADD, buildctx.Context.Digest.
//
// # Start command
//
// Docker's rules combine ENTRYPOINT and CMD: exec ENTRYPOINT + exec CMD
// concatenate; a shell-form ENTRYPOINT ignores CMD; a shell form runs under
// /bin/sh -c. The native `start` key replaces both. Command.Argv gives the
// argv to execute. Recipe.RunAs, Recipe.Workdir and Recipe.Env are what the
// start command runs with (the state after the last step).
package recipe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Limits on a recipe; beyond them Parse fails.
const (
	MaxRecipeBytes = 1 << 20  // the recipe file itself
	MaxSteps       = 500      // steps of a recipe (Dockerfile and native together)
	MaxLineBytes   = 64 << 10 // one physical line
)

// DefaultReadyTimeout is the readiness timeout when a recipe gives none.
const DefaultReadyTimeout = 60 * time.Second

// DefaultPath is the PATH Docker gives an image that has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Recipe is a parsed template recipe.
type Recipe struct {
	From  From
	Steps []Step
	// Start is the start command; nil when the recipe has none.
	Start *Command
	// Ready is the readiness check of Start; nil when none (then a started
	// process counts as ready). Never set without Start.
	Ready *Ready
	// Resources are the template's default sizes; zero fields mean the
	// caller's defaults.
	Resources Resources
	// User is the envd default user of the template's sandboxes; "" means
	// the caller's default ("user"). Only the native `user` key sets it: a
	// Dockerfile USER sets RunAs, not this.
	User string
	// RunAs, Workdir and Env are the state after the last step: what the
	// start command runs with. Env holds BaseEnv and ENV values (ARG values
	// are not kept, as in Docker). RunAs "" means root; Workdir is absolute.
	RunAs   string
	Workdir string
	Env     []KV
	Labels  map[string]string
	Expose  []int
	// Warnings are things a user may want to know that are not errors
	// (a build argument no ARG declares, as Docker warns).
	Warnings []string
}

// From is the base of a recipe: exactly one of Template and Image is set.
type From struct {
	// Template is a Wrenn template name; Version 0 means its latest version.
	Template string
	Version  int
	// Image is a canonical OCI reference (registry/repository:tag or
	// @digest, as go-containerregistry's Name() prints it).
	Image string
	// Line is where FROM was written (0 for the native `from` key's
	// absence of a line, e.g. from a test).
	Line int
}

// Kind is the kind of a step.
type Kind string

// Step kinds.
const (
	KindRun     Kind = "RUN"
	KindCopy    Kind = "COPY"
	KindAdd     Kind = "ADD"
	KindEnv     Kind = "ENV"
	KindWorkdir Kind = "WORKDIR"
	KindUser    Kind = "USER"
	KindArg     Kind = "ARG"
)

// KV is one variable.
type KV struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Step is one build step.
type Step struct {
	Kind Kind
	// File and Line say where the step was written, for errors and logs
	// ("Dockerfile:7"); Text is the instruction as written (continuations
	// joined).
	File string
	Line int
	Text string

	// RUN: exactly one of Shell (run under /bin/sh -c) and Exec is set.
	Shell string
	Exec  []string

	// COPY/ADD: Sources are relative to the build context (resolve with
	// buildctx); Dest is absolute and keeps a trailing "/" when written
	// with one (Docker's "copy into this directory"). Chown is as written
	// (names are resolved in the image); Chmod is octal ("0755") or "".
	Sources []string
	Dest    string
	Chown   string
	Chmod   string

	// ENV/ARG: the variables set, in order, values expanded.
	Vars []KV

	// WORKDIR (absolute) / USER.
	Value string

	// The state in force when this step runs (for WORKDIR and USER: after
	// them). Env is sorted by key, one value per key.
	Env     []KV
	Workdir string
	RunAs   string
}

// ChmodMode is Chmod as a file mode for buildctx.Context.WriteTar; 0 when
// the step has no --chmod (Parse has checked that Chmod is octal).
func (s Step) ChmodMode() fs.FileMode {
	m, err := strconv.ParseUint(s.Chmod, 8, 32)
	if err != nil {
		return 0
	}
	return fs.FileMode(m)
}

// Command is a start command: exactly one of Shell and Exec is set.
type Command struct {
	Shell string
	Exec  []string
}

// Argv is the argv that runs c: a shell command runs as /bin/sh -c.
func (c Command) Argv() []string {
	if c.Exec != nil {
		return slices.Clone(c.Exec)
	}
	return []string{"/bin/sh", "-c", c.Shell}
}

// Ready is a readiness check: exactly one of Port (a TCP connect succeeds),
// HTTP (a GET answers 200) and Command (exits 0, run under /bin/sh -c).
type Ready struct {
	Port    int
	HTTP    string
	Command string
	Timeout time.Duration
}

// Resources are a template's default sizes.
type Resources struct {
	VCPUs    int
	MemoryMB int
	DiskMB   int
}

// FileReader reads a file of the build context (buildctx.Context is one):
// the native form's `dockerfile` key names such a file.
type FileReader interface {
	ReadFile(name string) ([]byte, error)
}

// Options tune Parse.
type Options struct {
	// Args are build arguments; they override ARG defaults.
	Args map[string]string
	// BaseEnv is the base image's environment ("KEY=VALUE"); see the
	// package comment.
	BaseEnv []string
	// Arch is the target architecture for the predefined TARGETARCH and
	// BUILDARCH arguments ("amd64" when empty).
	Arch string
}

// Error is a recipe error at a place in a file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Unwrap makes every recipe error an invalid argument.
func (e *Error) Unwrap() error { return errdefs.ErrInvalidArgument }

func errorf(file string, line int, format string, args ...any) *Error {
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Parse parses a recipe with build arguments args; see ParseWith.
func Parse(file string, data []byte, files FileReader, args map[string]string) (*Recipe, error) {
	return ParseWith(file, data, files, Options{Args: args})
}

// ParseWith parses the recipe in data, whose name (as given by the user,
// e.g. "Dockerfile" or "wrenn.yaml") picks the form. files is needed only
// when a native recipe names a Dockerfile; it may be nil otherwise.
func ParseWith(file string, data []byte, files FileReader, opts Options) (*Recipe, error) {
	display := path.Base(file)
	if display == "." || display == "/" {
		display = file
	}
	if err := checkSize(display, data); err != nil {
		return nil, err
	}
	switch formOf(file) {
	case formDockerfile:
		p := newParser(opts)
		if err := p.dockerfile(display, data); err != nil {
			return nil, err
		}
		return p.finish()
	case formNative:
		return parseNative(display, data, files, opts)
	}
	return nil, errorf(display, 0, "unknown recipe kind: name it Dockerfile, *.dockerfile, wrenn.yaml, wrenn.yml or wrenn.json")
}

type form int

const (
	formUnknown form = iota
	formDockerfile
	formNative
)

func formOf(file string) form {
	base := strings.ToLower(path.Base(file))
	switch {
	case base == "dockerfile", strings.HasPrefix(base, "dockerfile."), strings.HasSuffix(base, ".dockerfile"),
		base == "containerfile", strings.HasPrefix(base, "containerfile."):
		return formDockerfile
	case strings.HasSuffix(base, ".yaml"), strings.HasSuffix(base, ".yml"), strings.HasSuffix(base, ".json"):
		return formNative
	}
	return formUnknown
}

func checkSize(file string, data []byte) error {
	if len(data) > MaxRecipeBytes {
		return errorf(file, 0, "recipe is %d bytes, more than the limit of %d", len(data), MaxRecipeBytes)
	}
	line := 1
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		n := i
		if i < 0 {
			n = len(data)
		}
		if n > MaxLineBytes {
			return errorf(file, line, "line is %d bytes, more than the limit of %d", n, MaxLineBytes)
		}
		if i < 0 {
			break
		}
		data = data[i+1:]
		line++
	}
	return nil
}

// cacheKey is what CacheText encodes; JSON of a struct is canonical (fixed
// field order, escaped strings) and nil and empty slices encode alike.
type cacheKey struct {
	V       int      `json:"v"`
	Kind    Kind     `json:"kind"`
	Shell   string   `json:"shell,omitempty"`
	Exec    []string `json:"exec,omitempty"`
	Sources []string `json:"src,omitempty"`
	Dest    string   `json:"dest,omitempty"`
	Chown   string   `json:"chown,omitempty"`
	Chmod   string   `json:"chmod,omitempty"`
	Vars    []KV     `json:"vars,omitempty"`
	Value   string   `json:"value,omitempty"`
	Env     []KV     `json:"env,omitempty"`
	Workdir string   `json:"workdir"`
	RunAs   string   `json:"user"`
}

// CacheText is a canonical, stable text of everything that affects the
// step's result: kind, arguments, environment, workdir, user, chown and
// chmod. Where the step was written (File, Line, Text) is not part of it,
// so moving a step or reformatting its line keeps its cache.
func (s Step) CacheText() string {
	b, err := json.Marshal(cacheKey{
		V: 1, Kind: s.Kind, Shell: s.Shell, Exec: s.Exec, Sources: s.Sources, Dest: s.Dest,
		Chown: s.Chown, Chmod: s.Chmod, Vars: s.Vars, Value: s.Value, Env: s.Env,
		Workdir: s.Workdir, RunAs: s.RunAs,
	})
	if err != nil {
		// Only strings and ints: Marshal cannot fail.
		panic(fmt.Sprintf("recipe: encoding a cache key: %v", err))
	}
	return string(b)
}
