package app

// The client commands of the tokenline CLI: connections, audit, replay (they
// call the HTTP API of a running server, see client.go) and events tail
// (which subscribes to NATS directly, see client_tail.go).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

func init() {
	extraCommands = append(extraCommands, newConnectionsCommand, newAuditCommand, newReplayCommand, newEventsCommand)
}

// decodeConnections reads GET /v1/connections: {"connections": [...]} or a
// bare array.
func decodeConnections(b []byte) ([]apitypes.ConnectionStatus, error) {
	var out []apitypes.ConnectionStatus
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		if err := json.Unmarshal(t, &out); err != nil {
			return nil, fmt.Errorf("the server's connection list is not the expected JSON: %w", err)
		}
		return out, nil
	}
	var wrapped struct {
		Connections []apitypes.ConnectionStatus `json:"connections"`
	}
	if err := json.Unmarshal(b, &wrapped); err != nil {
		return nil, fmt.Errorf("the server's connection list is not the expected JSON: %w", err)
	}
	return wrapped.Connections, nil
}

// decodeEvents reads a CloudEvents JSON array (GET .../events).
func decodeEvents(b []byte) ([]events.Envelope, error) {
	var out []events.Envelope
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("the server's event list is not the expected JSON: %w", err)
	}
	return out, nil
}

// ---- connections ---------------------------------------------------------

func newConnectionsCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "connections",
		Aliases: []string{"connection", "conn"},
		Short:   "List, inspect, create, authorise and delete connections (over the HTTP API)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	bindClientFlags(cmd, o)
	cmd.AddCommand(
		newConnectionsListCommand(o),
		newConnectionsGetCommand(o),
		newConnectionsCreateCommand(o),
		newConnectionsUpdateCommand(o),
		newConnectionsAuthorizeCommand(o),
		newConnectionsDeleteCommand(o),
	)
	return cmd
}

func newConnectionsListCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the connections that were not deleted",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(ctx, http.MethodGet, "/v1/connections", nil, &raw); err != nil {
				return fmt.Errorf("list connections: %w", err)
			}
			if o.json {
				return writeRaw(cmd.OutOrStdout(), raw)
			}
			cs, err := decodeConnections(raw)
			if err != nil {
				return err
			}
			return printConnectionTable(cmd.OutOrStdout(), cs, time.Now())
		},
	}
}

func printConnectionTable(w io.Writer, cs []apitypes.ConnectionStatus, now time.Time) error {
	if len(cs) == 0 {
		_, err := fmt.Fprintln(w, "No connections. Create one with: tokenline connections create --provider sandbox --scope <scope>")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROVIDER\tSTATE\tREASON\tSINCE\tACCESS TOKEN EXPIRES")
	for _, c := range cs {
		reason := c.Reason
		if reason == "" {
			reason = "-"
		}
		expires := "-"
		if !c.AccessTokenExpiresAt.IsZero() {
			expires = fmtTime(c.AccessTokenExpiresAt) + " (" + fmtRelative(c.AccessTokenExpiresAt, now) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Provider, c.State, reason, fmtTime(c.Since), expires)
	}
	return tw.Flush()
}

func newConnectionsGetCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Aliases: []string{"show"},
		Short:   "Show one connection's state, reason, scopes, configuration and token expiry",
		Args:    exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(ctx, http.MethodGet, connPath(args[0], ""), nil, &raw); err != nil {
				return fmt.Errorf("get connection %s: %w", args[0], err)
			}
			return printStatusOrRaw(cmd.OutOrStdout(), o.json, raw)
		},
	}
}

func printStatusOrRaw(w io.Writer, asJSON bool, raw []byte) error {
	if asJSON {
		return writeRaw(w, raw)
	}
	var st apitypes.ConnectionStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("the server's connection status is not the expected JSON: %w", err)
	}
	return printStatus(w, st, time.Now())
}

