package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// TestSDKAgentWorkflow is what an AI agent does through the Go SDK: write
// a script, run it with streamed output, read its results, pause and
// resume with a live process intact, fork twice, kill everything.
func TestSDKAgentWorkflow(t *testing.T) {
	st := stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := wrenn.NewClient(wrenn.WithBaseURL(st.URL), wrenn.WithAPIKey(st.Admin.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{Timeout: 10 * time.Minute, Metadata: map[string]string{"journey": "sdk"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	all := []*wrenn.Sandbox{sb}
	defer func() {
		for _, s := range all {
			if err := s.Kill(context.WithoutCancel(ctx)); err != nil && !wrenn.IsNotFound(err) {
				t.Errorf("kill %s: %v", s.ID, err)
			}
		}
	}()

	script := `import sys, time
total = 0
for i in range(1, 6):
    total += i * i
    print(f"step {i} total {total}", flush=True)
    time.sleep(0.05)
open("/home/user/result.txt", "w").write(str(total))
print("warning: done", file=sys.stderr)
`
	if _, err := sb.Files.Write(ctx, "/home/user/job.py", strings.NewReader(script)); err != nil {
		t.Fatalf("write script: %v", err)
	}
	var mu sync.Mutex
	var lines []string
	res, err := sb.Commands.Run(ctx, "python3 /home/user/job.py", wrenn.RunOptions{
		OnStdout: func(b []byte) { mu.Lock(); lines = append(lines, string(b)); mu.Unlock() },
		OnStderr: func([]byte) {},
	})
	if err != nil {
		t.Fatalf("run script: %v", err)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "step 5 total 55") || !strings.Contains(res.Stderr, "warning: done") {
		t.Fatalf("script result: %+v", res)
	}
	if len(lines) == 0 {
		t.Fatal("no streamed stdout callbacks")
	}
	r, err := sb.Files.Read(ctx, "/home/user/result.txt")
	if err != nil {
		t.Fatalf("read result: %v", err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if string(got) != "55" {
		t.Fatalf("result file: %q", got)
	}

	// A counter in a live process keeps counting across pause and resume.
	if _, err := sb.Commands.Start(ctx, `i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new && mv /tmp/counter.new /tmp/counter; sleep 0.1; done`, wrenn.RunOptions{Tag: "counter"}); err != nil {
		t.Fatalf("start counter: %v", err)
	}
	counter := func(s *wrenn.Sandbox) int {
		t.Helper()
		res, err := s.Commands.Run(ctx, "cat /tmp/counter", wrenn.RunOptions{})
		if err != nil {
			t.Fatalf("read counter in %s: %v", s.ID, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
		if err != nil {
			t.Fatalf("counter in %s: %q", s.ID, res.Stdout)
		}
		return n
	}
	waitCounter(t, func() int { return counter(sb) }, 3)
	if _, err := sb.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if info, err := sb.Info(ctx); err != nil || info.State != api.SandboxStatePaused {
		t.Fatalf("after pause: %+v %v", info, err)
	}
	if _, err := sb.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	before := counter(sb)
	waitCounter(t, func() int { return counter(sb) }, before+2)

	// Two forks: each has the source's files and is independent of it.
	forks, err := sb.Fork(ctx, 2)
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	all = append(all, forks...)
	if len(forks) != 2 {
		t.Fatalf("fork returned %d sandboxes", len(forks))
	}
	for i, f := range forks {
		res, err := f.Commands.Run(ctx, fmt.Sprintf("cat /home/user/result.txt; echo fork%d > /home/user/mine.txt", i), wrenn.RunOptions{})
		if err != nil || res.Stdout != "55" {
			t.Fatalf("fork %s: %+v %v", f.ID, res, err)
		}
	}
	for i, s := range append([]*wrenn.Sandbox{sb}, forks...) {
		res, err := s.Commands.Run(ctx, "cat /home/user/mine.txt 2>/dev/null || echo none", wrenn.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "none\n"
		if i > 0 {
			want = fmt.Sprintf("fork%d\n", i-1)
		}
		if res.Stdout != want {
			t.Fatalf("sandbox %s sees %q in mine.txt, want %q: forks are not independent", s.ID, res.Stdout, want)
		}
	}
}

// waitCounter polls read until it reaches at least min (a minute at most).
func waitCounter(t *testing.T, read func() int, min int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n := read()
		if n >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter stuck at %d, want >= %d", n, min)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTwoTeams: team B's key sees none of team A's sandboxes and cannot
// touch them.
func TestTwoTeams(t *testing.T) {
	st := stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := wrenn.NewClient(wrenn.WithBaseURL(st.URL), wrenn.WithAPIKey(st.Admin.APIKey))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := a.Sandboxes.Create(ctx, wrenn.CreateOptions{Metadata: map[string]string{"journey": "two-teams"}})
	if err != nil {
		t.Fatalf("team A create: %v", err)
	}
	defer sb.Kill(context.WithoutCancel(ctx))

	// Team B signs up on its own and makes a key.
	anon := client{base: st.URL}
	var sess api.Session
	anon.json(t, "POST", "/v1/auth/signup", map[string]string{"email": "b@example.com", "password": "b-password-123", "team_name": "team-b"}, http.StatusCreated, &sess)
	var key api.CreatedAPIKey
	client{base: st.URL, cred: sess.Token}.json(t, "POST", "/v1/api-keys", map[string]string{"name": "b"}, http.StatusCreated, &key)
	b, err := wrenn.NewClient(wrenn.WithBaseURL(st.URL), wrenn.WithAPIKey(key.Key))
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.Sandboxes.List(ctx, wrenn.ListOptions{})
	if err != nil {
		t.Fatalf("team B list: %v", err)
	}
	if len(list) != 0 {
		t.Fatalf("team B sees %d sandboxes, want none", len(list))
	}
	other := b.Sandboxes.Handle(sb.ID)
	if _, err := other.Info(ctx); !wrenn.IsNotFound(err) {
		t.Fatalf("team B info on team A's sandbox: %v, want not found", err)
	}
	if _, err := other.Commands.Run(ctx, "true", wrenn.RunOptions{}); !wrenn.IsNotFound(err) {
		t.Fatalf("team B exec in team A's sandbox: %v, want not found", err)
	}
	if err := other.Kill(ctx); !wrenn.IsNotFound(err) {
		t.Fatalf("team B kill of team A's sandbox: %v, want not found", err)
	}
	if _, err := sb.Info(ctx); err != nil {
		t.Fatalf("team A's sandbox after team B's attempts: %v", err)
	}
}
