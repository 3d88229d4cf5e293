package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestCLIWorkflow drives the wrenn binary the way a person does: create,
// exec with exit codes, cp of a 50 MiB file both ways, an interactive
// shell on a real pseudo-terminal, ls --json, kill.
func TestCLIWorkflow(t *testing.T) {
	st := stack(t)
	env := append(os.Environ(), "WRENN_API_URL="+st.URL, "WRENN_API_KEY="+st.Admin.APIKey, "HOME="+t.TempDir())
	wrenn := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(shared.bin, "wrenn"), args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("wrenn %v: %v", args, err)
		}
		return out.String(), errb.String(), code
	}

	out, errOut, code := wrenn(t, "sandbox", "create", "--metadata", "journey=cli")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if id == "" || strings.ContainsAny(id, " \n") {
		t.Fatalf("create printed %q, want the id", out)
	}
	defer wrenn(t, "sandbox", "kill", id)

	if out, _, code := wrenn(t, "sandbox", "exec", id, "--", "echo hi; exit 7"); code != 7 || out != "hi\n" {
		t.Fatalf("exec: exit %d, stdout %q; want 7 and hi", code, out)
	}
	if _, errOut, code := wrenn(t, "sandbox", "exec", id, "--", "ls", "/nonexistent"); code == 0 || !strings.Contains(errOut, "No such file") {
		t.Fatalf("exec of a failing ls: exit %d, stderr %q", code, errOut)
	}

	// cp: 50 MiB up and back down, checked by SHA-256.
	dir := t.TempDir()
	src := filepath.Join(dir, "big.bin")
	data := make([]byte, 50<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, errOut, code := wrenn(t, "sandbox", "cp", src, id+":/home/user/big.bin"); code != 0 {
		t.Fatalf("cp up: exit %d: %s", code, errOut)
	}
	up := time.Since(start)
	start = time.Now()
	back := filepath.Join(dir, "back.bin")
	if _, errOut, code := wrenn(t, "sandbox", "cp", id+":/home/user/big.bin", back); code != 0 {
		t.Fatalf("cp down: exit %d: %s", code, errOut)
	}
	t.Logf("cp 50 MiB: up %s, down %s", up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	got, err := os.ReadFile(back)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("cp round trip: %d bytes back (err %v), checksum differs", len(got), err)
	}

	// shell on a pseudo-terminal: type a command, see its output, exit.
	shellJourney(t, env, id)

	out, errOut, code = wrenn(t, "sandbox", "ls", "--json")
	if code != 0 {
		t.Fatalf("ls --json: exit %d: %s", code, errOut)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ls --json is not a JSON array: %v: %q", err, out)
	}
	found := false
	for _, s := range list {
		found = found || s["id"] == id
	}
	if !found {
		t.Fatalf("ls --json lacks %s: %s", id, out)
	}

	if _, errOut, code := wrenn(t, "sandbox", "info", "no-such-sandbox"); code != 1 || !strings.Contains(errOut, "(not_found)") {
		t.Fatalf("info of a missing sandbox: exit %d, stderr %q; want 1 and a not_found line", code, errOut)
	}
}

func shellJourney(t *testing.T, env []string, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(shared.bin, "wrenn"), "sandbox", "shell", id)
	cmd.Env = env
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatalf("start shell on a pty: %v", err)
	}
	defer tty.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, tty)
		done <- err
	}()
	if _, err := tty.Write([]byte("echo shell-$((40+2)); stty size; exit\n")); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if werr != nil {
		t.Fatalf("shell exited with %v; output %q", werr, out.String())
	}
	if !strings.Contains(out.String(), "shell-42") || !strings.Contains(out.String(), "30 100") {
		t.Fatalf("shell output lacks the command's output or the terminal size: %q", out.String())
	}
}
