package app

// tokenline webhooks: create, list, get, pause, resume, delete, rotate the
// secret of, inspect the deliveries of and replay webhook subscriptions
// over the HTTP API (issue 12).

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

func newWebhooksCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "webhooks",
		Aliases: []string{"webhook"},
		Short:   "Manage webhook subscriptions: signed HTTP deliveries of connection events (over the HTTP API)",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	bindClientFlags(cmd, o)
	one := func(use, short string, f func(*client.Client, context.Context, string, ...client.CallOption) (apitypes.Webhook, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: exactlyOneWebhook,
			RunE: func(cmd *cobra.Command, args []string) error {
				return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
					var raw []byte
					w, err := f(c, ctx, strings.TrimSpace(args[0]), client.RawBody(&raw))
					return o.answer(cmd.OutOrStdout(), raw, err, use+" webhook "+args[0], func() error { return printWebhook(cmd.OutOrStdout(), w) })
				})
			},
		}
	}
	cmd.AddCommand(
		newWebhooksCreateCommand(o),
		newWebhooksListCommand(o),
		one("get", "Show one subscription", (*client.Client).GetWebhook),
		one("pause", "Stop delivering (the position is kept: resume delivers what happened meanwhile)", (*client.Client).PauseWebhook),
		one("resume", "Deliver again (a paused subscription, or one disabled by a 410 Gone)", (*client.Client).ResumeWebhook),
		one("rotate-secret", "Replace the signing secret; prints the new one once (the old one still signs for the server's --webhooks-secret-grace, default 24 h)", (*client.Client).RotateWebhookSecret),
		newWebhooksDeleteCommand(o),
		newWebhooksDeliveriesCommand(o),
		newWebhooksReplayCommand(o),
	)
	return cmd
}

func exactlyOneWebhook(_ *cobra.Command, args []string) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return fmt.Errorf("want one webhook id, got %d arguments", len(args))
	}
	return nil
}

func newWebhooksCreateCommand(o *clientOptions) *cobra.Command {
	var req apitypes.WebhookCreateRequest
	cmd := &cobra.Command{
		Use:   "create --url URL [--event TYPE]... [--provider NAME | --connection ID]",
		Short: "Subscribe a URL to connection events; prints the signing secret once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				w, err := c.CreateWebhook(ctx, req, client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "create webhook", func() error { return printWebhook(cmd.OutOrStdout(), w) })
			})
		},
	}
	cmd.Flags().StringVar(&req.URL, "url", "", "receiver URL (https; http only if the server runs with --webhooks-allow-http)")
	cmd.Flags().StringSliceVar(&req.EventTypes, "event", nil, "event type to deliver, e.g. refresh.failed (repeatable or comma-separated; default: every type)")
	cmd.Flags().StringVar(&req.Provider, "provider", "", "deliver only the events of this provider's connections")
	cmd.Flags().StringVar(&req.Connection, "connection", "", "deliver only this connection's events")
	_ = cmd.MarkFlagRequired("url")
	return cmd
}

func newWebhooksListCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the subscriptions that were not deleted", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				ws, err := c.ListWebhooks(ctx, client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "list webhooks", func() error { return printWebhookTable(cmd.OutOrStdout(), ws) })
			})
		},
	}
}

func newWebhooksDeleteCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use: "delete ID", Aliases: []string{"rm"}, Short: "Delete a subscription (its history is kept)", Args: exactlyOneWebhook,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteWebhook(ctx, strings.TrimSpace(args[0])); err != nil {
					return apiErr("delete webhook "+args[0], err)
				}
				if o.json {
					return nil
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "Deleted webhook %s.\n", args[0])
				return err
			})
		},
	}
}

func newWebhooksDeliveriesCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use: "deliveries ID", Aliases: []string{"log"}, Short: "Show a subscription's recent delivery attempts, dead letters and lag", Args: exactlyOneWebhook,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				d, err := c.WebhookDeliveries(ctx, strings.TrimSpace(args[0]), client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "webhook deliveries "+args[0], func() error { return printDeliveries(cmd.OutOrStdout(), d) })
			})
		},
	}
}

func newWebhooksReplayCommand(o *clientOptions) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "replay ID --from T [--to T]",
		Short: "Re-send the subscription's events stored in a window, in order (same webhook-id: de-duplicating receivers ignore what they have)",
		Args:  exactlyOneWebhook,
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			f, err := parseWhen("--from", from, now)
			if err != nil {
				return err
			}
			var t time.Time
			if to != "" {
				if t, err = parseWhen("--to", to, now); err != nil {
					return err
				}
			}
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				res, err := c.ReplayWebhook(ctx, strings.TrimSpace(args[0]), f, t, client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "replay webhook "+args[0], func() error {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "Replayed %d events: %d delivered, %d failed.\n", res.Matched, res.Delivered, res.Failed)
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "start of the window: RFC 3339 time or a duration ago (1h, 2d)")
	cmd.Flags().StringVar(&to, "to", "", "end of the window (default: now)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func printWebhook(w io.Writer, h apitypes.Webhook) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", h.ID)
	row("URL", h.URL)
	row("State", h.State+withText(h.Reason))
	row("Events", cmp.Or(strings.Join(h.EventTypes, " "), "all"))
	if h.Provider != "" {
		row("Provider", h.Provider)
	}
	if h.Connection != "" {
		row("Connection", h.Connection)
	}
	row("Secret fingerprint", h.SecretFingerprint)
	row("Created", fmtTime(h.CreatedAt))
	if h.Secret != "" {
		row("Secret", h.Secret+"  (shown once: give it to the receiver now)")
	}
	return tw.Flush()
}

func printWebhookTable(w io.Writer, ws []apitypes.Webhook) error {
	if len(ws) == 0 {
		_, err := fmt.Fprintln(w, "No webhooks. Create one with: tokenline webhooks create --url https://example.com/hook")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tURL\tEVENTS\tFILTER")
	for _, h := range ws {
		filter := "-"
		if h.Provider != "" {
			filter = "provider=" + h.Provider
		}
		if h.Connection != "" {
			filter = "connection=" + h.Connection
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.ID, h.State, h.URL, cmp.Or(strings.Join(h.EventTypes, ","), "all"), filter)
	}
	return tw.Flush()
}

func printDeliveries(w io.Writer, d apitypes.WebhookDeliveries) error {
	if d.Lag != nil {
		fmt.Fprintf(w, "Lag: %d events not yet acknowledged\n", *d.Lag)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tTYPE\tCONNECTION\tTRY\tOUTCOME\tSTATUS\tMS\tNEXT RETRY")
	for _, a := range d.Attempts {
		status, next := "-", "-"
		if a.Status != 0 {
			status = strconv.Itoa(a.Status)
		} else if a.Error != "" {
			status = a.Error
		}
		if a.NextRetry != nil {
			next = fmtTime(*a.NextRetry)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%.1f\t%s\n", fmtTime(a.Time), a.EventID, strings.TrimPrefix(a.EventType, "tokenline."),
			a.Connection, a.Attempt, a.Outcome, status, a.LatencyMS, next)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.DeadLetters) > 0 {
		fmt.Fprintf(w, "\nDead letters (%d): replay them with tokenline webhooks replay %s --from <time>\n", len(d.DeadLetters), d.Webhook)
		for _, l := range d.DeadLetters {
			fmt.Fprintf(w, "  %s %s %s after %d attempts (last: %s)\n", fmtTime(l.Time), l.EventID, l.Connection, l.Attempts, cmp.Or(l.LastError, strconv.Itoa(l.LastStatus)))
		}
	}
	return nil
}
