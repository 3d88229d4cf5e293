//go:build linux

package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/builder"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
)

// contextTar is a build context holding files.
func contextTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// buildHost is a harness's manager with a template builder on it.
type buildHost struct {
	m      *agent.Manager
	builds *hostbuild.Service
}

func newBuildHost(t *testing.T, h *harness, m *agent.Manager) *buildHost {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	b, err := builder.New(builder.Config{Dir: h.dir, VMs: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	s, err := hostbuild.New(hostbuild.Config{Dir: h.dir, Builder: b, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return &buildHost{m: m, builds: s}
}

// build uploads files as a context and builds them as template name.
func (bh *buildHost) build(ctx context.Context, t *testing.T, id, name, team, recipeFile string, files map[string]string) (builder.Result, []builder.Event, error) {
	t.Helper()
	if _, err := bh.builds.SaveContext(ctx, id, bytes.NewReader(contextTar(t, files))); err != nil {
		t.Fatalf("save context: %v", err)
	}
	var events []builder.Event
	res, err := bh.builds.Build(ctx, hostbuild.Request{
		Build: id, TeamID: team, Name: name, Version: 1, RecipeFile: recipeFile, BaseTemplate: agent.DefaultTemplate,
		Network: network.Policy{},
	}, func(e builder.Event) {
		events = append(events, e)
		t.Logf("build %s: [%s %d/%d cached=%v] %s", id, e.Phase, e.Step, e.Steps, e.Cached, e.Text)
	})
	return res, events, err
}

// TestBuildTemplate builds a template from a Dockerfile and a wrenn.yaml
// (ENV, WORKDIR, COPY --chown, RUN, a start command with a port check),
// creates a sandbox from it (the server answers at once), rebuilds it
// from the cache, and fails a build on a failing RUN with its output.
func TestBuildTemplate(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	bh := newBuildHost(t, h, m)
	const team = "team-a"
	files := map[string]string{
		"Dockerfile": `FROM minimal
ENV GREETING="hello from the recipe"
WORKDIR /srv/app
COPY --chown=user:user index.html ./
RUN echo "$GREETING" > /srv/app/greeting.txt && echo built-by-run
CMD ["python3", "-m", "http.server", "8000"]
`,
		"wrenn.yaml": "dockerfile: Dockerfile\nready:\n  port: 8000\n  timeout: 90s\n",
		"index.html": "<h1>served</h1>\n",
	}
	start := time.Now()
	res, events, err := bh.build(ctx, t, "bld1", "tpl-a-v1", team, "wrenn.yaml", files)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	first := time.Since(start)
	if !res.Snapshot || res.Cached != 0 || res.Steps != 3 {
		t.Fatalf("result %+v: want a snapshot, 3 steps, none cached", res)
	}
	if !hasEvent(events, "built-by-run") {
		t.Errorf("the RUN step's output is not in the build's events")
	}

	info, err := m.Create(ctx, agent.CreateRequest{Template: "tpl-a-v1", TeamID: team})
	if err != nil {
		t.Fatalf("create from the built template: %v", err)
	}
	// The server was started before the snapshot: it answers right away.
	c, err := net.DialTimeout("tcp", net.JoinHostPort(info.Address, "8000"), 5*time.Second)
	if err != nil {
		t.Fatalf("the started server does not answer right after create: %v", err)
	}
	fmt.Fprintf(c, "GET /index.html HTTP/1.0\r\n\r\n")
	var resp bytes.Buffer
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = resp.ReadFrom(c)
	c.Close()
	if !strings.Contains(resp.String(), "<h1>served</h1>") {
		t.Errorf("GET /index.html answered %q", resp.String())
	}
	out, _, code := run(ctx, t, m, info.ID, `echo "$GREETING|$(pwd)|$(cat greeting.txt)|$(stat -c %U /srv/app/index.html)|$(whoami)"`)
	if code != 0 || strings.TrimSpace(out) != "hello from the recipe|/srv/app|hello from the recipe|user|user" {
		t.Errorf("in the sandbox: %q (exit %d), want env, workdir, RUN's file, COPY's owner and the default user", out, code)
	}
	if _, err := m.Create(ctx, agent.CreateRequest{Template: "tpl-a-v1", TeamID: "team-b"}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("another team's create from the template: %v, want permission denied", err)
	}

	// The same recipe again: every step from the cache.
	start = time.Now()
	res2, events2, err := bh.build(ctx, t, "bld2", "tpl-a-v2", team, "wrenn.yaml", files)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	second := time.Since(start)
	if res2.Cached != res2.Steps {
		t.Errorf("rebuild %+v: want every step cached", res2)
	}
	if hasEvent(events2, "built-by-run") {
		t.Errorf("the rebuild ran the RUN step again")
	}
	t.Logf("first build %s, cached rebuild %s", first.Round(time.Millisecond), second.Round(time.Millisecond))

	// Another team's identical recipe does not hit team-a's cache.
	res3, _, err := bh.build(ctx, t, "bld3", "tpl-b-v1", "team-b", "Dockerfile", map[string]string{"Dockerfile": "FROM minimal\nENV GREETING=\"hello from the recipe\"\nWORKDIR /srv/app\n"})
	if err != nil {
		t.Fatalf("team-b build: %v", err)
	}
	if res3.Cached != 0 {
		t.Errorf("team-b's build used %d cached steps of team-a's", res3.Cached)
	}

	// A failing step: the error names its line and carries its output.
	_, _, err = bh.build(ctx, t, "bld4", "tpl-a-bad", team, "Dockerfile", map[string]string{
		"Dockerfile": "FROM minimal\nRUN echo about-to-fail && exit 3\n",
	})
	var se *builder.StepError
	if !errors.As(err, &se) || se.Where != "Dockerfile:2" || se.ExitCode != 3 || !strings.Contains(se.Output, "about-to-fail") {
		t.Fatalf("failing build: %v, want a step error at Dockerfile:2, exit 3, with its output", err)
	}
	templates, err := m.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range templates {
		if tpl.Name == "tpl-a-bad" {
			t.Errorf("the failed build left its template behind")
		}
	}
	if err := m.Destroy(ctx, info.ID); err != nil {
		t.Fatal(err)
	}

	// A copy for another host: exported, imported under another name (so
	// its snapshot's disk must be pointed at the new path), it creates a
	// sandbox whose server answers. A stream that does not match the
	// recorded digest is refused and leaves nothing.
	var packed bytes.Buffer
	if err := m.ExportTemplate(ctx, team, "tpl-a-v1", &packed); err != nil {
		t.Fatalf("export: %v", err)
	}
	if err := m.ExportTemplate(ctx, "team-b", "tpl-a-v1", io.Discard); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("another team's export: %v, want permission denied", err)
	}
	if err := m.ImportTemplate(ctx, team, "tpl-a-bad-copy", "sha256:"+strings.Repeat("0", 64), bytes.NewReader(packed.Bytes())); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("import with the wrong digest: %v, want failed precondition", err)
	}
	t.Logf("packed template: %d MiB for a %d MiB image", packed.Len()>>20, res.ImageBytes>>20)
	if err := m.ImportTemplate(ctx, team, "tpl-a-copy", res.Digest, bytes.NewReader(packed.Bytes())); err != nil {
		t.Fatalf("import: %v", err)
	}
	copied, err := m.Create(ctx, agent.CreateRequest{Template: "tpl-a-copy", TeamID: team})
	if err != nil {
		t.Fatalf("create from the imported template: %v", err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(copied.Address, "8000"), 5*time.Second); err != nil {
		t.Errorf("the imported template's server does not answer: %v", err)
	} else {
		c.Close()
	}
	if gone, err := m.CollectCopies(ctx, 0); err != nil || len(gone) != 0 {
		t.Errorf("collected %v (%v) while a sandbox of the copy runs", gone, err)
	}
	if err := m.Destroy(ctx, copied.ID); err != nil {
		t.Fatal(err)
	}
	if gone, err := m.CollectCopies(ctx, time.Hour); err != nil || len(gone) != 0 {
		t.Errorf("collected %v (%v): the copy was used just now", gone, err)
	}
	if gone, err := m.CollectCopies(ctx, 0); err != nil || !slices.Equal(gone, []string{"tpl-a-copy"}) {
		t.Errorf("collected %v (%v), want only the unused copy tpl-a-copy", gone, err)
	}
	templates, err = m.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range templates {
		if tpl.Name == "tpl-a-bad-copy" {
			t.Errorf("a refused import left its template behind")
		}
	}

	// After an agent restart the built templates still create (their
	// images stay readable by VMMs), and a built image another template's
	// disk reads cannot be deleted.
	closed = true
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := h.agent(ctx)
	defer m2.Close()
	info2, err := m2.Create(ctx, agent.CreateRequest{Template: "tpl-a-v2", TeamID: team})
	if err != nil {
		t.Fatalf("create from a built template after an agent restart: %v", err)
	}
	if err := m2.SnapshotTemplateAs(ctx, team, info2.ID, "snap-of-built"); err != nil {
		t.Fatal(err)
	}
	if err := m2.Destroy(ctx, info2.ID); err != nil {
		t.Fatal(err)
	}
	err = m2.DeleteTemplateAs(ctx, team, "tpl-a-v2")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "snap-of-built") {
		t.Fatalf("delete a built template a snapshot template reads: %v, want failed precondition naming it", err)
	}
	if err := m2.DeleteTemplateAs(ctx, team, "snap-of-built"); err != nil {
		t.Fatal(err)
	}
	if err := m2.DeleteTemplateAs(ctx, team, "tpl-a-v2"); err != nil {
		t.Fatalf("delete the built template once nothing reads it: %v", err)
	}
}

// hasEvent reports whether a step printed line.
func hasEvent(events []builder.Event, line string) bool {
	for _, e := range events {
		if e.Phase == "step" && e.Text == line {
			return true
		}
	}
	return false
}
