package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// cancelTimeout bounds the DELETE sent when a followed build is
// interrupted: the user is waiting for the prompt.
const cancelTimeout = 10 * time.Second

// exitInterrupted is the exit code after Ctrl-C (128 + SIGINT).
const exitInterrupted = 130

func (a *app) templateBuildCommand() *cobra.Command {
	var (
		file, name        string
		buildArgs, logins []string
		noFollow, detach  bool
	)
	cmd := &cobra.Command{
		Use:   "build [DIR]",
		Short: "Build a template version from a Dockerfile or wrenn.yaml and the files in DIR",
		Long: `Build a new version of a template from a recipe (a Dockerfile, or
wrenn.yaml / wrenn.json) and its build context DIR (default "."), which is
uploaded without what its .dockerignore excludes. The build runs on a host;
its log is printed as it goes. Ctrl-C cancels the build unless --detach.

Registry logins for FROM <image>: --registry-login host=user:password, or
host=user:- to read the password from stdin (it then stays out of the shell
history). Logins are sent for this build only and never printed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			absDir, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if name == "" {
				if name = templateNameFrom(filepath.Base(absDir)); name == "" {
					return fmt.Errorf("cannot make a template name of directory %q: pass --name", filepath.Base(absDir))
				}
			}
			opts := wrenn.BuildOptions{Args: map[string]string{}}
			if file != "" {
				if opts.File, err = recipeInContext(absDir, file); err != nil {
					return err
				}
			}
			for _, kv := range buildArgs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--build-arg %q: want KEY=value", kv)
				}
				opts.Args[k] = v
			}
			if opts.Registries, err = a.registryLogins(logins); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := c.Templates.Build(ctx, name, absDir, opts)
			if err != nil {
				return err
			}
			if noFollow {
				fmt.Fprintln(a.env.Stdout, b.Id)
				return nil
			}
			fmt.Fprintf(a.env.Stdout, "building template %s version %d (build %s)\n", b.Template, b.Version, b.Id)
			final, err := a.followBuild(ctx, c, name, b.Id.String())
			if err != nil && ctx.Err() != nil {
				stop := context.WithoutCancel(ctx)
				if detach {
					fmt.Fprintf(a.env.Stderr, "wrenn: detached; the build goes on: wrenn template logs %s %s -f\n", name, b.Id)
					return nil
				}
				cctx, cancel := context.WithTimeout(stop, cancelTimeout)
				defer cancel()
				if cerr := c.Templates.CancelBuild(cctx, name, b.Id.String()); cerr != nil && !wrenn.IsConflict(cerr) {
					return fmt.Errorf("interrupted, and canceling build %s failed: %w", b.Id, cerr)
				}
				fmt.Fprintf(a.env.Stderr, "wrenn: interrupted; build %s canceled\n", b.Id)
				return exitError{exitInterrupted}
			}
			return a.buildOutcome(final, err)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the recipe (default: DIR/Dockerfile, wrenn.yaml, wrenn.yml or wrenn.json); must be inside DIR")
	f.StringVar(&name, "name", "", "template name (default: DIR's name, lowercased, other characters as '-')")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "KEY=value for the recipe's ARG (repeatable)")
	f.StringArrayVar(&logins, "registry-login", nil, "host=user:password (or host=user:- to read the password from stdin) for FROM <image> (repeatable)")
	f.BoolVar(&noFollow, "no-follow", false, "print the build ID and return without waiting")
	f.BoolVar(&detach, "detach", false, "on Ctrl-C stop following but let the build go on (default: cancel it)")
	return cmd
}

// templateNameFrom makes a name matching ^[a-z0-9][a-z0-9-]{0,39}$ from
// s: lowercased, each run of other characters one '-', no leading or
// trailing '-', at most 40 characters. "" when nothing is left.
func templateNameFrom(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	n := b.String()
	if len(n) > 40 {
		n = n[:40]
	}
	return strings.TrimRight(n, "-")
}

// recipeInContext turns -f into the recipe's slash path inside the
// context: a path relative to the working directory (as docker build -f)
// or, failing that, to the context.
func recipeInContext(absDir, file string) (string, error) {
	candidates := []string{file}
	if !filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(absDir, file))
	}
	for _, p := range candidates {
		abs, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		if _, err := os.Stat(abs); err != nil {
			continue
		}
		rel, err := filepath.Rel(absDir, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", fmt.Errorf("-f %s: the recipe must be inside the build context %s", file, absDir)
		}
		return filepath.ToSlash(rel), nil
	}
	return "", fmt.Errorf("-f %s: no such file (looked in the working directory and in %s)", file, absDir)
}

// registryLogins parses --registry-login values. A password "-" is read
// from stdin (once: stdin is a single stream). Error messages name the
// host, never the password.
func (a *app) registryLogins(vals []string) (map[string]wrenn.RegistryAuth, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string]wrenn.RegistryAuth{}
	stdinUsed := false
	for _, v := range vals {
		host, cred, ok := strings.Cut(v, "=")
		user, pass, ok2 := strings.Cut(cred, ":")
		if !ok || !ok2 || host == "" || user == "" {
			return nil, fmt.Errorf("--registry-login for %q: want host=user:password or host=user:-", host)
		}
		if pass == "-" {
			if stdinUsed {
				return nil, fmt.Errorf("--registry-login for %s: only one password can come from stdin", host)
			}
			stdinUsed = true
			p, err := a.readSecret(fmt.Sprintf("Password for %s@%s: ", user, host))
			if err != nil {
				return nil, fmt.Errorf("--registry-login for %s: %w", host, err)
			}
			pass = p
		}
		if pass == "" {
			return nil, fmt.Errorf("--registry-login for %s: empty password", host)
		}
		out[host] = wrenn.RegistryAuth{Username: user, Password: pass}
	}
	return out, nil
}

// readSecret reads one line from stdin, without echo (after a prompt on
// stderr) when stdin is a terminal.
func (a *app) readSecret(prompt string) (string, error) {
	if fd, ok := terminalFd(a.env.Stdin); ok {
		fmt.Fprint(a.env.Stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(a.env.Stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(a.env.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// followBuild prints the build's log as it comes, with a progress line at
// the bottom when stdout is a terminal, and returns the final build.
func (a *app) followBuild(ctx context.Context, c *wrenn.Client, name, id string) (*wrenn.TemplateBuild, error) {
	_, tty := terminalFd(a.env.Stdout)
	p := &buildPrinter{w: a.env.Stdout, tty: tty, start: time.Now()}
	if tty {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					p.redraw()
				}
			}
		}()
		defer func() {
			close(stop)
			wg.Wait()
			p.clear()
		}()
	}
	return c.Templates.WaitBuild(ctx, name, id, p.entry)
}

// buildOutcome prints the end of a followed build: the summary line, or
// the failure on stderr with exit code 1.
func (a *app) buildOutcome(b *wrenn.TemplateBuild, err error) error {
	if b == nil {
		return err
	}
	took := buildDuration(b)
	if err != nil {
		if errors.Is(err, wrenn.ErrBuildCanceled) {
			fmt.Fprintf(a.env.Stderr, "wrenn: template %s version %d: build canceled after %s\n", b.Template, b.Version, took)
			return exitError{1}
		}
		at := ""
		if b.CurrentStep != nil && b.Steps > 0 {
			at = fmt.Sprintf(" at step %d/%d", *b.CurrentStep, b.Steps)
		}
		code := "internal"
		if b.ErrorCode != nil && *b.ErrorCode != "" {
			code = *b.ErrorCode
		}
		msg := "no reason given"
		if b.Error != nil && *b.Error != "" {
			msg = *b.Error
		}
		fmt.Fprintf(a.env.Stderr, "wrenn: template %s version %d failed%s after %s (%s):\n%s\n", b.Template, b.Version, at, took, code, indent(msg, "  "))
		return exitError{1}
	}
	fmt.Fprintf(a.env.Stdout, "template %s version %d ready in %s (%d of %d steps cached)\n", b.Template, b.Version, took, b.CachedSteps, b.Steps)
	return nil
}

// buildDuration is the server's duration, else the span between the
// build's timestamps.
func buildDuration(b *wrenn.TemplateBuild) string {
	d := time.Duration(0)
	switch {
	case b.DurationSeconds != nil:
		d = time.Duration(float64(*b.DurationSeconds) * float64(time.Second))
	case b.FinishedAt != nil:
		d = b.FinishedAt.Sub(b.CreatedAt)
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// buildPrinter writes log entries: a step's first entry as its header
// "[3/7] Dockerfile:5: RUN ...", its later entries (the step's output)
// indented, other phases as "[phase] text". On a terminal it keeps a
// progress line (step, elapsed time) under the log. entry and redraw
// run on different goroutines.
type buildPrinter struct {
	w     io.Writer
	tty   bool
	start time.Time
	now   func() time.Time // time.Now when nil; tests fix it

	mu          sync.Mutex
	step        int // the step whose header was printed last
	steps       int
	phase       api.TemplateBuildLogEntryPhase
	statusDrawn bool
}

func (p *buildPrinter) entry(e wrenn.BuildLogEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	if e.Steps != nil {
		p.steps = *e.Steps
	}
	p.phase = e.Phase
	switch {
	case e.Phase == api.TemplateBuildLogEntryPhaseStep && e.Step != nil && *e.Step != p.step:
		p.step = *e.Step
		line := fmt.Sprintf("[%d/%d] %s", p.step, p.steps, e.Text)
		if e.Cached != nil && *e.Cached {
			line += " (cached)"
		}
		fmt.Fprintln(p.w, line)
	case e.Phase == api.TemplateBuildLogEntryPhaseStep:
		fmt.Fprintln(p.w, indent(e.Text, "    "))
	default:
		fmt.Fprintln(p.w, indent(e.Text, "["+string(e.Phase)+"] "))
	}
	p.drawLocked()
}

func (p *buildPrinter) redraw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	p.drawLocked()
}

func (p *buildPrinter) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

func (p *buildPrinter) clearLocked() {
	if p.statusDrawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.statusDrawn = false
	}
}

// drawLocked writes the progress line without a newline, so the next
// log line or redraw replaces it.
func (p *buildPrinter) drawLocked() {
	if !p.tty {
		return
	}
	where := string(p.phase)
	if p.step > 0 && p.steps > 0 {
		where = fmt.Sprintf("step %d/%d", p.step, p.steps)
	}
	if where == "" {
		where = "queued"
	}
	now := time.Now
	if p.now != nil {
		now = p.now
	}
	fmt.Fprintf(p.w, "==> %s, %.0fs", where, now().Sub(p.start).Seconds())
	p.statusDrawn = true
}

func (a *app) templateBuildsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "builds <name>",
		Short: "List a template's builds, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			bs, err := c.Templates.Builds(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				if bs == nil {
					bs = []wrenn.TemplateBuild{}
				}
				return printJSON(a.env.Stdout, bs)
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVERSION\tSTATUS\tSTEPS\tCACHED\tFROM\tCREATED\tDURATION")
			for _, b := range bs {
				dur := "-"
				if b.Status != api.TemplateBuildStatusBuilding {
					dur = buildDuration(&b)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\n", b.Id, b.Version, b.Status, b.Steps, b.CachedSteps, deref(b.From), b.CreatedAt.Local().Format("2006-01-02 15:04:05"), dur)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func (a *app) templateLogsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs <name> <build-id>",
		Short: "Print a build's log; with -f follow it to the end",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if follow {
				b, err := a.followBuild(cmd.Context(), c, args[0], args[1])
				return a.buildOutcome(b, err)
			}
			st, err := c.Templates.BuildLogs(cmd.Context(), args[0], args[1], 0, false)
			if err != nil {
				return err
			}
			defer st.Close()
			p := &buildPrinter{w: a.env.Stdout}
			for e, ok := st.Next(); ok; e, ok = st.Next() {
				p.entry(e)
			}
			return st.Err()
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the build ends, then print its outcome")
	return cmd
}

func (a *app) templateCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel <name> <build-id>",
		Short: "Cancel a running build",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.Templates.CancelBuild(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintln(a.env.Stdout, args[1])
			return nil
		},
	}
}
