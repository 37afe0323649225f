package app

// tokenline connections: list, get, create, update, authorize and delete
// connections over the HTTP API.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
	"github.com/tokenline/tokenline/domain"
)

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
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				cs, err := c.ListConnections(ctx, client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "list connections", func() error {
					return printConnectionTable(cmd.OutOrStdout(), cs, time.Now())
				})
			})
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
		reason := cmp.Or(c.Reason, "-")
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
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				st, err := c.GetConnection(ctx, connID(args[0]), client.RawBody(&raw))
				return o.answerStatus(cmd.OutOrStdout(), raw, st, err, "get connection "+args[0])
			})
		},
	}
}

// answerStatus prints a connection's status (see answer).
func (o *clientOptions) answerStatus(w io.Writer, raw []byte, st apitypes.ConnectionStatus, err error, what string) error {
	return o.answer(w, raw, err, what, func() error { return printStatus(w, st, time.Now()) })
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
	switch c.ActionBy {
	case domain.ActorOperator:
		row("Action by", "operator: "+c.OperatorText)
	case domain.ActorUser:
		row("Action by", "user: reconnect (tokenline connections authorize "+c.ID+")")
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
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				st, err := c.CreateConnection(ctx, apitypes.CreateRequest{Provider: provider, Scopes: scopes, Config: cfg}, client.RawBody(&raw))
				return o.answerStatus(cmd.OutOrStdout(), raw, st, err, "create connection")
			})
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
			var req apitypes.UpdateRequest
			if cmd.Flags().Changed("scope") {
				req.Scopes = nonNil(scopes)
			}
			if cmd.Flags().Changed("config") {
				cfg, err := parseConfigPairs(config)
				if err != nil {
					return err
				}
				if cfg == nil {
					cfg = map[string]string{}
				}
				req.Config = cfg
			}
			if req.Scopes == nil && req.Config == nil {
				return errors.New("nothing to update: give --scope and/or --config")
			}
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				st, err := c.UpdateConnection(ctx, connID(args[0]), req, client.RawBody(&raw))
				return o.answerStatus(cmd.OutOrStdout(), raw, st, err, "update connection "+args[0])
			})
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
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				u, err := c.Authorize(ctx, connID(args[0]), client.RawBody(&raw))
				return o.answer(cmd.OutOrStdout(), raw, err, "authorize connection "+args[0], func() error {
					// The instruction goes to stderr so that stdout is the URL
					// alone (open "$(tokenline connections authorize ID)").
					fmt.Fprintf(cmd.ErrOrStderr(), "Open this URL in a browser to authorise connection %s (it can be used once):\n", args[0])
					_, err := fmt.Fprintln(cmd.OutOrStdout(), u)
					return err
				})
			})
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
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteConnection(ctx, connID(args[0])); err != nil {
					return apiErr("delete connection "+args[0], err)
				}
				if o.json {
					return nil // 204: there is no JSON to print
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "Deleted connection %s (its history is kept).\n", args[0])
				return err
			})
		},
	}
}
