package app

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// NewRootCommand returns the tokenline command tree: serve and version
// (this file), and the client commands connections, audit, replay (over the
// HTTP API) and events (on NATS), each built by its constructor.
func NewRootCommand(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tokenline",
		Short:         "OAuth 2.0 connections as an event-sourced state machine on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetContext(ctx)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCommand(ctx),
		newSandboxCommand(ctx),
		newVersionCommand(),
		newConnectionsCommand(),
		newAuditCommand(),
		newReplayCommand(),
		newEventsCommand(),
	)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "tokenline %s\n", Version)
			return nil
		},
	}
}

func newServeCommand(ctx context.Context) *cobra.Command {
	m := NewMain()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run tokenline (embedded NATS and the sandbox provider by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ApplyEnv(cmd.Flags(), os.LookupEnv); err != nil {
				return err
			}
			m.Config.ClientSecret = cmp.Or(m.Config.ClientSecret, os.Getenv("TOKENLINE_CLIENT_SECRET"))
			if err := m.Run(ctx); err != nil {
				return err
			}
			defer m.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "tokenline %s is running\n", Version)
			fmt.Fprintf(out, "  UI:         %s/ui/\n", m.BaseURL)
			fmt.Fprintf(out, "  API:        %s/v1/ (bearer token ", m.BaseURL)
			if m.APITokenPath != "" {
				fmt.Fprintf(out, "in %s)\n", m.APITokenPath)
			} else {
				fmt.Fprintf(out, "from TOKENLINE_API_TOKEN)\n")
			}
			fmt.Fprintf(out, "  NATS:       %s (stream %s, subjects tokenline.conn.<id>)\n", m.NATSURL(), m.Store.StreamName())
			if m.Sandbox != nil {
				fmt.Fprintf(out, "  Sandbox:    %s/sandbox/ (admin: %s/sandbox/admin/stats, bearer API token)\n", m.BaseURL, m.BaseURL)
			}
			fmt.Fprintf(out, "  Data dir:   %s\n", m.Config.DataDir)
			<-ctx.Done()
			fmt.Fprintln(out, "shutting down")
			return nil
		},
	}
	m.Config.BindFlags(cmd.Flags())
	return cmd
}
