package app

// tokenline audit: a connection's history, from the HTTP API.

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

func newAuditCommand() *cobra.Command {
	o := &clientOptions{}
	var (
		since, until string
		types        []string
		jsonl        bool
	)
	cmd := &cobra.Command{
		Use:   "audit ID",
		Short: "Print a connection's history (its events, oldest first)",
		Example: "  tokenline audit 2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d --since 1h\n" +
			"  tokenline audit <id> --type refresh.failed --type access.rejected\n" +
			"  tokenline audit <id> --jsonl | jq .",
		Args: exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			q := client.EventQuery{Types: normalizeTypes(types)}
			for _, w := range []struct {
				flag, value string
				dst         *time.Time
			}{{"--since", since, &q.Since}, {"--until", until, &q.Until}} {
				if w.value == "" {
					continue
				}
				t, err := parseWhen(w.flag, w.value, now)
				if err != nil {
					return err
				}
				*w.dst = t
			}
			id, what, out := connID(args[0]), "audit "+args[0], cmd.OutOrStdout()
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				if jsonl {
					return streamJSONL(ctx, out, what, func() (io.ReadCloser, error) { return c.EventsJSONL(ctx, id, q) })
				}
				var raw []byte
				evs, err := c.Events(ctx, id, q, client.RawBody(&raw))
				return o.answer(out, raw, err, what, func() error {
					if len(evs) == 0 {
						_, err := fmt.Fprintln(out, "No events match.")
						return err
					}
					return printEventTable(out, evs)
				})
			})
		},
	}
	bindClientFlags(cmd, o)
	fs := cmd.Flags()
	fs.StringVar(&since, "since", "", "only events at or after this time: RFC 3339 (2026-11-28T10:00:00Z) or a duration ago (90s, 15m, 1h, 2d)")
	fs.StringVar(&until, "until", "", "only events at or before this time (same forms as --since)")
	fs.StringArrayVar(&types, "type", nil, "only events of this type, e.g. refresh.failed (repeatable)")
	fs.BoolVar(&jsonl, "jsonl", false, "stream the CloudEvents as JSON lines, one per event")
	return cmd
}

// streamJSONL copies a JSON Lines stream to out as it arrives. An
// interruption ends it quietly; a stream cut off otherwise is an error.
func streamJSONL(ctx context.Context, out io.Writer, what string, open func() (io.ReadCloser, error)) error {
	body, err := open()
	if err != nil {
		return apiErr(what, err)
	}
	defer body.Close()
	if _, err := io.Copy(out, body); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s: reading the stream: %w", what, err)
	}
	return nil
}
