package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) templateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "template", Aliases: []string{"tpl"}, Short: "Build, list and delete templates"}
	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List built-in and team templates",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			tpls, err := c.Templates.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.env.Stdout, tpls)
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSTATUS\tBUILTIN\tSNAPSHOT\tSIZE\tSOURCE\tCREATED")
			for _, t := range tpls {
				src := ""
				if t.SourceSandboxId != nil {
					src = *t.SourceSandboxId
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\t%s\t%s\t%s\n", t.Name, intOrDash(t.Version), t.Status, t.Builtin, t.Snapshot, bytesOrDash(t.DiskBytes), src, t.CreatedAt.Local().Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	rm := &cobra.Command{
		Use:     "rm <name>...",
		Aliases: []string{"delete"},
		Short:   "Delete team templates",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.Templates.Delete(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(a.env.Stdout, name)
			}
			return nil
		},
	}
	cmd.AddCommand(ls, rm, a.templateBuildCommand(), a.templateBuildsCommand(), a.templateLogsCommand(), a.templateCancelCommand())
	return cmd
}
