package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

func (a *app) sandboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sbx"},
		Short:   "Create, inspect, use and destroy sandboxes",
	}
	cmd.AddCommand(
		a.sbxCreate(), a.sbxList(), a.sbxInfo(), a.sbxExec(), a.sbxShell(), a.sbxCopy(),
		a.sbxPause(), a.sbxHibernate(), a.sbxResume(), a.sbxFork(), a.sbxKill(), a.sbxLogs(), a.sbxTimeout(),
	)
	return cmd
}

// parseKV parses repeated key=value flags.
func parseKV(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// parseSeconds reads a duration as plain seconds ("300") or Go syntax
// ("5m").
func parseSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("timeout %q: must be positive", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("timeout %q: want seconds (300) or a duration (5m)", s)
	}
	return d, nil
}

func (a *app) sbxCreate() *cobra.Command {
	var o wrenn.CreateOptions
	var timeout string
	var metadata []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Metadata, err = parseKV("metadata", metadata); err != nil {
				return err
			}
			if timeout != "" {
				if o.Timeout, err = parseSeconds(timeout); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.Sandboxes.Create(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.env.Stdout, sb.Details)
			}
			fmt.Fprintln(a.env.Stdout, sb.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Template, "template", "", "template to start from (server default: minimal)")
	f.IntVar(&o.VCPUs, "vcpus", 0, "virtual CPUs")
	f.IntVar(&o.MemoryMB, "memory", 0, "memory in MiB")
	f.IntVar(&o.DiskMB, "disk", 0, "disk in MiB")
	f.StringVar(&timeout, "timeout", "", "idle timeout: seconds or a duration like 10m")
	f.StringArrayVar(&metadata, "metadata", nil, "key=value metadata (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print the sandbox as JSON")
	f.StringVar(&o.IdempotencyKey, "idempotency-key", "",
		"name this create (1-255 printable ASCII): repeating the command with the same key and flags within 24 h prints the same sandbox instead of making another (default: a fresh key, so only the CLI's own retries are safe)")
	return cmd
}