func printStatus(w io.Writer, c apitypes.ConnectionStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", c.ID)
	row("Provider", c.Provider)
	row("State", string(c.State))
	if c.Reason != "" {
		row("Reason", string(c.Reason)+withText(reasonText(c.Reason, c.ReasonText)))
	}
	row("Since", fmtTime(c.Since)+" ("+fmtRelative(c.Since, now)+")")
	if !c.CreatedAt.IsZero() {
		row("Created", fmtTime(c.CreatedAt))
	}
	row("Scopes", listOrDash(c.Scopes))
	if len(c.GrantedScopes) > 0 {
		row("Granted scopes", strings.Join(c.GrantedScopes, " "))
	}
	row("Config", fmtConfig(c.Config))
	switch {
	case !c.AccessTokenExpiresAt.IsZero():
		row("Access token expires", fmtTime(c.AccessTokenExpiresAt)+" ("+fmtRelative(c.AccessTokenExpiresAt, now)+")")
	case c.HasTokens:
		row("Access token expires", "unknown (the provider gave no expiry)")
	default:
		row("Tokens", "none held")
	}
	if lr := c.LastRefresh; lr != nil {
		outcome := "succeeded"
		if !lr.OK {
			outcome = "failed"
			if lr.ErrorCode != "" {
				outcome += " (" + lr.ErrorCode + ")"
			}
		}
		row("Last refresh", outcome+" at "+fmtTime(lr.At))
	}
	if c.TransientFailures > 0 {
		v := fmt.Sprintf("%d consecutive", c.TransientFailures)
		if !c.RetryAt.IsZero() {
			v += ", next attempt " + fmtTime(c.RetryAt)
		}
		row("Transient failures", v)
	}
	if !c.AuthorisationExpiresAt.IsZero() {
		row("Authorisation expires", fmtTime(c.AuthorisationExpiresAt)+" ("+fmtRelative(c.AuthorisationExpiresAt, now)+")")
	}
	if c.Deleted {
		row("Deleted", "yes (history is kept)")
	} else if c.NeedsReauthorisation {
		row("Needs authorisation", "yes: run `tokenline connections authorize "+c.ID+"`")
	}
	return tw.Flush()
}

func newConnectionsCreateCommand(o *clientOptions) *cobra.Command {
	var (
		provider string
		scopes   []string
		config   []string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a connection (unauthenticated until authorised)",
		Example: "  tokenline connections create --provider sandbox --scope export-jobs:read --scope users:read --config company=acme\n" +
			"  tokenline connections authorize <id>",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := parseConfigPairs(config)
			if err != nil {
				return err
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			body := struct {
				Provider string            `json:"provider"`
				Scopes   []string          `json:"scopes,omitempty"`
				Config   map[string]string `json:"config,omitempty"`
			}{provider, scopes, cfg}
			var raw []byte
			if err := c.do(ctx, http.MethodPost, "/v1/connections", body, &raw); err != nil {
				return fmt.Errorf("create connection: %w", err)
			}
			return printStatusOrRaw(cmd.OutOrStdout(), o.json, raw)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&provider, "provider", "sandbox", "provider name, as configured on the server")
	fs.StringArrayVar(&scopes, "scope", nil, "scope to request (repeatable)")
	fs.StringArrayVar(&config, "config", nil, "configuration entry key=value (repeatable)")
	return cmd
}

func newConnectionsUpdateCommand(o *clientOptions) *cobra.Command {
	var (
		scopes []string
		config []string
	)
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Replace a connection's scopes and/or configuration (state and tokens are untouched)",
		Args:  exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			if cmd.Flags().Changed("scope") {
				body["scopes"] = nonNil(scopes)
			}
			if cmd.Flags().Changed("config") {
				cfg, err := parseConfigPairs(config)
				if err != nil {
					return err
				}
				if cfg == nil {
					cfg = map[string]string{}
				}
				body["config"] = cfg
			}
			if len(body) == 0 {
				return errors.New("nothing to update: give --scope and/or --config")
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(ctx, http.MethodPatch, connPath(args[0], ""), body, &raw); err != nil {
				return fmt.Errorf("update connection %s: %w", args[0], err)
			}
			return printStatusOrRaw(cmd.OutOrStdout(), o.json, raw)
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&scopes, "scope", nil, "scope (repeatable; the given list replaces the stored one)")
	fs.StringArrayVar(&config, "config", nil, "configuration entry key=value (repeatable; replaces the stored configuration)")
	return cmd
}

func newConnectionsAuthorizeCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "authorize ID",
		Aliases: []string{"authorise", "auth"},
		Short:   "Start (re)authorising a connection and print the URL to open in a browser",
		Args:    exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.do(ctx, http.MethodPost, connPath(args[0], "/authorize"), nil, &raw); err != nil {
				return fmt.Errorf("authorize connection %s: %w", args[0], err)
			}
			if o.json {
				return writeRaw(cmd.OutOrStdout(), raw)
			}
			var ans struct {
				AuthorizeURL string `json:"authorize_url"`
			}
			if err := json.Unmarshal(raw, &ans); err != nil || ans.AuthorizeURL == "" {
				return errors.New("the server's answer holds no authorize_url")
			}
			// The instruction goes to stderr so that stdout is the URL alone
			// (open "$(tokenline connections authorize ID)").
			fmt.Fprintf(cmd.ErrOrStderr(), "Open this URL in a browser to authorise connection %s (it can be used once):\n", args[0])
			_, err = fmt.Fprintln(cmd.OutOrStdout(), ans.AuthorizeURL)
			return err
		},
	}
}

