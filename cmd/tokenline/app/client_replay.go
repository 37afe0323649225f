package app

// tokenline replay: a connection's state at a past instant, or the incident
// timeline of every connection in a window, from the HTTP API.

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

func newReplayCommand() *cobra.Command {
	o := &clientOptions{}
	var connection, at, from, to string
	cmd := &cobra.Command{
		Use:   "replay (--connection ID --at T | --from T1 [--to T2])",
		Short: "Rebuild a connection's state at a past time, or the timeline of every connection in a window",
		Long: "With --connection and --at, replay prints the state and reason the connection had at that time\n" +
			"and the events that led there. With --from and --to, it prints the incident timeline: the state\n" +
			"changes of every connection in the window counted by state and reason (\"412 connections went\n" +
			"unauthenticated with invalid_client\"), then every event in stream order with the transition it\n" +
			"made. Times are RFC 3339 or a duration ago (90s, 15m, 1h, 2d).",
		Example: "  tokenline replay --connection <id> --at 2026-11-28T10:02:00Z\n" +
			"  tokenline replay --from 2h --to 1h",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			switch {
			case at != "" && (from != "" || to != ""):
				return errors.New("give either --at (with --connection) or --from/--to, not both")
			case at != "":
				if connection == "" {
					return errors.New("--at needs --connection ID")
				}
				t, err := parseWhen("--at", at, now)
				if err != nil {
					return err
				}
				return runReplayAt(cmd, o, connection, t)
			case from != "":
				if connection != "" {
					return errors.New("--connection goes with --at; the timeline covers every connection (for one connection's history in a window: tokenline audit ID --since T1 --until T2)")
				}
				t1, err := parseWhen("--from", from, now)
				if err != nil {
					return err
				}
				t2 := now
				if to != "" {
					if t2, err = parseWhen("--to", to, now); err != nil {
						return err
					}
				}
				if t2.Before(t1) {
					return fmt.Errorf("--to (%s) is before --from (%s)", fmtTimeMilli(t2), fmtTimeMilli(t1))
				}
				return runTimeline(cmd, o, t1, t2)
			case to != "":
				return errors.New("--to needs --from")
			case connection != "":
				return errors.New("--connection needs --at T (the time to rebuild the state at)")
			}
			return errors.New("give --connection ID --at T, or --from T1 [--to T2]")
		},
	}
	bindClientFlags(cmd, o)
	fs := cmd.Flags()
	fs.StringVar(&connection, "connection", "", "connection id (with --at)")
	fs.StringVar(&at, "at", "", "time to rebuild the connection's state at")
	fs.StringVar(&from, "from", "", "start of the timeline window")
	fs.StringVar(&to, "to", "", "end of the timeline window (default now)")
	return cmd
}

func runReplayAt(cmd *cobra.Command, o *clientOptions, id string, at time.Time) error {
	out := cmd.OutOrStdout()
	return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
		var raw []byte
		a, err := c.StateAt(ctx, connID(id), at, client.RawBody(&raw))
		return o.answer(out, raw, err, fmt.Sprintf("replay %s at %s", id, fmtTimeMilli(at)), func() error {
			st := a.Status
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
			row("Connection", id)
			row("At", fmtTimeMilli(at))
			row("State", string(st.State))
			reason := "-"
			if st.Reason != "" {
				reason = string(st.Reason) + withText(reasonText(st.Reason, st.ReasonText))
			}
			row("Reason", reason)
			row("In this state since", fmtTimeMilli(st.Since))
			switch {
			case !st.AccessTokenExpiresAt.IsZero():
				row("Access token expiry", fmtTime(st.AccessTokenExpiresAt))
			case st.HasTokens:
				row("Access token expiry", "unknown")
			default:
				row("Tokens", "none held")
			}
			if st.Deleted {
				row("Deleted", "yes")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "\nEvents that led there (%d, oldest first):\n", len(a.Events))
			return printEventTable(out, a.Events)
		})
	})
}

func runTimeline(cmd *cobra.Command, o *clientOptions, from, to time.Time) error {
	out := cmd.OutOrStdout()
	return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
		var raw []byte
		rep, err := c.Timeline(ctx, from, to, client.RawBody(&raw))
		return o.answer(out, raw, err, fmt.Sprintf("timeline %s to %s", fmtTimeMilli(from), fmtTimeMilli(to)), func() error {
			if err := rep.WriteText(out); err != nil {
				return err
			}
			if rep.Truncated {
				_, err := fmt.Fprintln(out, "\nTruncated: the server lists the first events of a window this large; narrow it for the rest.")
				return err
			}
			return nil
		})
	})
}
