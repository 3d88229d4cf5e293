package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/leakcheck"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

func TestMixPick(t *testing.T) {
	m := Mix{{StepExec, 3}, {StepFork, 1}}
	r := rand.New(rand.NewPCG(1, 2))
	counts := map[string]int{}
	for range 40_000 {
		counts[m.Pick(r)]++
	}
	if len(counts) != 2 {
		t.Fatalf("picked %v, want only exec and fork", counts)
	}
	// 3:1 within a few percent.
	if ratio := float64(counts[StepExec]) / float64(counts[StepFork]); ratio < 2.8 || ratio > 3.2 {
		t.Errorf("exec:fork = %.2f, want about 3 (%v)", ratio, counts)
	}
}

func TestMixLife(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 1))
	ends := map[string]int{}
	steps := map[string]int{}
	for range 6000 {
		l := DefaultMix.Life(r)
		ends[l.End]++
		if len(l.Steps) > 12 {
			t.Fatalf("life of %d steps, want at most 12", len(l.Steps))
		}
		if l.End != EndKill && len(l.Steps) > 2 {
			t.Fatalf("an early end (%s) after %d steps, want at most 2", l.End, len(l.Steps))
		}
		for _, s := range l.Steps {
			steps[s]++
		}
	}
	for _, e := range []string{EndKill, EndKillPaused, EndKillBusy} {
		if ends[e] == 0 {
			t.Errorf("no life ended with %s in 6000: %v", e, ends)
		}
	}
	for _, w := range DefaultMix {
		if steps[w.Step] == 0 {
			t.Errorf("step %s never planned: %v", w.Step, steps)
		}
	}
	// The same seed plans the same lives.
	a, b := rand.New(rand.NewPCG(3, 4)), rand.New(rand.NewPCG(3, 4))
	for range 50 {
		la, lb := DefaultMix.Life(a), DefaultMix.Life(b)
		if la.End != lb.End || !slices.Equal(la.Steps, lb.Steps) {
			t.Fatalf("same seed, different lives: %v vs %v", la, lb)
		}
	}
}

func TestMixValidate(t *testing.T) {
	if err := DefaultMix.Validate(); err != nil {
		t.Fatalf("DefaultMix: %v", err)
	}
	for _, m := range []Mix{nil, {{"dance", 1}}, {{StepExec, 0}}} {
		if err := m.Validate(); err == nil {
			t.Errorf("Validate(%v): want an error", m)
		}
	}
}

func TestStats(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Stats(ds, 2)
	if s.Count != 100 || s.Errors != 2 || s.P50ms != 50 || s.P95ms != 95 || s.MaxMs != 100 {
		t.Errorf("Stats(1..100 ms) = %+v", s)
	}
	if s := Stats([]time.Duration{1500 * time.Microsecond}, 0); s.P50ms != 1.5 || s.P95ms != 1.5 {
		t.Errorf("Stats(one) = %+v", s)
	}
	if s := Stats(nil, 0); s != (OpStats{}) {
		t.Errorf("Stats(none) = %+v", s)
	}
}

