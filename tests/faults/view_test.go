package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/leakcheck"
)

// rest is a small REST client that never fails the test itself: a fault
// scenario's calls are expected to fail while a daemon is down.
type rest struct {
	base, key string
	hc        *http.Client
}

// reply is one call's outcome: err is set when no answer came (the
// connection broke, a daemon died); otherwise status and body.
type reply struct {
	status int
	body   []byte
	err    error
}

func (r reply) ok() bool { return r.err == nil && r.status/100 == 2 }

func (r reply) String() string {
	if r.err != nil {
		return "no answer (" + r.err.Error() + ")"
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(string(r.body)))
}

func (c rest) call(ctx context.Context, method, path string, body any) reply {
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return reply{err: err}
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{err: err}
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: b, err: err}
}

// decode calls and decodes a 2xx answer into out.
func (c rest) decode(ctx context.Context, method, path string, body, out any) error {
	r := c.call(ctx, method, path, body)
	if !r.ok() {
		return fmt.Errorf("%s %s: %s", method, path, r)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("%s %s: decode %q: %w", method, path, r.body, err)
	}
	return nil
}

// allStates lists every sandbox, stopped ones included.
const allStates = "starting,running,paused,hibernated,missing,stopped,error"

// cpView is the control plane's sandboxes by id (every state).
func (c rest) cpView(ctx context.Context) (map[string]api.Sandbox, error) {
	var page struct {
		Sandboxes []api.Sandbox `json:"sandboxes"`
	}
	if err := c.decode(ctx, "GET", "/v1/sandboxes?limit=1000&state="+allStates, nil, &page); err != nil {
		return nil, err
	}
	out := make(map[string]api.Sandbox, len(page.Sandboxes))
	for _, sb := range page.Sandboxes {
		out[sb.Id] = sb
	}
	return out, nil
}

