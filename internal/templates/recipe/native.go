package recipe

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"go.yaml.in/yaml/v3"
)

// The native form is read as a YAML node tree (JSON is YAML) and walked by
// hand rather than decoded into structs: that is what lets every error,
// unknown keys included, name its line.

var (
	topKeys   = []string{"from", "dockerfile", "steps", "start", "ready", "resources", "user", "labels"}
	readyKeys = []string{"port", "http", "command", "timeout"}
	resKeys   = []string{"vcpus", "memory_mb", "disk_mb"}
	copyKeys  = []string{"src", "dest", "chown", "chmod"}
	stepKeys  = []string{"run", "copy", "env", "workdir", "user"}
)

// yamlLine splits the "line N: " that YAML errors start with.
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// MaxReadyTimeout bounds the readiness timeout a recipe may ask for.
const MaxReadyTimeout = time.Hour

type native struct {
	s    *state
	file string
	lex  *shell.Lex
}

func parseNative(file string, data []byte, files FileReader, opts Options) (*Recipe, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return nil, errorf(file, line, "%s", msg)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, errorf(file, 0, "empty recipe")
	}
	top := doc.Content[0]
	lex := shell.NewLex('\\')
	// YAML has done the quoting already; only $VAR expansion remains.
	lex.SkipProcessQuotes = true
	n := &native{s: newParser(opts), file: file, lex: lex}
	fields, err := n.mapping(top, topKeys)
	if err != nil {
		return nil, err
	}
	if err := n.base(fields, files); err != nil {
		return nil, err
	}
	if v := fields["steps"]; v != nil {
		if err := n.steps(v); err != nil {
			return nil, err
		}
	}
	if v := fields["start"]; v != nil {
		c, err := n.command(v, "start")
		if err != nil {
			return nil, err
		}
		n.s.start = c
	}
	if v := fields["ready"]; v != nil {
		r, err := n.ready(v)
		if err != nil {
			return nil, err
		}
		n.s.ready, n.s.readyFile, n.s.readyLine = r, file, v.Line
	}
	if v := fields["resources"]; v != nil {
		if err := n.resources(v); err != nil {
			return nil, err
		}
	}
	if v := fields["user"]; v != nil {
		u, err := n.str(v, "user")
		if err != nil {
			return nil, err
		}
		if u == "" || strings.ContainsAny(u, " \t\n/:") {
			return nil, errorf(file, v.Line, "user: invalid user name %q", u)
		}
		n.s.envdUser = u
	}
	if v := fields["labels"]; v != nil {
		kvs, err := n.stringMap(v, "labels")
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			n.s.labels[kv.Key] = kv.Value
		}
	}
	return n.s.finish()
}

// base handles `from` and `dockerfile`.
func (n *native) base(fields map[string]*yaml.Node, files FileReader) error {
	fromN, dfN := fields["from"], fields["dockerfile"]
	switch {
	case fromN != nil && dfN != nil:
		return errorf(n.file, fromN.Line, "give either from or dockerfile (whose FROM is the base), not both")
	case fromN == nil && dfN == nil:
		return errorf(n.file, 0, "missing from (a template name or an image reference) or dockerfile")
	case fromN != nil:
		v, err := n.str(fromN, "from")
		if err != nil {
			return err
		}
		f, err := ParseFrom(v)
		if err != nil {
			return errorf(n.file, fromN.Line, "from: %v", err)
		}
		f.Line = fromN.Line
		n.s.from, n.s.fromSet = f, true
		return nil
	}
	name, err := n.str(dfN, "dockerfile")
	if err != nil {
		return err
	}
	clean := path.Clean("/" + name)[1:]
	if name == "" || clean == "" || strings.Contains("/"+name+"/", "/../") {
		return errorf(n.file, dfN.Line, "dockerfile: %q is not a file of the build context", name)
	}
	if files == nil {
		return errorf(n.file, dfN.Line, "dockerfile: no build context to read %s from", clean)
	}
	data, err := files.ReadFile(clean)
	if err != nil {
		return errorf(n.file, dfN.Line, "dockerfile: reading %s: %v", clean, err)
	}
	display := path.Base(clean)
	if err := checkSize(display, data); err != nil {
		return err
	}
	return n.s.dockerfile(clean, data)
}

