package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wrenn/wrenn/api"
)

func bytesOrDash(p *int64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(*p)/(1<<20))
}

func (a *app) hostCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Add, list and remove the machines that run sandboxes"}
	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the team's hosts",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			hosts, err := c.Hosts.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.env.Stdout, hosts)
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tSTATUS\tADDRESS\tCPUS\tMEMORY\tSANDBOXES\tLAST HEARTBEAT")
			for _, h := range hosts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Id, h.Type, h.Status, deref(h.Address), intOrDash(h.Cpus),
					bytesOrDash(h.MemoryBytes), intOrDash(h.SandboxesRunning), timeOrDash(h.LastHeartbeatAt))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")

	var typ, address string
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a host and print its one-time registration token and the agent command",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !api.CreateHostRequestType(typ).Valid() {
				return fmt.Errorf("--type %q: want regular or byoc", typ)
			}
			s, err := a.settings()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			h, err := c.Hosts.Create(cmd.Context(), api.CreateHostRequestType(typ))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.env.Stdout, h)
			}
			if address == "" {
				address = "<this-host-ip>:50051"
			}
			fmt.Fprintf(a.env.Stdout, "Host %s added (%s).\n", h.Host.Id, h.Host.Type)
			fmt.Fprintf(a.env.Stdout, "Registration token (one use, expires %s):\n  %s\n\n", h.RegistrationExpiresAt.Local().Format(time.RFC3339), h.RegistrationToken)
			fmt.Fprintf(a.env.Stdout, "On the host, as root, run:\n  WRENN_CP_URL=%s wrenn-agent --register %s --address %s\n", s.APIURL, h.RegistrationToken, address)
			return nil
		},
	}
	add.Flags().StringVar(&typ, "type", "regular", "host type: regular or byoc")
	add.Flags().StringVar(&address, "address", "", "ip:port the agent will serve on, to fill into the printed command")
	add.Flags().BoolVar(&asJSON, "json", false, "print the created host and token as JSON")

	var force bool
	rm := &cobra.Command{
		Use:     "rm <id>...",
		Aliases: []string{"delete"},
		Short:   "Remove hosts (refused while sandboxes run on them, unless --force)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.Hosts.Delete(cmd.Context(), id, force); err != nil {
					return err
				}
				fmt.Fprintln(a.env.Stdout, id)
			}
			return nil
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "remove even while sandboxes run on the host")
	cmd.AddCommand(ls, add, rm)
	return cmd
}

func deref(p *string) string {
	if p == nil || *p == "" {
		return "-"
	}
	return *p
}

func intOrDash(p *int) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

func timeOrDash(p *time.Time) string {
	if p == nil {
		return "-"
	}
	return p.Local().Format("2006-01-02 15:04:05")
}
