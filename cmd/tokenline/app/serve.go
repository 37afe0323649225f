package app

import (
	"cmp"
	"context"
	"fmt"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"io"
	"log/slog"
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
		newUICommand(),
		newVerifyCommand(),
		newWebhooksCommand(), // client_webhooks.go
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
		Long: "serve runs tokenline until interrupted.\n\n" +
			"Without --nats-url it embeds a nats-server listening on --nats-listen that refuses\n" +
			"anonymous clients. On first start it writes two NATS nkey seeds (mode 0600) into the\n" +
			"data dir, and checks their permissions on every start:\n" +
			"  nats-tokenline.nk  tokenline's own identity, every right (keep it to administrators)\n" +
			"  nats-reader.nk     for downstream consumers: read the TOKENLINE stream, create and use\n" +
			"                     consumers on it, subscribe to tokenline.conn.>; nothing else\n" +
			"Consumers connect with the reader seed, for example:\n" +
			"  tokenline events tail --nats-url nats://127.0.0.1:4222 --creds ./tokenline-data/nats-reader.nk\n" +
			"  nats --server nats://127.0.0.1:4222 --nkey ./tokenline-data/nats-reader.nk consumer next TOKENLINE my-consumer\n\n" +
			"With --nats-url, tokenline connects to an external NATS system as the user in\n" +
			"--nats-creds (a .creds file or an nkey seed file); docs/nats-server.conf is a\n" +
			"least-privilege server configuration (see docs/operations.md, NATS security).\n\n" +
			"Providers: the flags --provider ... --auth-style declare one; --providers FILE (YAML)\n" +
			"declares any number, presets or custom, with secrets by reference (client_secret_env,\n" +
			"client_secret_file; see docs/operations.md, Providers). serve prints the endpoints each\n" +
			"provider uses. A provider that cannot be discovered at start-up is retried in the\n" +
			"background (GET /v1/providers and /readyz say which); the others are unaffected.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ApplyEnv(cmd.Flags(), os.LookupEnv); err != nil {
				return err
			}
			m.Config.ClientSecret = cmp.Or(m.Config.ClientSecret, os.Getenv("TOKENLINE_CLIENT_SECRET"))
			// Every log line is the configured format (JSON by default):
			// also what goes through slog.Default or the standard log
			// package (a library's, net/http's).
			m.Logger = m.logger()
			slog.SetDefault(m.Logger)
			if err := m.Run(ctx); err != nil {
				return err
			}
			defer m.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "tokenline %s is running\n", Version)
			printUILine(out, m)
			fmt.Fprintf(out, "  API:        %s/v1/ (bearer token ", m.BaseURL)
			if m.APITokenPath != "" {
				fmt.Fprintf(out, "in %s)\n", m.APITokenPath)
			} else {
				fmt.Fprintf(out, "from TOKENLINE_API_TOKEN)\n")
			}
			fmt.Fprintf(out, "  NATS:       %s (stream %s, subjects tokenline.conn.<id>)\n", natsserver.RedactURLs(m.NATSURL()), m.Store.StreamName())
			if r := m.NATSReaderFile(); r != "" {
				fmt.Fprintf(out, "  Consumers:  connect with the reader nkey seed in %s\n", r)
				fmt.Fprintf(out, "              tokenline events tail --nats-url %s --creds %s\n", natsserver.RedactURLs(m.NATSURL()), r)
				fmt.Fprintf(out, "  Admin:      tokenline's own nkey seed is %s (all rights: keep it private)\n", m.NATSCredsFile())
			}
			printProviders(out, m)
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
