package recipe

import (
	"bytes"
	"errors"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// refused names the instructions this builder does not run, with why or
// what to use instead.
var refused = map[string]string{
	"healthcheck": "HEALTHCHECK is not supported (use the readiness check of wrenn.yaml)",
	"shell":       "SHELL is not supported (RUN always uses /bin/sh -c; call another shell explicitly)",
	"onbuild":     "ONBUILD is not supported (a template is not a base for Dockerfile builds)",
	"stopsignal":  "STOPSIGNAL is not supported (sandboxes are paused or killed, not stopped with a signal)",
	"volume":      "VOLUME is not supported (a sandbox's whole disk is persistent; just use the directory)",
}

// dockerfile reads a Dockerfile into s.
func (s *state) dockerfile(file string, data []byte) error {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		msg := errMsg(err)
		if msg == "unterminated heredoc" {
			// BuildKit reads any "<<word" as a heredoc, shell arithmetic too.
			msg += " (heredocs are not supported; if << is a shell operator here, move the command into a script)"
		}
		return errorf(file, errLine(err), "%s", msg)
	}
	s.lex = shell.NewLex(res.EscapeToken)
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		s.warnings = append(s.warnings, errorf(file, line, "%s", w.Short).Error())
	}
	for _, n := range res.AST.Children {
		if err := s.instruction(file, n); err != nil {
			return err
		}
	}
	if !s.fromSet {
		return errorf(file, 0, "no FROM instruction")
	}
	return nil
}

func errLine(err error) int {
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return le.Locations[0][0].Start.Line
	}
	return 0
}

func errMsg(err error) string {
	var le *parser.LocationError
	if errors.As(err, &le) && le.Unwrap() != nil {
		return le.Unwrap().Error()
	}
	return err.Error()
}