func newConnectionsDeleteCommand(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID",
		Aliases: []string{"rm"},
		Short:   "Delete a connection: revoke and destroy its tokens (its history is kept)",
		Args:    exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.do(ctx, http.MethodDelete, connPath(args[0], ""), nil, nil); err != nil {
				return fmt.Errorf("delete connection %s: %w", args[0], err)
			}
			if o.json {
				return nil // 204: there is no JSON to print
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Deleted connection %s (its history is kept).\n", args[0])
			return err
		},
	}
}

// ---- audit ---------------------------------------------------------------

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
			q := url.Values{}
			for name, v := range map[string]string{"since": since, "until": until} {
				if v == "" {
					continue
				}
				t, err := parseWhen("--"+name, v, now)
				if err != nil {
					return err
				}
				q.Set(name, t.UTC().Format(time.RFC3339Nano))
			}
			for _, t := range normalizeTypes(types) {
				q.Add("type", t)
			}
			if jsonl {
				q.Set("format", "jsonl")
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			c, err := o.client()
			if err != nil {
				return err
			}
			path := connPath(args[0], "/events")
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			out := cmd.OutOrStdout()
			if jsonl {
				resp, err := c.stream(ctx, http.MethodGet, path)
				if err != nil {
					return fmt.Errorf("audit %s: %w", args[0], err)
				}
				defer resp.Body.Close()
				if _, err := io.Copy(out, resp.Body); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("audit %s: reading the stream: %w", args[0], err)
				}
				return nil
			}
			var raw []byte
			if err := c.do(ctx, http.MethodGet, path, nil, &raw); err != nil {
				return fmt.Errorf("audit %s: %w", args[0], err)
			}
			if o.json {
				return writeRaw(out, raw)
			}
			evs, err := decodeEvents(raw)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				_, err := fmt.Fprintln(out, "No events match.")
				return err
			}
			return printEventTable(out, evs, false)
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

// ---- replay --------------------------------------------------------------

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

// stateAtAnswer is GET /v1/connections/{id}/state?at=: the connection's
// status rebuilt from its history up to at, and the events that led there.
type stateAtAnswer struct {
	ConnectionID string                    `json:"connection_id"`
	At           time.Time                 `json:"at"`
	Status       apitypes.ConnectionStatus `json:"status"`
	Events       []events.Envelope         `json:"events"`
}

func runReplayAt(cmd *cobra.Command, o *clientOptions, id string, at time.Time) error {
	ctx, stop := commandContext(cmd)
	defer stop()
	c, err := o.client()
	if err != nil {
		return err
	}
	q := url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}
	var raw []byte
	if err := c.do(ctx, http.MethodGet, connPath(id, "/state")+"?"+q.Encode(), nil, &raw); err != nil {
		return fmt.Errorf("replay %s at %s: %w", id, fmtTimeMilli(at), err)
	}
	out := cmd.OutOrStdout()
	if o.json {
		return writeRaw(out, raw)
	}
	var a stateAtAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("the server's state answer is not the expected JSON: %w", err)
	}
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
	return printEventTable(out, a.Events, false)
}

func runTimeline(cmd *cobra.Command, o *clientOptions, from, to time.Time) error {
	ctx, stop := commandContext(cmd)
	defer stop()
	c, err := o.client()
	if err != nil {
		return err
	}
	q := url.Values{}
	q.Set("from", from.UTC().Format(time.RFC3339Nano))
	q.Set("to", to.UTC().Format(time.RFC3339Nano))
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/v1/events/timeline?"+q.Encode(), nil, &raw); err != nil {
		return fmt.Errorf("timeline %s to %s: %w", fmtTimeMilli(from), fmtTimeMilli(to), err)
	}
	out := cmd.OutOrStdout()
	if o.json {
		return writeRaw(out, raw)
	}
	var rep projections.TimelineReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("the server's timeline is not the expected JSON: %w", err)
	}
	if err := rep.WriteText(out); err != nil {
		return err
	}
	if rep.Truncated {
		_, err = fmt.Fprintln(out, "\nTruncated: the server lists the first events of a window this large; narrow it for the rest.")
	}
	return err
}

// ---- events (NATS) -------------------------------------------------------

func newEventsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow tokenline's events on NATS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newEventsTailCommand())
	return cmd
}

// ---- output helpers ------------------------------------------------------

// printEventTable prints events as TIME TYPE ACTOR DETAILS (and the
// connection when withConn).
func printEventTable(w io.Writer, evs []events.Envelope, withConn bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if withConn {
		fmt.Fprintln(tw, "TIME\tCONNECTION\tTYPE\tACTOR\tDETAILS")
	} else {
		fmt.Fprintln(tw, "TIME\tTYPE\tACTOR\tDETAILS")
	}
	for _, e := range evs {
		d := eventDetails(e.Data)
		if withConn {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTimeMilli(e.Time), e.Subject, shortType(e.Type), orDash(e.Actor), d)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTimeMilli(e.Time), shortType(e.Type), orDash(e.Actor), d)
		}
	}
	return tw.Flush()
}

