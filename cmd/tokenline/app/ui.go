package app

// tokenline ui: a one-time login link for the web UI, and the line `serve`
// prints about the UI.

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

func newUICommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Print a one-time login link for the web UI",
		Long: "Asks the running tokenline (with the API token) for a login link and prints it. Open it in a browser:\n" +
			"it signs that browser in (a session cookie, 12 hours) and shows the connections. The link works once,\n" +
			"for 5 minutes; it is a secret until then, so do not paste it where others can read it.",
		Example: "  tokenline ui\n  tokenline ui --server https://tokenline.example.com --token-file /etc/tokenline/api-token",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			return o.callAPI(cmd, func(ctx context.Context, c *client.Client) error {
				var raw []byte
				ll, err := c.LoginLink(ctx, client.RawBody(&raw))
				return o.answer(out, raw, err, "login link", func() error {
					_, err := fmt.Fprintf(out, "%s\n(one-time login link for the web UI; works once, until %s)\n",
						ll.URL, ll.ExpiresAt.Local().Format("15:04:05"))
					return err
				})
			})
		},
	}
	bindClientFlags(cmd, o)
	return cmd
}

// printUILine prints where the web UI is. On a terminal it prints a
// one-time login link (a secret: it works once, for 5 minutes); anywhere
// else (a pipe, a file, the journal of a service manager) the output may be
// kept and read by others, so it prints only how to get one.
func printUILine(out io.Writer, m *Main) {
	if isTerminal(out) {
		link, _ := m.LoginLink()
		fmt.Fprintf(out, "  UI:         %s\n", link)
		fmt.Fprintf(out, "              (one-time login link, valid 5 minutes; `tokenline ui` prints a fresh one)\n")
		return
	}
	fmt.Fprintf(out, "  UI:         %s/ui/ (sign in with the one-time link `tokenline ui` prints)\n", m.BaseURL)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