func (a *app) sbxList() *cobra.Command {
	var states string
	var metadata []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sandboxes (all but stopped, unless --state)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var o wrenn.ListOptions
			var err error
			if o.Metadata, err = parseKV("metadata", metadata); err != nil {
				return err
			}
			for _, s := range strings.Split(states, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				if !api.SandboxState(s).Valid() {
					return fmt.Errorf("--state %q: want one of starting, running, paused, hibernated, missing, stopped, error", s)
				}
				o.States = append(o.States, api.SandboxState(s))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sbs, err := c.Sandboxes.List(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]api.Sandbox, len(sbs))
				for i, sb := range sbs {
					out[i] = sb.Details
				}
				return printJSON(a.env.Stdout, out)
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTEMPLATE\tSTATE\tVCPUS\tMEMORY\tCREATED\tMETADATA")
			for _, sb := range sbs {
				d := sb.Details
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%s\t%s\n", d.Id, d.Template, d.State, d.Vcpus, d.MemoryMb,
					d.CreatedAt.Local().Format("2006-01-02 15:04"), formatKV(d.Metadata))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&states, "state", "", "comma-separated states to show")
	f.StringArrayVar(&metadata, "metadata", nil, "only sandboxes with key=value metadata (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func formatKV(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func (a *app) sbxInfo() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info <id>",
		Short: "Show a sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.Sandboxes.Connect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			d := sb.Details
			if asJSON {
				return printJSON(a.env.Stdout, d)
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
			row("ID", d.Id)
			row("Template", d.Template)
			row("State", d.State)
			if d.Error != nil {
				row("Error", *d.Error)
			}
			row("vCPUs", d.Vcpus)
			row("Memory", fmt.Sprintf("%d MiB", d.MemoryMb))
			row("Disk", fmt.Sprintf("%d MiB", d.DiskMb))
			row("Timeout", fmt.Sprintf("%d s, then %s", d.TimeoutSec, d.OnTimeout))
			if d.HostId != nil {
				row("Host", d.HostId.String())
			}
			if d.ForkedFrom != nil {
				row("Forked from", *d.ForkedFrom)
			}
			row("Metadata", formatKV(d.Metadata))
			row("Created", d.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) sbxExec() *cobra.Command {
	var o wrenn.RunOptions
	var env []string
	var timeout string
	cmd := &cobra.Command{
		Use:   "exec <id> -- <cmd> [args...]",
		Short: "Run a command, streaming its output; exit with its exit code",
		Long: `Run a command in a sandbox. Its stdout and stderr stream to this
process's; wrenn exits with the command's exit code. Standard input is
forwarded when it is not a terminal. A single argument after -- is a shell
line (run by bash -l -c); several are a program and its arguments.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Env, err = parseKV("env", env); err != nil {
				return err
			}
			if timeout != "" {
				if o.Timeout, err = parseSeconds(timeout); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sb := c.Sandboxes.Handle(args[0])
			line := args[1]
			if len(args) > 2 {
				o.Args = args[2:]
			}
			// Output goes out as it arrives; the callbacks run on one
			// goroutine, but guard anyway since stdout and stderr may be
			// the same writer.
			var mu sync.Mutex
			o.OnStdout = func(b []byte) { mu.Lock(); _, _ = a.env.Stdout.Write(b); mu.Unlock() }
			o.OnStderr = func(b []byte) { mu.Lock(); _, _ = a.env.Stderr.Write(b); mu.Unlock() }
			if _, isTerm := terminalFd(a.env.Stdin); !isTerm && a.env.Stdin != nil {
				o.Stdin = a.env.Stdin
			}
			res, err := sb.Commands.Run(cmd.Context(), line, o)
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return exitError{res.ExitCode}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Cwd, "cwd", "", "working directory")
	f.StringVar(&o.User, "user", "", "guest user (server default: user)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE environment (repeatable)")
	f.StringVar(&timeout, "timeout", "", "kill the command after this: seconds or a duration")
	return cmd
}

func (a *app) sbxPause() *cobra.Command {
	return a.simpleAction("pause <id>", "Pause a sandbox (memory and processes kept)", func(cmd *cobra.Command, sb *wrenn.Sandbox) error {
		d, err := sb.Pause(cmd.Context())
		if err == nil {
			fmt.Fprintln(a.env.Stdout, d.Id, d.State)
		}
		return err
	})
}

func (a *app) sbxHibernate() *cobra.Command {
	return a.simpleAction("hibernate <id>", "Write a sandbox's memory to disk and stop its VM (no RAM or vCPUs held until resumed)", func(cmd *cobra.Command, sb *wrenn.Sandbox) error {
		d, err := sb.Hibernate(cmd.Context())
		if err == nil {
			fmt.Fprintln(a.env.Stdout, d.Id, d.State)
		}
		return err
	})
}

func (a *app) sbxResume() *cobra.Command {
	return a.simpleAction("resume <id>", "Resume a paused or hibernated sandbox", func(cmd *cobra.Command, sb *wrenn.Sandbox) error {
		d, err := sb.Resume(cmd.Context())
		if err == nil {
			fmt.Fprintln(a.env.Stdout, d.Id, d.State)
		}
		return err
	})
}

func (a *app) sbxLogs() *cobra.Command {
	var tail int
	cmd := a.simpleAction("logs <id>", "Print the tail of the sandbox's console (kernel, init, envd)", func(cmd *cobra.Command, sb *wrenn.Sandbox) error {
		logs, err := sb.Logs(cmd.Context(), tail)
		if err != nil {
			return err
		}
		_, err = io.WriteString(a.env.Stdout, logs)
		return err
	})
	cmd.Flags().IntVar(&tail, "tail", 0, "bytes from the end (server default when 0, at most 1 MiB)")
	return cmd
}

// simpleAction is a command on one sandbox id.
func (a *app) simpleAction(use, short string, run func(*cobra.Command, *wrenn.Sandbox) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return run(cmd, c.Sandboxes.Handle(args[0]))
		},
	}
}

func (a *app) sbxFork() *cobra.Command {
	var n int
	var asJSON bool
	cmd := a.simpleAction("fork <id>", "Fork a sandbox, memory included; print the new ids", func(cmd *cobra.Command, sb *wrenn.Sandbox) error {
		forks, err := sb.Fork(cmd.Context(), n)
		if err != nil {
			return err
		}
		if asJSON {
			out := make([]api.Sandbox, len(forks))
			for i, f := range forks {
				out[i] = f.Details
			}
			return printJSON(a.env.Stdout, out)
		}
		for _, f := range forks {
			fmt.Fprintln(a.env.Stdout, f.ID)
		}
		return nil
	})
	cmd.Flags().IntVarP(&n, "count", "n", 1, "how many forks (1-20)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the forks as a JSON array")
	return cmd
}

func (a *app) sbxKill() *cobra.Command {
	return &cobra.Command{
		Use:   "kill <id>...",
		Short: "Destroy sandboxes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			// Kill every one asked for; report each failure and fail if any did.
			var failed error
			for _, id := range args {
				if err := c.Sandboxes.Handle(id).Kill(cmd.Context()); err != nil {
					if failed != nil {
						fmt.Fprintln(a.env.Stderr, errorLine(failed))
					}
					failed = err
					continue
				}
				fmt.Fprintln(a.env.Stdout, id)
			}
			return failed
		},
	}
}

func (a *app) sbxTimeout() *cobra.Command {
	return &cobra.Command{
		Use:   "timeout <id> <seconds>",
		Short: "Set how long a sandbox may sit idle from now",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseSeconds(args[1])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			info, err := c.Sandboxes.Handle(args[0]).SetTimeout(cmd.Context(), d)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "%s timeout %d s\n", info.Id, info.TimeoutSec)
			return nil
		},
	}
}
