package app

// tokenline events tail: every new event as it is stored in the TOKENLINE
// stream (it reads JetStream directly, not through the HTTP API).

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/jsstore"
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
	var natsConn readerNATS
	var connection string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print every new event as it is stored in the TOKENLINE stream, until interrupted",
		Long: "tail reads the TOKENLINE JetStream stream directly (an ordered consumer on\n" +
			"tokenline.conn.> or tokenline.conn.<id>, starting with the next event stored) and\n" +
			"prints one line per event: time, connection id, type and key data. Only events\n" +
			"stored while it runs are printed (see `tokenline audit` for history); messages that\n" +
			"are published on the subjects but not stored are never shown. Control characters\n" +
			"in events are printed escaped (\\x1b, \\u202e), so an event cannot drive the terminal.\n" +
			"Stop it with Ctrl-C.\n\n" +
			"Against the embedded NATS of `tokenline serve`, connect with the reader identity:\n" +
			"  tokenline events tail --nats-url nats://127.0.0.1:4222 --creds ./tokenline-data/nats-reader.nk\n" +
			"--creds takes a .creds file (user JWT and seed) or a file holding a user nkey seed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			subject := events.SubjectAll
			if connection != "" {
				if !domain.ValidConnectionID(connection) {
					return fmt.Errorf("--connection %q: a connection id is a lowercase UUID", connection)
				}
				subject = events.Subject(connection)
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			nc, err := natsConn.connect(ctx, "tokenline-cli/events-tail")
			if err != nil {
				return err
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
				// A reader may not delete consumers: when the ordered
				// consumer is recreated, the old one expires on its own.
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "CONSUMER.DELETE") {
					return
				}
				note("NATS: " + err.Error())
			})

			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
			cons, err := js.OrderedConsumer(cctx, jsstore.DefaultStream, jetstream.OrderedConsumerConfig{
				FilterSubjects:    []string{subject},
				DeliverPolicy:     jetstream.DeliverNewPolicy,
				InactiveThreshold: time.Minute,
			})
			ccancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("read stream %s (%s): %w", jsstore.DefaultStream, subject, err)
			}
			msgs := make(chan jetstream.Msg, 256)
			cc, err := cons.Consume(func(m jetstream.Msg) {
				select { // a slow terminal slows the consumer; nothing is dropped
				case msgs <- m:
				case <-ctx.Done():
				}
			}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) || nc.IsConnected() {
					note("reading " + jsstore.DefaultStream + ": " + err.Error())
				}
			}))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("read stream %s (%s): %w", jsstore.DefaultStream, subject, err)
			}
			defer cc.Stop()
			errOut := cmd.ErrOrStderr()
			fmt.Fprintf(errOut, "Tailing %s in stream %s on %s (Ctrl-C to stop)\n", subject, jsstore.DefaultStream, nc.ConnectedUrlRedacted())
			out := cmd.OutOrStdout()
			for {
				select {
				case <-ctx.Done():
					return nil
				case s := <-notes:
					fmt.Fprintln(errOut, "tokenline: "+escapeControls(s))
				case m := <-msgs:
					if err := printTailLine(out, m.Subject(), m.Data(), asJSON); err != nil {
						fmt.Fprintf(errOut, "tokenline: skipped a message on %s: %v\n", escapeControls(m.Subject()), err)
					}
				}
			}
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&connection, "connection", "", "only this connection's events")
	natsConn.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print each CloudEvent as one JSON line")
	return cmd
}

// printTailLine prints one event: time, connection id, type and key data,
// or with asJSON the event as one line of JSON. Control characters in the
// event are escaped either way.
func printTailLine(w io.Writer, subject string, data []byte, asJSON bool) error {
	var env events.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return errors.New("not a CloudEvents JSON envelope")
	}
	env.Subject = cmp.Or(env.Subject, strings.TrimPrefix(subject, events.SubjectPrefix))
	if asJSON {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil { // one line: no raw newlines
			return errors.New("not a CloudEvents JSON envelope")
		}
		// Outside strings compact JSON is ASCII, so this only rewrites
		// characters inside strings, as valid \u escapes.
		return writeRaw(w, []byte(escapeControlsJSON(buf.String())))
	}
	line := fmt.Sprintf("%s  %-36s  %-*s", fmtTimeMilli(orNow(env.Time)), env.Subject, tailTypeWidth, shortType(env.Type))
	if d := eventDetails(env.Data); d != "" {
		line += "  " + d
	}
	_, err := fmt.Fprintln(w, escapeControls(strings.TrimRight(line, " ")))
	return err
}

// isControl reports runes a terminal may act on: C0 and C1 controls, DEL,
// and the Unicode bidirectional overrides and isolates, which reorder what
// is displayed.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f
}

// escapeControls writes control characters as Go escapes (\x1b, \u202e)
// and bytes that are not UTF-8 as \xff; everything else is kept.
func escapeControls(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return isControl(r) || r == utf8.RuneError }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r < 0x80 && isControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case isControl(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// escapeControlsJSON writes the control characters that survive in compact
// JSON (C1 controls and bidi marks, inside strings) as \uXXXX, which keeps
// the JSON valid and equal in meaning.
func escapeControlsJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		if isControl(r) || r == utf8.RuneError {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}
