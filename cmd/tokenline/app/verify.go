package app

// tokenline verify: check the event stream's hash chains and signed
// checkpoints (docs/operations.md, "Tamper evidence"). It reads the streams
// only, so a NATS identity that may read them suffices.

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

func newVerifyCommand() *cobra.Command {
	var natsConn readerNATS
	var connection, stream, publicKey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the event stream's hash chains and signed checkpoints; report the first break",
		Long: "verify reads the signed checkpoints and then every event of the stream (or of one\n" +
			"connection) from NATS and reports the first event that breaks its connection's hash\n" +
			"chain or a checkpoint: an event altered, inserted, removed from the middle, reordered,\n" +
			"or the stream's tail cut after a checkpoint. Give the public key (GET /v1/signing-key)\n" +
			"with --public-key to prove who signed the checkpoints; without it they are checked\n" +
			"against the key they name. It exits with status 1 when it finds a break.",
		Example: "  tokenline verify --public-key \"$(curl -s -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/v1/signing-key | jq -r .key)\"",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if connection != "" && !domain.ValidConnectionID(connection) {
				return fmt.Errorf("--connection %q: a connection id is a lowercase UUID", connection)
			}
			var pub ed25519.PublicKey
			if publicKey != "" {
				var err error
				if pub, err = events.ParseKey(publicKey); err != nil {
					return fmt.Errorf("--public-key: %w", err)
				}
			}
			ctx, stop := commandContext(cmd)
			defer stop()
			nc, err := natsConn.connect(ctx, "tokenline-cli/verify")
			if err != nil {
				return err
			}
			defer nc.Close()
			st, err := jsstore.OpenReader(ctx, nc, jsstore.Config{Stream: stream})
			if err != nil {
				return err
			}
			start := time.Now()
			rep, err := st.Verify(ctx, events.NewVerifier(pub, connection), connection)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printVerifyReport(cmd.OutOrStdout(), st.StreamName(), connection, rep, time.Since(start))
			}
			if n := len(rep.Breaks) + rep.Truncated; n > 0 {
				return fmt.Errorf("verify: %d breaks found, the first: %s", n, rep.Breaks[0])
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&connection, "connection", "", "only this connection's events (and its checkpointed heads)")
	fs.StringVar(&publicKey, "public-key", "", "the checkpoint signing key, \"ed25519:<base64>\" (GET /v1/signing-key)")
	fs.StringVar(&stream, "stream", jsstore.DefaultStream, "the event stream's name")
	natsConn.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printVerifyReport(w io.Writer, stream, connection string, r events.VerifyReport, took time.Duration) {
	what := "stream " + stream
	if connection != "" {
		what += ", connection " + connection
	}
	fmt.Fprintf(w, "Verified %s: %d events of %d connections in %s", what, r.Events, r.Connections, took.Round(time.Millisecond))
	if r.BeforeChain > 0 {
		fmt.Fprintf(w, " (%d written before the chain, unchained)", r.BeforeChain)
	}
	fmt.Fprintln(w)
	if r.Refused > 0 {
		fmt.Fprintf(w, "%d events extend the chain but their transition is refused (tokenline skips them too)\n", r.Refused)
	}
	switch {
	case r.Checkpoints == 0:
		fmt.Fprintln(w, "No valid checkpoint: the chains are consistent, but nothing proves they were not rewritten.")
	default:
		c := r.LastCheckpoint
		fmt.Fprintf(w, "%d checkpoints; the last: number %d, %s, up to seq %d, %s\n", r.Checkpoints, c.Number, c.Time.Format(time.RFC3339), c.UpTo, r.LastCheckpointHash)
		if r.KeyPinned {
			fmt.Fprintln(w, "Signatures verified with the given public key.")
		} else {
			fmt.Fprintf(w, "Signatures verified with the key the checkpoints name (%s): pass --public-key to prove who signed.\n", r.Key)
		}
	}
	if len(r.Breaks) == 0 {
		fmt.Fprintln(w, "OK: no break.")
		return
	}
	fmt.Fprintf(w, "FIRST BREAK: %s\n", r.Breaks[0])
	for _, b := range r.Breaks[1:] {
		fmt.Fprintf(w, "  then: %s\n", b)
	}
	if r.Truncated > 0 {
		fmt.Fprintf(w, "  and %d more\n", r.Truncated)
	}
}
