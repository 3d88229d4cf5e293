package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// cpStates are every state a listed sandbox may be in (all but stopped).
var cpStates = []api.SandboxState{api.SandboxStateStarting, api.SandboxStateRunning, api.SandboxStatePaused,
	api.SandboxStateHibernated, api.SandboxStateMissing, api.SandboxStateError}

// controlPlaneView lists the team's sandboxes as the control plane has them.
func controlPlaneView(ctx context.Context, c *wrenn.Client) (map[string]string, error) {
	sbs, err := c.Sandboxes.List(ctx, wrenn.ListOptions{States: cpStates, PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(sbs))
	for _, sb := range sbs {
		out[sb.ID] = string(sb.Details.State)
	}
	return out, nil
}

// agentState maps the agent's record states (internal/agent/state) to the
// control plane's words, as the control plane's state table does
// (internal/controlplane/sandboxes.FromAgent): the agent's starting is
// running there, stopping is on its way to stopped.
func agentState(s string) string {
	switch s {
	case "starting":
		return "running"
	case "stopping":
		return "stopped"
	}
	return s
}

// agentView reads the agent's own records, dir/sandboxes/<id>/sandbox.json,
// which the agent rewrites atomically on every state change: the agent's
// truth from the outside. A directory without a record is listed with
// state "no-record".
func agentView(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "sandboxes"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list agent sandboxes: %w", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "sandboxes", e.Name(), "sandbox.json"))
		if errors.Is(err, fs.ErrNotExist) {
			out[e.Name()] = "no-record"
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read agent record of %s: %w", e.Name(), err)
		}
		var rec struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("decode agent record of %s: %w", e.Name(), err)
		}
		out[e.Name()] = agentState(rec.State)
	}
	return out, nil
}

// agentMetrics scrapes the agent's wrenn_agent_sandboxes gauge (its
// in-memory view) from its plain-HTTP metrics listener, states mapped like
// agentView's and zero counts left out.
func agentMetrics(ctx context.Context, addr string) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape agent metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape agent metrics: status %s", resp.Status)
	}
	return parseSandboxGauge(bufio.NewScanner(resp.Body))
}

// parseSandboxGauge reads `wrenn_agent_sandboxes{state="x"} n` lines.
func parseSandboxGauge(sc *bufio.Scanner) (map[string]int, error) {
	const prefix = `wrenn_agent_sandboxes{state="`
	out := map[string]int{}
	seen := false
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		st, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("agent metrics: bad line %q", sc.Text())
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("agent metrics: bad value in %q", sc.Text())
		}
		seen = true
		if f != 0 {
			out[agentState(st)] += int(f)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("agent metrics: %w", err)
	}
	if !seen {
		return nil, errors.New("agent metrics: no wrenn_agent_sandboxes gauge")
	}
	return out, nil
}

// differences lists every way the views disagree: a sandbox on one side
// only, a different state, or a gauge that does not count the records.
// An agent record in state stopped is a sandbox the control plane rightly
// no longer lists, but its directory should not be there either: it is a
// difference too.
func differences(cp, agent map[string]string, gauge map[string]int) []string {
	var d []string
	for _, id := range slices.Sorted(maps.Keys(cp)) {
		a, ok := agent[id]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s: %s in the control plane, unknown to the agent", id, cp[id]))
		case a != cp[id]:
			d = append(d, fmt.Sprintf("%s: %s in the control plane, %s on the agent", id, cp[id], a))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(agent)) {
		if _, ok := cp[id]; !ok {
			d = append(d, fmt.Sprintf("%s: %s on the agent, not listed by the control plane", id, agent[id]))
		}
	}
	counted := map[string]int{}
	for _, st := range agent {
		if st != "no-record" {
			counted[st]++
		}
	}
	if gauge != nil && !maps.Equal(counted, gauge) {
		d = append(d, fmt.Sprintf("agent gauge %s but its records %s", formatCounts(gauge), formatCounts(counted)))
	}
	return d
}

// agree compares the control plane with the agent until they agree or
// wait runs out (an agent's event reaches the control plane within a
// moment; a missed one waits for the next heartbeat), and returns the
// last comparison.
func agree(ctx context.Context, c *wrenn.Client, dir, metricsAddr, when string, wait time.Duration) Agreement {
	start := time.Now()
	for {
		a := Agreement{When: when}
		var errs []string
		cp, err := controlPlaneView(ctx, c)
		if err != nil {
			errs = append(errs, "control plane: "+err.Error())
		}
		ag, err := agentView(dir)
		if err != nil {
			errs = append(errs, "agent records: "+err.Error())
		}
		gauge, err := agentMetrics(ctx, metricsAddr)
		if err != nil {
			errs = append(errs, "agent gauge: "+err.Error())
		}
		a.ControlPlane, a.Agent, a.AgentMetrics = cp, ag, gauge
		a.Differences = append(errs, differences(cp, ag, gauge)...)
		a.OK = len(a.Differences) == 0
		a.Waited = time.Since(start).Round(time.Millisecond).String()
		if a.OK || time.Since(start) > wait || ctx.Err() != nil {
			return a
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