// cpTemplates is the team's snapshot templates: status by name ("" from
// a control plane without template statuses, else "pending" while its
// host is still making it, or "ready").
func (c rest) cpTemplates(ctx context.Context) (map[string]string, error) {
	// Not api.Template: Status is decoded whether or not this build's
	// types have it.
	var list struct {
		Templates []struct {
			Name     string `json:"name"`
			Snapshot bool   `json:"snapshot"`
			Builtin  bool   `json:"builtin"`
			Status   string `json:"status"`
		} `json:"templates"`
	}
	if err := c.decode(ctx, "GET", "/v1/templates", nil, &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, t := range list.Templates {
		if t.Snapshot && !t.Builtin {
			out[t.Name] = t.Status
		}
	}
	return out, nil
}

// agentView is what the agent holds, read from the outside: each
// sandbox's persisted record (the state it reports, what it re-adopts
// after a restart; a record is rewritten on every state change) and
// everything leakcheck finds on the host. The agent's RPC needs the
// control plane's client certificate, which a test does not hold.
type agentView struct {
	// states is each sandbox record's state by id ("" for a sandbox
	// directory without a record: a create before its first step).
	states map[string]string
	// res is every resource found, per sandbox id ("" for none).
	res map[string][]leakcheck.Resource
	all []leakcheck.Resource
}

func readAgent(ctx context.Context, env *stackEnv) (agentView, error) {
	v := agentView{states: map[string]string{}, res: map[string][]leakcheck.Resource{}}
	ents, err := os.ReadDir(filepath.Join(env.dir, "sandboxes"))
	if err != nil {
		return v, fmt.Errorf("list agent sandboxes: %w", err)
	}
	for _, e := range ents {
		var rec struct {
			State string `json:"state"`
		}
		b, err := os.ReadFile(filepath.Join(env.dir, "sandboxes", e.Name(), "sandbox.json"))
		if err == nil {
			_ = json.Unmarshal(b, &rec)
		}
		v.states[e.Name()] = rec.State
	}
	rs, err := leakcheck.List(ctx, env.scope)
	if err != nil {
		return v, fmt.Errorf("leakcheck: %w", err)
	}
	v.all = rs
	for _, r := range rs {
		v.res[r.SandboxID] = append(v.res[r.SandboxID], r)
	}
	return v, nil
}

func (v agentView) has(id, kind string) bool {
	return slices.ContainsFunc(v.res[id], func(r leakcheck.Resource) bool { return r.Kind == kind })
}

// disagreements compares both views and returns what does not agree,
// sorted, and the ids (and "template:<name>") it is about; ignore holds
// those an earlier scenario already reported.
func disagreements(cp map[string]api.Sandbox, tpls map[string]string, ag agentView, ignore map[string]bool) (out, bad []string) {
	ids := map[string]bool{}
	for id := range cp {
		ids[id] = true
	}
	for id := range ag.states {
		ids[id] = true
	}
	for id := range ag.res {
		if id != "" {
			ids[id] = true
		}
	}
	for id := range ids {
		if ignore[id] {
			continue
		}
		n := len(out)
		sb, inCP := cp[id]
		c := string(sb.State)
		a, inAgent := ag.states[id]
		switch {
		case inAgent:
			switch {
			case a == "" || a == "starting" || a == "stopping":
				out = append(out, fmt.Sprintf("%s: agent record %q (an operation not finished or rolled back)", id, a))
			case !inCP:
				out = append(out, fmt.Sprintf("%s: the agent holds it (%s); the control plane has no such sandbox", id, a))
			case c != a:
				out = append(out, fmt.Sprintf("%s: control plane says %s, agent says %s", id, c, a))
			}
			vmm := ag.has(id, leakcheck.KindVMMProcess)
			if (a == "running" || a == "paused") && !vmm {
				out = append(out, fmt.Sprintf("%s: agent says %s but no VMM runs", id, a))
			}
			if a == "hibernated" && vmm {
				out = append(out, fmt.Sprintf("%s: agent says hibernated but a VMM runs", id))
			}
			if (a == "running" || a == "paused") && ag.has(id, leakcheck.KindSnapshotDir) {
				out = append(out, fmt.Sprintf("%s: %s with a snapshot directory beside it (a hibernation or fork cut short)", id, a))
			}
		default:
			if inCP && c != "stopped" && c != "error" {
				out = append(out, fmt.Sprintf("%s: control plane says %s; the agent has no such sandbox", id, c))
			}
			if rs := ag.res[id]; len(rs) > 0 {
				out = append(out, fmt.Sprintf("%s: gone from the agent but holds:\n%s", id, leakcheck.Format(rs)))
			}
		}
		if len(out) > n {
			bad = append(bad, id)
		}
	}
	// Templates: as many on the host as the control plane lists (the host
	// names them by an internal name the API does not show); none half
	// written.
	var onHost, inCP []string
	for _, r := range ag.res[""] {
		switch r.Kind {
		case leakcheck.KindTemplate:
			if name := filepath.Base(r.Name); !ignore["template:"+name] {
				onHost = append(onHost, name)
			}
		case leakcheck.KindTemplateTmp:
			out = append(out, "template written but never published: "+r.Name)
			bad = append(bad, "template:"+filepath.Base(r.Name))
		}
	}
	for name, status := range tpls {
		if ignore["template:"+name] {
			continue
		}
		inCP = append(inCP, name)
		if status == "pending" {
			out = append(out, fmt.Sprintf("template %s: still pending (neither completed nor removed)", name))
			bad = append(bad, "template:"+name)
		}
	}
	if len(onHost) != len(inCP) {
		sort.Strings(onHost)
		sort.Strings(inCP)
		out = append(out, fmt.Sprintf("templates: the control plane lists %d %v, the host holds %d %v", len(inCP), inCP, len(onHost), onHost))
		for _, n := range append(onHost, inCP...) {
			bad = append(bad, "template:"+n)
		}
	}
	sort.Strings(out)
	return out, bad
}

// converge polls both views until they agree or within passes, and
// returns how long it took, or the last disagreements.
func converge(ctx context.Context, c rest, env *stackEnv, within time.Duration, ignore map[string]bool) (_ time.Duration, last, bad []string, _ error) {
	start := time.Now()
	for {
		cp, err := c.cpView(ctx)
		var tpls map[string]string
		if err == nil {
			tpls, err = c.cpTemplates(ctx)
		}
		var ag agentView
		if err == nil {
			ag, err = readAgent(ctx, env)
		}
		if err == nil {
			last, bad = disagreements(cp, tpls, ag, ignore)
			if len(last) == 0 {
				return time.Since(start), nil, nil, nil
			}
		} else {
			last, bad = []string{"reading the views: " + err.Error()}, nil
		}
		if time.Since(start) > within {
			return time.Since(start), last, bad, nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), last, bad, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
