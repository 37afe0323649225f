// Command consumer is an example downstream consumer of tokenline's events.
//
// It reads the TOKENLINE stream through a durable JetStream consumer, prints
// each authentication event (time, connection, type and what changed) and
// acknowledges it. The server remembers how far a durable consumer got, so a
// consumer that was stopped or offline resumes with the first event it has
// not acknowledged: every event is printed once, in stream order.
//
//	go run ./examples/consumer -nats-url nats://127.0.0.1:4222 -nkey ./tokenline-data/nats-reader.nk -durable billing-sync
//	go run ./examples/consumer -nats-url tls://nats.example:4222 -creds consumer.creds -durable audit
//
// Against the embedded NATS of `tokenline serve`, connect as the reader
// identity: -nkey with the seed file serve wrote, DATA_DIR/nats-reader.nk.
// The reader may create and use consumers on the TOKENLINE stream and
// nothing else (it cannot list or delete consumers: a durable it no longer
// needs is removed by the operator, or set InactiveThreshold). With an
// external NATS, use the credentials its operator issued (-creds or -nkey;
// docs/nats-server.conf gives readers the same rights).
//
// The wire format is CloudEvents 1.0 in structured JSON mode on the subjects
// tokenline.conn.<connection-id> (see docs/asyncapi.yaml); the events
// package decodes every schema version ever written.
//
// Delivery is at least once: an event whose acknowledgement is lost (the
// process dies between printing and acknowledging) is delivered again after
// the consumer's ack wait. Consumers that must not act twice de-duplicate by
// the CloudEvents id.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := consume(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// consume is the command: it parses args, connects, and runs until ctx ends.
// It returns the exit code.
func consume(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server URL")
	durable := fs.String("durable", "tokenline-example", "durable consumer name (the server remembers its position)")
	creds := fs.String("creds", "", "NATS .creds file (user JWT and seed; optional)")
	nkey := fs.String("nkey", "", "NATS user nkey seed file, such as DATA_DIR/nats-reader.nk (optional)")
	stream := fs.String("stream", Stream, "the stream of tokenline's events")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	opts := []nats.Option{nats.Name("tokenline-example-consumer"), nats.MaxReconnects(-1)}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	if *nkey != "" {
		auth, err := nats.NkeyOptionFromSeed(*nkey)
		if err != nil {
			fmt.Fprintln(stderr, "consumer: -nkey:", err)
			return 1
		}
		opts = append(opts, auth)
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		fmt.Fprintln(stderr, "consumer: connect:", err)
		return 1
	}
	defer nc.Drain()
	if err := Run(ctx, nc, *stream, *durable, stdout, 0); err != nil {
		fmt.Fprintln(stderr, "consumer:", err)
		return 1
	}
	return 0
}

// Stream is the name of tokenline's event stream.
const Stream = "TOKENLINE"

// fetchWait bounds one pull request, and so how long Run takes to notice
// that ctx ended.
const fetchWait = time.Second

// Run consumes tokenline's events in stream with the durable consumer named durable,
// printing one line per event to out and acknowledging it, until ctx ends
// (then it returns nil) or, if stopAfter > 0, after stopAfter events.
//
// The consumer is created, or updated, with: FilterSubject tokenline.conn.>,
// DeliverAll (a new consumer starts at the first event), AckExplicit, and
// MaxAckPending 1 so that events are handled strictly in stream order even
// when one is redelivered. Events are pulled one at a time and a pull is
// never abandoned half way, so stopping leaves nothing delivered but
// unacknowledged.
func Run(ctx context.Context, nc *nats.Conn, stream, durable string, out io.Writer, stopAfter int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "tokenline example consumer",
		FilterSubject: events.SubjectAll,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on stream %s: %w", durable, stream, err)
	}
	for n := 0; stopAfter <= 0 || n < stopAfter; {
		if ctx.Err() != nil {
			return nil
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			if err := handle(msg, out); err != nil {
				return err
			}
			// Wait for the server to confirm the ack: once Run returns,
			// the event is not delivered to this consumer again.
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := msg.DoubleAck(actx)
			cancel()
			if err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch: %w", err)
		}
	}
	return nil
}