// words is the list of a node's arguments.
func words(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

func (s *state) instruction(file string, n *parser.Node) error {
	cmd := strings.ToLower(n.Value)
	upper := strings.ToUpper(n.Value)
	line := n.StartLine
	if msg, ok := refused[cmd]; ok {
		return errorf(file, line, "%s", msg)
	}
	if len(n.Heredocs) > 0 {
		return errorf(file, line, "heredocs (<<EOF) are not supported: write the content with RUN printf or COPY a file")
	}
	if !s.fromSet && cmd != "from" && cmd != "arg" {
		return errorf(file, line, "%s before FROM: only ARG may come before FROM", upper)
	}
	switch cmd {
	case "from":
		return s.fromInstr(file, n)
	case "arg":
		return s.argInstr(file, n)
	case "env":
		return s.envInstr(file, n)
	case "label", "maintainer":
		return s.labelInstr(file, n)
	case "expose":
		return s.exposeInstr(file, n)
	case "workdir", "user":
		return s.workdirUser(file, n)
	case "run":
		return s.runInstr(file, n)
	case "copy", "add":
		return s.copyInstr(file, n)
	case "cmd", "entrypoint":
		if err := noFlags(file, n); err != nil {
			return err
		}
		c := &command{json: n.Attributes["json"]}
		if c.json {
			c.words = words(n)
		} else if n.Next != nil {
			c.shell = n.Next.Value
		}
		if !c.json && c.shell == "" {
			return errorf(file, line, "%s needs a command", upper)
		}
		if cmd == "cmd" {
			s.cmd = c
		} else {
			s.entrypoint = c
		}
		return nil
	}
	return errorf(file, line, "unknown instruction %s", upper)
}

func noFlags(file string, n *parser.Node) error {
	if len(n.Flags) > 0 {
		return errorf(file, n.StartLine, "%s %s is not supported", strings.ToUpper(n.Value), flagName(n.Flags[0]))
	}
	return nil
}

func flagName(f string) string {
	name, _, _ := strings.Cut(f, "=")
	return name
}

func (s *state) fromInstr(file string, n *parser.Node) error {
	line := n.StartLine
	if s.fromSet {
		return errorf(file, line, "a second FROM: only one build stage is supported (multi-stage builds are not)")
	}
	if err := noFlags(file, n); err != nil {
		return err
	}
	w := words(n)
	if len(w) != 1 && !(len(w) == 3 && strings.EqualFold(w[1], "as")) {
		return errorf(file, line, "FROM takes one image or template name (optionally AS name)")
	}
	ref, _, err := s.lex.ProcessWord(w[0], metaScope(s.metaArgs))
	if err != nil {
		return errorf(file, line, "expanding %q: %v", w[0], err)
	}
	f, err := ParseFrom(ref)
	if err != nil {
		return errorf(file, line, "%v", err)
	}
	f.Line = line
	s.from, s.fromSet = f, true
	return nil
}

func (s *state) argInstr(file string, n *parser.Node) error {
	line := n.StartLine
	if err := noFlags(file, n); err != nil {
		return err
	}
	w := words(n)
	if len(w) == 0 {
		return errorf(file, line, "ARG needs a name")
	}
	var vars []KV
	for _, word := range w {
		name, def, hasDef := strings.Cut(word, "=")
		if !validName(name) {
			return errorf(file, line, "ARG: invalid name %q", name)
		}
		var defp *string
		if hasDef {
			var err error
			if s.fromSet {
				def, err = s.expand(file, line, def)
			} else {
				def, _, err = s.lex.ProcessWord(def, metaScope(s.metaArgs))
			}
			if err != nil {
				return errorf(file, line, "ARG %s: %v", name, err)
			}
			defp = &def
		}
		if !s.fromSet {
			// A global ARG: only FROM sees it, and `ARG NAME` in the stage.
			s.declared[name] = true
			if v, ok := s.opts.Args[name]; ok {
				s.metaArgs[name] = v
			} else if hasDef {
				s.metaArgs[name] = def
			} else if _, predefined := s.metaArgs[name]; !predefined {
				delete(s.metaArgs, name)
			}
			continue
		}
		if kv, ok := s.declareArg(name, defp); ok {
			vars = append(vars, kv)
		}
	}
	if !s.fromSet {
		return nil
	}
	return s.add(Step{Kind: KindArg, File: file, Line: line, Text: n.Original, Vars: vars})
}

// validName is a portable environment variable name.
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// pairs reads ENV/LABEL key/value/separator triples, expanded against the
// state before the instruction (Docker expands the whole instruction first:
// in `ENV A=1 B=$A`, B gets the previous A).
func (s *state) pairs(file string, n *parser.Node) ([]KV, error) {
	line := n.StartLine
	var out []KV
	for a := n.Next; a != nil; {
		if a.Next == nil {
			return nil, errorf(file, line, "%s: malformed key/value", strings.ToUpper(n.Value))
		}
		k, err := s.expand(file, line, a.Value)
		if err != nil {
			return nil, err
		}
		v, err := s.expand(file, line, a.Next.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, KV{k, v})
		a = a.Next.Next
		if a != nil { // the separator node
			a = a.Next
		}
	}
	if len(out) == 0 {
		return nil, errorf(file, line, "%s needs at least one name=value", strings.ToUpper(n.Value))
	}
	return out, nil
}

func (s *state) envInstr(file string, n *parser.Node) error {
	if err := noFlags(file, n); err != nil {
		return err
	}
	vars, err := s.pairs(file, n)
	if err != nil {
		return err
	}
	for _, kv := range vars {
		if !validName(kv.Key) {
			return errorf(file, n.StartLine, "ENV: invalid name %q", kv.Key)
		}
		s.setEnv(kv.Key, kv.Value)
	}
	return s.add(Step{Kind: KindEnv, File: file, Line: n.StartLine, Text: n.Original, Vars: vars})
}

func (s *state) labelInstr(file string, n *parser.Node) error {
	if err := noFlags(file, n); err != nil {
		return err
	}
	if strings.EqualFold(n.Value, "maintainer") {
		if n.Next == nil {
			return errorf(file, n.StartLine, "MAINTAINER needs a value")
		}
		s.labels["maintainer"] = n.Next.Value
		return nil
	}
	vars, err := s.pairs(file, n)
	if err != nil {
		return err
	}
	for _, kv := range vars {
		s.labels[kv.Key] = kv.Value
	}
	return nil
}

func (s *state) exposeInstr(file string, n *parser.Node) error {
	if err := noFlags(file, n); err != nil {
		return err
	}
	w := words(n)
	if len(w) == 0 {
		return errorf(file, n.StartLine, "EXPOSE needs a port")
	}
	for _, word := range w {
		v, err := s.expand(file, n.StartLine, word)
		if err != nil {
			return err
		}
		p, err := parsePort(v)
		if err != nil {
			return errorf(file, n.StartLine, "EXPOSE: %v", err)
		}
		s.expose = append(s.expose, p)
	}
	return nil
}

// parsePort reads "8000", "8000/tcp" or "8000/udp".
func parsePort(v string) (int, error) {
	num, proto, _ := strings.Cut(v, "/")
	if proto != "" && proto != "tcp" && proto != "udp" {
		return 0, errors.New("protocol must be tcp or udp in " + strconv.Quote(v))
	}
	p, err := strconv.Atoi(num)
	if err != nil || p < 1 || p > 65535 {
		return 0, errors.New("invalid port " + strconv.Quote(v) + " (a number 1-65535; ranges are not supported)")
	}
	return p, nil
}

func (s *state) workdirUser(file string, n *parser.Node) error {
	if err := noFlags(file, n); err != nil {
		return err
	}
	upper := strings.ToUpper(n.Value)
	if n.Next == nil {
		return errorf(file, n.StartLine, "%s needs a value", upper)
	}
	v, err := s.expand(file, n.StartLine, n.Next.Value)
	if err != nil {
		return err
	}
	if v == "" {
		return errorf(file, n.StartLine, "%s is empty after expansion", upper)
	}
	if upper == "WORKDIR" {
		return s.setWorkdir(file, n.StartLine, n.Original, v)
	}
	return s.setUser(file, n.StartLine, n.Original, v)
}

func (s *state) setWorkdir(file string, line int, text, v string) error {
	dir := s.absPath(v)
	if dir != "/" {
		dir = strings.TrimSuffix(dir, "/")
	}
	s.workdir = dir
	return s.add(Step{Kind: KindWorkdir, File: file, Line: line, Text: text, Value: dir})
}

func (s *state) setUser(file string, line int, text, v string) error {
	if strings.ContainsAny(v, " \t\n/") {
		return errorf(file, line, "USER: invalid user %q", v)
	}
	s.user = v
	return s.add(Step{Kind: KindUser, File: file, Line: line, Text: text, Value: v})
}

func (s *state) runInstr(file string, n *parser.Node) error {
	if len(n.Flags) > 0 {
		f := flagName(n.Flags[0])
		return errorf(file, n.StartLine, "RUN %s is not supported (steps run in the build sandbox with the team's network policy)", f)
	}
	st := Step{Kind: KindRun, File: file, Line: n.StartLine, Text: n.Original}
	if n.Attributes["json"] {
		st.Exec = words(n)
		if len(st.Exec) == 0 {
			return errorf(file, n.StartLine, "RUN needs a command")
		}
	} else {
		if n.Next == nil || strings.TrimSpace(n.Next.Value) == "" {
			return errorf(file, n.StartLine, "RUN needs a command")
		}
		st.Shell = n.Next.Value
	}
	return s.add(st)
}

// archiveSuffixes are names ADD would unpack in Docker; this builder copies
// ADD sources as they are, so refusing them avoids a silent difference.
var archiveSuffixes = []string{".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst"}

func (s *state) copyInstr(file string, n *parser.Node) error {
	line := n.StartLine
	upper := strings.ToUpper(n.Value)
	var chown, chmod string
	for _, f := range n.Flags {
		name, val, _ := strings.Cut(f, "=")
		switch name {
		case "--chown":
			v, err := s.expand(file, line, val)
			if err != nil {
				return err
			}
			chown = v
		case "--chmod":
			v, err := s.expand(file, line, val)
			if err != nil {
				return err
			}
			chmod = v
		case "--from":
			return errorf(file, line, "%s --from is not supported (only one build stage; copy from the build context)", upper)
		default:
			return errorf(file, line, "%s %s is not supported", upper, name)
		}
	}
	w := words(n)
	if len(w) < 2 {
		return errorf(file, line, "%s needs at least one source and a destination", upper)
	}
	var expanded []string
	for _, word := range w {
		v, err := s.expand(file, line, word)
		if err != nil {
			return err
		}
		expanded = append(expanded, v)
	}
	return s.copyStep(file, line, n.Original, Kind(upper), expanded[:len(expanded)-1], expanded[len(expanded)-1], chown, chmod)
}

// copyStep validates and adds a COPY/ADD step whose words are expanded.
func (s *state) copyStep(file string, line int, text string, kind Kind, sources []string, dest, chown, chmod string) error {
	var srcs []string
	for _, src := range sources {
		lower := strings.ToLower(src)
		if strings.Contains(lower, "://") || strings.HasPrefix(lower, "git@") {
			return errorf(file, line, "%s from a URL (%s) is not supported: only files of the build context", kind, src)
		}
		if kind == KindAdd {
			for _, suf := range archiveSuffixes {
				if strings.HasSuffix(lower, suf) {
					return errorf(file, line, "ADD of an archive (%s) is not unpacked here: COPY it and unpack it with RUN tar -x", src)
				}
			}
		}
		clean, err := contextPath(src)
		if err != nil {
			return errorf(file, line, "%s: %v", kind, err)
		}
		srcs = append(srcs, clean)
	}
	if dest == "" {
		return errorf(file, line, "%s needs a destination", kind)
	}
	abs := s.absPath(dest)
	if len(srcs) > 1 && !strings.HasSuffix(abs, "/") {
		return errorf(file, line, "%s with more than one source needs a destination directory ending in /", kind)
	}
	if chmod != "" {
		m, err := strconv.ParseUint(chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return errorf(file, line, "%s --chmod=%s: only octal modes (0755) are supported", kind, chmod)
		}
	}
	if chown != "" && (strings.ContainsAny(chown, " \t\n/") || strings.Count(chown, ":") > 1 || strings.HasPrefix(chown, ":")) {
		return errorf(file, line, "%s --chown=%s: use user, user:group, uid or uid:gid", kind, chown)
	}
	return s.add(Step{Kind: kind, File: file, Line: line, Text: text, Sources: srcs, Dest: abs, Chown: chown, Chmod: chmod})
}

// contextPath cleans a COPY source: relative to the build context root (a
// leading / means the root, as in Docker), never above it. Globs are kept.
func contextPath(src string) (string, error) {
	if src == "" {
		return "", errors.New("empty source")
	}
	trailing := strings.HasSuffix(src, "/")
	c := path.Clean("/" + src)
	if strings.Contains("/"+src+"/", "/../") {
		return "", errors.New("source " + strconv.Quote(src) + " leaves the build context")
	}
	c = strings.TrimPrefix(c, "/")
	if c == "" {
		c = "."
	}
	if trailing && c != "." {
		c += "/"
	}
	return c, nil
}
