package app

// tokenline events tail: every new event as it is published on NATS (it
// subscribes to NATS directly, not through the HTTP API).

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

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

// tailTypeWidth is the width of the type column: the longest event type.
var tailTypeWidth = func() int {
	n := 0
	for _, t := range domain.EventTypes {
		n = max(n, len(t))
	}
	return n
}()

func newEventsTailCommand() *cobra.Command {
	var natsURL, creds, connection string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print every new event as it is published on NATS, until interrupted",
		Long: "tail subscribes to the event subjects on NATS directly (tokenline.conn.> or\n" +
			"tokenline.conn.<id>) and prints one line per event: time, connection id, type and\n" +
			"key data. Only events published while it runs are printed (see `tokenline audit` for\n" +
			"history). Stop it with Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			natsURL = cmp.Or(natsURL, strings.TrimSpace(os.Getenv(envClientNATSURL)), DefaultNATSURL)
			creds = cmp.Or(creds, strings.TrimSpace(os.Getenv(envNATSCreds)))
			subject := events.SubjectAll
			if connection != "" {
				if !domain.ValidConnectionID(connection) {
					return fmt.Errorf("--connection %q: a connection id is a lowercase UUID", connection)
				}
				subject = events.Subject(connection)
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			nc, err := natsserver.Connect(ctx, natsURL, natsserver.ConnectOptions{CredsFile: creds, Name: "tokenline-cli/events-tail"})
			if err != nil {
				return fmt.Errorf("%w (set --nats-url or %s to tokenline's NATS)", err, envClientNATSURL)
			}
			defer nc.Close()

			// Problems are reported from the loop below (one writer).
			notes := make(chan string, 16)
			note := func(s string) {
				select {
				case notes <- s:
				default:
				}
			}
			nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					note("disconnected from NATS (" + err.Error() + "); reconnecting")
				} else {
					note("disconnected from NATS; reconnecting")
				}
			})
			nc.SetReconnectHandler(func(*nats.Conn) { note("reconnected to NATS") })
			nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrSlowConsumer) {
					note("events were dropped: this terminal is slower than the event rate")
					return
				}
				note("NATS: " + err.Error())
			})

			msgs := make(chan *nats.Msg, 4096)
			sub, err := nc.ChanSubscribe(subject, msgs)
			if err != nil {
				return fmt.Errorf("subscribe to %s: %w", subject, err)
			}
			defer sub.Unsubscribe()
			// The subscription is in place at the server once Flush returns.
			fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
			err = nc.FlushWithContext(fctx)
			fcancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("subscribe to %s: %w", subject, err)
			}
			errOut := cmd.ErrOrStderr()
			fmt.Fprintf(errOut, "Tailing %s on %s (Ctrl-C to stop)\n", subject, nc.ConnectedUrlRedacted())
			out := cmd.OutOrStdout()
			for {
				select {
				case <-ctx.Done():
					return nil
				case s := <-notes:
					fmt.Fprintln(errOut, "tokenline: "+s)
				case m := <-msgs:
					if err := printTailLine(out, m, asJSON); err != nil {
						fmt.Fprintf(errOut, "tokenline: skipped a message on %s: %v\n", m.Subject, err)
					}
				}
			}
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&connection, "connection", "", "only this connection's events")
	fs.StringVar(&natsURL, "nats-url", "", "NATS URL, or a comma-separated list (env "+envClientNATSURL+", default "+DefaultNATSURL+")")
	fs.StringVar(&creds, "creds", "", "NATS credentials file (env "+envNATSCreds+")")
	fs.BoolVar(&asJSON, "json", false, "print each CloudEvent as one JSON line")
	return cmd
}

// printTailLine prints one event: time, connection id, type and key data.
func printTailLine(w io.Writer, m *nats.Msg, asJSON bool) error {
	var env events.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		return errors.New("not a CloudEvents JSON envelope")
	}
	env.Subject = cmp.Or(env.Subject, strings.TrimPrefix(m.Subject, events.SubjectPrefix))
	if asJSON {
		return writeRaw(w, m.Data)
	}
	line := fmt.Sprintf("%s  %-36s  %-*s", fmtTimeMilli(orNow(env.Time)), env.Subject, tailTypeWidth, shortType(env.Type))
	if d := eventDetails(env.Data); d != "" {
		line += "  " + d
	}
	_, err := fmt.Fprintln(w, strings.TrimRight(line, " "))
	return err
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}