func TestReportOKAndMarkdown(t *testing.T) {
	rec := newRecorder()
	rec.op("exec", 10*time.Millisecond, nil)
	rec.op("exec", 30*time.Millisecond, errors.New("boom"))
	rec.life(EndKill)
	rec.skip("fork: no VM slot")
	rep := &Report{Command: "wrenn-soak -duration 1s", Start: time.Now(), Duration: "1s", Workers: 1, HibernateMode: "cold-pause",
		Agreement: []Agreement{{When: "end", OK: true}},
		Resources: []leakcheck.Resource{{Kind: leakcheck.KindNFTTable, Name: "inet wsoak"}}}
	rec.fill(rep)
	if !rep.OK() {
		t.Fatalf("a clean report is not OK: %+v", rep)
	}
	md := rep.Markdown()
	for _, want := range []string{"## Soak PASS", "| exec | 2 | 1 | 10 | 30 | 30 |", "Unexpected errors: 0", "fork: no VM slot 1", "inet wsoak", "end: 0 sandboxes"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	rec.fail(Failure{Time: time.Now(), Worker: 2, SandboxID: "sb1", Step: StepPause, Op: "resume", Error: "it broke", State: "paused", Console: "kernel panic"})
	rec.fill(rep)
	if rep.OK() {
		t.Error("a report with an unexpected error is OK")
	}
	md = rep.Markdown()
	for _, want := range []string{"## Soak FAIL", "Unexpected errors: 1", "worker 2 sandbox sb1, step pause, resume: it broke (state then: paused)", "kernel panic"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	for _, bad := range []*Report{
		{Leaks: []leakcheck.Resource{{Kind: leakcheck.KindNetNS, Name: "wsoak-1"}}, Agreement: []Agreement{{OK: true}}},
		{Agreement: []Agreement{{OK: false}}},
		{},
		{Agreement: []Agreement{{OK: true}}, LeakCheckError: "nft: not found"},
		{Agreement: []Agreement{{OK: true}}, StackError: "wrenn-agent restarted 1 times"},
	} {
		if bad.OK() {
			t.Errorf("OK() for %+v", bad)
		}
	}

	path := filepath.Join(t.TempDir(), "r.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back Report
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &back); err != nil || len(back.Unexpected) != 1 || back.Ops["exec"].Count != 2 {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
}

func TestDifferences(t *testing.T) {
	if d := differences(map[string]string{}, map[string]string{}, map[string]int{}); len(d) != 0 {
		t.Errorf("empty views differ: %v", d)
	}
	cp := map[string]string{"a": "running", "b": "paused", "c": "running"}
	ag := map[string]string{"a": "running", "b": "running", "d": "stopped"}
	gauge := map[string]int{"running": 2, "stopped": 1}
	d := differences(cp, ag, gauge)
	want := []string{
		"b: paused in the control plane, running on the agent",
		"c: running in the control plane, unknown to the agent",
		"d: stopped on the agent, not listed by the control plane",
	}
	if !slices.Equal(d, want) {
		t.Errorf("differences:\n%q\nwant:\n%q", d, want)
	}
	d = differences(map[string]string{"a": "running"}, map[string]string{"a": "running"}, map[string]int{"running": 2})
	if len(d) != 1 || !strings.Contains(d[0], "gauge running 2 but its records running 1") {
		t.Errorf("gauge mismatch not reported: %v", d)
	}
}

func TestAgentViews(t *testing.T) {
	dir := t.TempDir()
	for id, st := range map[string]string{"a": "running", "b": "starting", "c": "stopping", "d": "paused"} {
		d := filepath.Join(dir, "sandboxes", id)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "sandbox.json"), []byte(`{"id":"`+id+`","state":"`+st+`"}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "sandboxes", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := agentView(dir)
	want := map[string]string{"a": "running", "b": "running", "c": "stopped", "d": "paused", "e": "no-record"}
	if err != nil || !mapsEqual(got, want) {
		t.Errorf("agentView = %v, %v; want %v", got, err, want)
	}
	if got, err := agentView(filepath.Join(dir, "none")); err != nil || len(got) != 0 {
		t.Errorf("agentView(no dir) = %v, %v", got, err)
	}

	metrics := "# HELP wrenn_agent_sandboxes x\nwrenn_agent_sandboxes{state=\"running\"} 2\nwrenn_agent_sandboxes{state=\"starting\"} 1\nwrenn_agent_sandboxes{state=\"paused\"} 0\nother 1\n"
	g, err := parseSandboxGauge(bufio.NewScanner(strings.NewReader(metrics)))
	if err != nil || !mapsEqual(g, map[string]int{"running": 3}) {
		t.Errorf("parseSandboxGauge = %v, %v", g, err)
	}
	if _, err := parseSandboxGauge(bufio.NewScanner(strings.NewReader("other 1\n"))); err == nil {
		t.Error("parseSandboxGauge without the gauge: want an error")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(metrics)) }))
	defer srv.Close()
	if g, err := agentMetrics(context.Background(), strings.TrimPrefix(srv.URL, "http://")); err != nil || g["running"] != 3 {
		t.Errorf("agentMetrics = %v, %v", g, err)
	}
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPostAndHibernateProbe(t *testing.T) {
	var gotBody map[string]any
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/ok/pause", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(401)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&gotBody)
		_, _ = w.Write([]byte(`{"id":"ok","state":"paused"}`))
	})
	mux.HandleFunc("POST /v1/sandboxes/gone/pause", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"sandbox gone not found"}}`))
	})
	mux.HandleFunc("POST /v1/sandboxes/html/pause", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		_, _ = w.Write([]byte(`<html>bad gateway</html>`))
	})
	doc := "paths:\n  /v1/sandboxes/{sandboxID}/pause:\n"
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(doc)) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	e := &env{base: srv.URL, key: "k", hc: srv.Client()}
	ctx := context.Background()

	sb, err := e.post(ctx, "ok", "pause", map[string]any{"keep_memory": false})
	if err != nil || sb.State != "paused" || gotBody["keep_memory"] != false {
		t.Errorf("post pause = %+v, %v (body %v)", sb, err, gotBody)
	}
	if _, err := e.post(ctx, "gone", "pause", struct{}{}); !wrenn.IsNotFound(err) {
		t.Errorf("post on a missing sandbox: %v, want not_found", err)
	}
	_, err = e.post(ctx, "html", "pause", struct{}{})
	var we *wrenn.Error
	if !errors.As(err, &we) || we.Status != 502 || !strings.Contains(we.Message, "bad gateway") {
		t.Errorf("post answered by a non-JSON 502: %v", err)
	}

	if hib, err := hasHibernate(ctx, srv.Client(), srv.URL); err != nil || hib {
		t.Errorf("hasHibernate without the path = %v, %v", hib, err)
	}
	doc += "  /v1/sandboxes/{sandboxID}/hibernate:\n"
	if hib, err := hasHibernate(ctx, srv.Client(), srv.URL); err != nil || !hib {
		t.Errorf("hasHibernate with the path = %v, %v", hib, err)
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, c := range []Config{{Duration: 0, Workers: 1}, {Duration: time.Second, Workers: 0}, {Duration: time.Second, Workers: MaxVMs + 1},
		{Duration: time.Second, Workers: 1, Mix: Mix{{"x", 1}}}} {
		if err := c.defaults(); err == nil {
			t.Errorf("defaults(%+v): want an error", c)
		}
	}
	c := Config{Duration: time.Second, Workers: 2}
	if err := c.defaults(); err != nil || c.Stack != DefaultStack || c.MemoryMB != 256 || c.Template != "minimal" {
		t.Errorf("defaults = %+v, %v", c, err)
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	w := prefixed(&b, "p: ")
	for _, s := range []string{"one\ntw", "o\n", "three"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != "p: one\np: two\n" {
		t.Errorf("prefixed = %q", got)
	}
}

func TestLogLines(t *testing.T) {
	dir := t.TempDir()
	var agent strings.Builder
	for i := range 30 {
		agent.WriteString("level=INFO msg=x sandbox_id=sb1 n=" + string(rune('a'+i%26)) + "\n")
		agent.WriteString("level=INFO msg=y sandbox_id=sb2\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.log"), []byte(agent.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cp.log"), []byte("a sb1 line\nother\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := logLines(dir, "sb1", 20)
	if len(got) != 21 || got[0] != "cp.log: a sb1 line" || !strings.HasPrefix(got[1], "agent.log: ") || strings.Contains(strings.Join(got, "\n"), "sb2") {
		t.Errorf("logLines = %d lines:\n%s", len(got), strings.Join(got, "\n"))
	}
	if got := logLines("", "sb1", 5); got != nil {
		t.Errorf("logLines without a dir = %v", got)
	}
}