// handle prints one message. A message that does not decode (an unknown
// type, a schema version newer than this build, garbage) is reported and
// acknowledged too: one bad message must not stop the consumer.
func handle(msg jetstream.Msg, out io.Writer) error {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	e, err := events.Decode(msg.Data())
	if err != nil {
		_, werr := fmt.Fprintf(out, "seq=%d %s skipped: %v\n", seq, msg.Subject(), err)
		return werr
	}
	_, err = fmt.Fprintf(out, "%s seq=%d %s %s %s\n", e.Time.UTC().Format(time.RFC3339Nano), seq, e.ConnectionID, e.Type(), Describe(e))
	return err
}

// Describe says what an event changed, in one line. It shows reasons, error
// codes, expiry times and fingerprints; events never carry tokens.
func Describe(e domain.Event) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	switch d := e.Payload.(type) {
	case domain.ConnectionCreated:
		add("provider=%s scopes=%s", d.Provider, strings.Join(d.Scopes, ","))
		add("reason=%s", domain.ReasonNeverAuthorised)
	case domain.AuthorisationStarted:
		add("attempt=%s expires_at=%s", d.AttemptID, stamp(d.ExpiresAt))
	case domain.AuthorisationCompleted:
		add("access_token_fp=%s expires_at=%s", d.Tokens.AccessTokenFP, stamp(d.Tokens.AccessTokenExpiresAt))
	case domain.AuthorisationFailed:
		add("reason=%s", d.Reason)
		if d.ErrorCode != "" {
			add("error=%s", d.ErrorCode)
		}
	case domain.RefreshStarted:
		add("trigger=%s attempt=%d lease_until=%s", d.Trigger, d.Attempt, stamp(d.LeaseUntil))
	case domain.RefreshLeaseExtended:
		add("lease_until=%s", stamp(d.LeaseUntil))
	case domain.RefreshSucceeded:
		add("rotated=%t access_token_fp=%s expires_at=%s", d.Rotated, d.Tokens.AccessTokenFP, stamp(d.Tokens.AccessTokenExpiresAt))
	case domain.RefreshFailed:
		add("%s error=%s", d.Class, d.ErrorCode)
		if d.HTTPStatus != 0 {
			add("http_status=%d", d.HTTPStatus)
		}
		add("attempt=%d", d.Attempt)
		if d.Terminal {
			add("reason=%s", d.Reason)
		} else if !d.RetryAt.IsZero() {
			add("retry_at=%s", stamp(d.RetryAt))
		}
	case domain.AccessRejected:
		add("http_status=%d", d.HTTPStatus)
		if d.ErrorCode != "" {
			add("error=%s", d.ErrorCode)
		}
		if d.Terminal {
			add("terminal reason=%s", d.Reason)
		}
	case domain.TokensInvalidated:
		add("provider_revoked=%t", d.ProviderRevoked)
	case domain.ConnectionUpdated:
		if d.Scopes != nil {
			add("scopes=%s", strings.Join(d.Scopes, ","))
		}
		if d.Config != nil {
			add("config_keys=%d", len(d.Config))
		}
	case domain.ConnectionDeleted:
		add("reason=%s", domain.ReasonConnectionDeleted)
	}
	if to, ok := stateAfter(e); ok {
		add("-> %s", to)
	}
	return strings.Join(parts, " ")
}

// stateAfter returns the state an event moves its connection to, from the
// domain's transition table; false for events that keep the state.
func stateAfter(e domain.Event) (domain.State, bool) {
	if e.Type() == domain.EventConnectionCreated {
		return domain.StateUnauthenticated, true
	}
	name := domain.TransitionName(e.Payload)
	for _, d := range domain.Transitions {
		if d.Name == name {
			if len(d.Src) == 1 && d.Src[0] == d.Dst {
				return "", false
			}
			return domain.State(d.Dst), true
		}
	}
	return "", false
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