// mapping checks that v is a mapping with only known, unique keys.
func (n *native) mapping(v *yaml.Node, known []string) (map[string]*yaml.Node, error) {
	if v.Kind != yaml.MappingNode {
		return nil, errorf(n.file, v.Line, "expected a mapping of %s", strings.Join(known, ", "))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !slices.Contains(known, k.Value) {
			return nil, errorf(n.file, k.Line, "unknown key %q (known here: %s)", k.Value, strings.Join(known, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, errorf(n.file, k.Line, "key %q given twice", k.Value)
		}
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
			continue
		}
		out[k.Value] = val
	}
	return out, nil
}

func (n *native) str(v *yaml.Node, what string) (string, error) {
	if v.Kind != yaml.ScalarNode {
		return "", errorf(n.file, v.Line, "%s: expected a string", what)
	}
	return v.Value, nil
}

func (n *native) integer(v *yaml.Node, what string) (int, error) {
	var i int
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&i) != nil {
		return 0, errorf(n.file, v.Line, "%s: expected a whole number", what)
	}
	return i, nil
}

func (n *native) expand(v *yaml.Node, word string) (string, error) {
	out, _, err := n.lex.ProcessWord(word, scope{n.s})
	if err != nil {
		return "", errorf(n.file, v.Line, "expanding %q: %v", word, err)
	}
	return out, nil
}

// stringMap reads a mapping of names to scalars, in written order.
func (n *native) stringMap(v *yaml.Node, what string) ([]KV, error) {
	if v.Kind != yaml.MappingNode {
		return nil, errorf(n.file, v.Line, "%s: expected a mapping of names to values", what)
	}
	var out []KV
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if val.Kind != yaml.ScalarNode {
			return nil, errorf(n.file, val.Line, "%s.%s: expected a string", what, k.Value)
		}
		if seen[k.Value] {
			return nil, errorf(n.file, k.Line, "%s: key %q given twice", what, k.Value)
		}
		seen[k.Value] = true
		out = append(out, KV{k.Value, val.Value})
	}
	return out, nil
}

func (n *native) steps(v *yaml.Node) error {
	if v.Kind != yaml.SequenceNode {
		return errorf(n.file, v.Line, "steps: expected a list")
	}
	for _, item := range v.Content {
		if item.Kind != yaml.MappingNode || len(item.Content) != 2 {
			return errorf(n.file, item.Line, "a step is one of %s (one key per list item)", strings.Join(stepKeys, ", "))
		}
		if err := n.step(item.Content[0], item.Content[1]); err != nil {
			return err
		}
	}
	return nil
}

func (n *native) step(k, v *yaml.Node) error {
	line := k.Line
	text := k.Value + ": " + nodeText(v)
	switch k.Value {
	case "run":
		st := Step{Kind: KindRun, File: n.file, Line: line, Text: text}
		c, err := n.command(v, "run")
		if err != nil {
			return err
		}
		st.Shell, st.Exec = c.Shell, c.Exec
		return n.s.add(st)
	case "copy":
		f, err := n.mapping(v, copyKeys)
		if err != nil {
			return err
		}
		if f["src"] == nil || f["dest"] == nil {
			return errorf(n.file, line, "copy needs src and dest")
		}
		var srcs []string
		switch s := f["src"]; s.Kind {
		case yaml.ScalarNode:
			srcs = []string{s.Value}
		case yaml.SequenceNode:
			for _, e := range s.Content {
				str, err := n.str(e, "copy.src")
				if err != nil {
					return err
				}
				srcs = append(srcs, str)
			}
		default:
			return errorf(n.file, s.Line, "copy.src: expected a path or a list of paths")
		}
		if len(srcs) == 0 {
			return errorf(n.file, line, "copy.src is empty")
		}
		for i, s := range srcs {
			if srcs[i], err = n.expand(v, s); err != nil {
				return err
			}
		}
		var dest, chown, chmod string
		if dest, err = n.str(f["dest"], "copy.dest"); err != nil {
			return err
		}
		if dest, err = n.expand(v, dest); err != nil {
			return err
		}
		if c := f["chown"]; c != nil {
			if chown, err = n.str(c, "copy.chown"); err != nil {
				return err
			}
			if chown, err = n.expand(v, chown); err != nil {
				return err
			}
		}
		if c := f["chmod"]; c != nil {
			if chmod, err = n.str(c, "copy.chmod"); err != nil {
				return err
			}
		}
		return n.s.copyStep(n.file, line, text, KindCopy, srcs, dest, chown, chmod)
	case "env":
		kvs, err := n.stringMap(v, "env")
		if err != nil {
			return err
		}
		if len(kvs) == 0 {
			return errorf(n.file, line, "env is empty")
		}
		// Expand all against the state before the step, as Docker's ENV.
		for i := range kvs {
			if !validName(kvs[i].Key) {
				return errorf(n.file, line, "env: invalid name %q", kvs[i].Key)
			}
			if kvs[i].Value, err = n.expand(v, kvs[i].Value); err != nil {
				return err
			}
		}
		for _, kv := range kvs {
			n.s.setEnv(kv.Key, kv.Value)
		}
		return n.s.add(Step{Kind: KindEnv, File: n.file, Line: line, Text: text, Vars: kvs})
	case "workdir", "user":
		val, err := n.str(v, k.Value)
		if err != nil {
			return err
		}
		if val, err = n.expand(v, val); err != nil {
			return err
		}
		if val == "" {
			return errorf(n.file, line, "%s is empty", k.Value)
		}
		if k.Value == "workdir" {
			return n.s.setWorkdir(n.file, line, text, val)
		}
		return n.s.setUser(n.file, line, text, val)
	}
	return errorf(n.file, line, "unknown step %q (steps are %s)", k.Value, strings.Join(stepKeys, ", "))
}