// detailKeys are the event data fields shown as key data, in this order.
// Fingerprints and attempt ids are left out (see --json for everything).
var detailKeys = []string{
	"provider", "scopes", "config", "trigger", "attempt", "class", "terminal", "reason",
	"error_code", "error_description", "http_status", "scope", "rotated", "provider_revoked",
	"expires_at", "lease_until", "retry_at",
}

var hiddenDetailKeys = map[string]bool{
	"attempt_id": true, "access_token_fp": true, "refresh_token_fp": true,
}

// eventDetails renders the key data of an event's data as k=v pairs.
func eventDetails(data json.RawMessage) string {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if len(bytes.TrimSpace(data)) == 0 || dec.Decode(&m) != nil {
		return ""
	}
	if tok, ok := m["tokens"].(map[string]any); ok {
		delete(m, "tokens")
		if v, ok := tok["access_token_expires_at"]; ok {
			m["token_expires_at"] = v
		}
		if v, ok := tok["scopes"]; ok {
			m["granted_scopes"] = v
		}
	}
	if _, ok := m["class"]; ok {
		delete(m, "terminal") // class says it
	} else if b, ok := m["terminal"].(bool); ok && !b {
		delete(m, "terminal")
	}
	var parts []string
	done := map[string]bool{}
	add := func(k string) {
		v, ok := m[k]
		done[k] = true
		if !ok || hiddenDetailKeys[k] {
			return
		}
		if s := fmtValue(v); s != "" {
			parts = append(parts, k+"="+s)
		}
	}
	for _, k := range detailKeys {
		add(k)
	}
	var rest []string
	for k := range m {
		if !done[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range rest {
		add(k)
	}
	return strings.Join(parts, " ")
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		if x == "" {
			return ""
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return fmtTimeMilli(t)
		}
		if strings.ContainsAny(x, " \t\"=") || strings.IndexFunc(x, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return strconv.Quote(x) // no raw control sequences reach the terminal
		}
		return x
	case []any:
		var s []string
		for _, e := range x {
			s = append(s, fmtValue(e))
		}
		return strings.Join(s, ",")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var s []string
		for _, k := range keys {
			s = append(s, k+":"+fmtValue(x[k]))
		}
		return "{" + strings.Join(s, ",") + "}"
	}
	return fmt.Sprint(v)
}

// shortType strips the CloudEvents type prefix ("tokenline.").
func shortType(t string) string { return strings.TrimPrefix(t, events.TypePrefix) }

// normalizeTypes accepts types with or without the "tokenline." prefix and
// returns them without it, once each.
func normalizeTypes(ts []string) []string {
	var out []string
	for _, t := range ts {
		for _, p := range strings.Split(t, ",") {
			p = shortType(strings.TrimSpace(p))
			if p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func reasonText(reason domain.Reason, given string) string {
	if given != "" {
		return given
	}
	if ri, ok := reason.Info(); ok {
		return ri.UserText
	}
	return ""
}

func withText(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimeMilli(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// fmtRelative says how far t is from now: "in 14m" or "3m ago".
func fmtRelative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d > -time.Second && d < time.Second {
		return "just now"
	}
	if d >= 0 {
		return "in " + fmtDuration(d)
	}
	return fmtDuration(-d) + " ago"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func fmtConfig(c map[string]string) string {
	if len(c) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + c[k]
	}
	return strings.Join(parts, " ")
}

func listOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ---- argument helpers ----------------------------------------------------

// exactlyOneID requires one non-empty connection id argument.
func exactlyOneID(_ *cobra.Command, args []string) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return fmt.Errorf("want one connection id, got %d arguments", len(args))
	}
	return nil
}

// connPath is /v1/connections/<id><suffix>, with the id escaped: a mistyped
// id reaches the server (which says what is wrong with it) and never another
// route.
func connPath(id, suffix string) string {
	return "/v1/connections/" + url.PathEscape(strings.TrimSpace(id)) + suffix
}

// parseConfigPairs reads key=value entries.
func parseConfigPairs(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--config %q: want key=value", p)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--config: key %q is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// parseWhen reads a time given as RFC 3339, a date (UTC midnight), "now", or
// a duration before now (90s, 15m, 1h30m, 2d).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now, nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	d, err := parseAgo(s)
	if err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-11-28T10:00:00Z) or a duration ago (90s, 15m, 1h, 2d)", flag, s)
}

func parseAgo(s string) (time.Duration, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "-"), " ago")
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		var n int
		if _, err := fmt.Sscanf(s[:i], "%d", &n); err != nil || fmt.Sprint(n) != s[:i] {
			return 0, errors.New("bad days")
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("bad duration")
	}
	return days + d, nil
}