// command reads a string (shell form) or a list of strings (exec form).
func (n *native) command(v *yaml.Node, what string) (*Command, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if strings.TrimSpace(v.Value) == "" {
			return nil, errorf(n.file, v.Line, "%s is empty", what)
		}
		return &Command{Shell: v.Value}, nil
	case yaml.SequenceNode:
		var argv []string
		for _, e := range v.Content {
			s, err := n.str(e, what)
			if err != nil {
				return nil, err
			}
			argv = append(argv, s)
		}
		if len(argv) == 0 {
			return nil, errorf(n.file, v.Line, "%s is empty", what)
		}
		return &Command{Exec: argv}, nil
	}
	return nil, errorf(n.file, v.Line, "%s: expected a string (shell) or a list (exec)", what)
}

func (n *native) ready(v *yaml.Node) (*Ready, error) {
	f, err := n.mapping(v, readyKeys)
	if err != nil {
		return nil, err
	}
	r := &Ready{Timeout: DefaultReadyTimeout}
	kinds := 0
	if p := f["port"]; p != nil {
		kinds++
		if r.Port, err = n.integer(p, "ready.port"); err != nil {
			return nil, err
		}
		if r.Port < 1 || r.Port > 65535 {
			return nil, errorf(n.file, p.Line, "ready.port: %d is not a port (1-65535)", r.Port)
		}
	}
	if h := f["http"]; h != nil {
		kinds++
		if r.HTTP, err = n.str(h, "ready.http"); err != nil {
			return nil, err
		}
		u, err := url.Parse(r.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errorf(n.file, h.Line, "ready.http: %q is not an http:// or https:// URL", r.HTTP)
		}
	}
	if c := f["command"]; c != nil {
		kinds++
		if r.Command, err = n.str(c, "ready.command"); err != nil {
			return nil, err
		}
		if strings.TrimSpace(r.Command) == "" {
			return nil, errorf(n.file, c.Line, "ready.command is empty")
		}
	}
	if kinds != 1 {
		return nil, errorf(n.file, v.Line, "ready needs exactly one of port, http and command")
	}
	if t := f["timeout"]; t != nil {
		s, err := n.str(t, "ready.timeout")
		if err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxReadyTimeout {
			return nil, errorf(n.file, t.Line, "ready.timeout: %q is not a duration between 0 and %s (e.g. 60s)", s, MaxReadyTimeout)
		}
		r.Timeout = d
	}
	return r, nil
}

func (n *native) resources(v *yaml.Node) error {
	f, err := n.mapping(v, resKeys)
	if err != nil {
		return err
	}
	for _, k := range resKeys {
		x := f[k]
		if x == nil {
			continue
		}
		i, err := n.integer(x, "resources."+k)
		if err != nil {
			return err
		}
		if i < 1 {
			return errorf(n.file, x.Line, "resources.%s must be at least 1", k)
		}
		switch k {
		case "vcpus":
			n.s.resources.VCPUs = i
		case "memory_mb":
			n.s.resources.MemoryMB = i
		case "disk_mb":
			n.s.resources.DiskMB = i
		}
	}
	return nil
}

// nodeText is a one-line rendering of a step's value for logs.
func nodeText(v *yaml.Node) string {
	if v.Kind == yaml.ScalarNode {
		return v.Value
	}
	var x any
	if err := v.Decode(&x); err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
