package jsstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// OpenReader returns a store on existing streams without creating or
// changing anything: what `tokenline verify` needs, with a NATS identity
// that may only read the streams. The checkpoint stream may be missing
// (written by a tokenline without checkpoints): Verify then checks the
// chains alone.
func OpenReader(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg = withDefaults(cfg)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("jsstore: jetstream: %w", err)
	}
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("jsstore: stream %s: %w", cfg.Stream, err)
	}
	follow, err := followStream(ctx, cfg, st)
	if err != nil {
		return nil, err
	}
	s := &Store{nc: nc, replies: jsreq.NewReplies(nc), js: js, stream: st, follow: follow, cfg: cfg, log: cfg.Logger, cache: make(map[string]*domain.Connection)}
	cp, err := js.Stream(ctx, CheckpointStreamConfig(cfg).Name)
	switch {
	case err == nil:
		s.checkpoints = cp
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("jsstore: checkpoint stream: %w", err)
	}
	return s, nil
}

// Verify feeds v every checkpoint and then every event record (of
// connectionID only, if set) and returns its report.
func (s *Store) Verify(ctx context.Context, v *events.Verifier, connectionID string) (events.VerifyReport, error) {
	if s.checkpoints != nil {
		if err := s.readCheckpoints(ctx, v.Checkpoint); err != nil {
			return events.VerifyReport{}, err
		}
	}
	last, err := s.LastSeq(ctx)
	if err != nil {
		return events.VerifyReport{}, err
	}
	if connectionID != "" {
		// Read stops at the subject's last message; Finish needs the
		// stream's.
		if !domain.ValidConnectionID(connectionID) {
			return events.VerifyReport{}, fmt.Errorf("jsstore: invalid connection id %q", connectionID)
		}
	}
	switch {
	case last == 0:
	case connectionID != "":
		if _, err := s.Read(ctx, events.Range{To: last, ConnectionID: connectionID}, func(r *events.Record) error {
			v.Event(r)
			return nil
		}); err != nil {
			return events.VerifyReport{}, err
		}
	default:
		// The whole stream: the link check on the message bytes
		// (readLinks), without decoding the events.
		if _, err := s.readLinks(ctx, last, v.Link); err != nil {
			return events.VerifyReport{}, err
		}
	}
	return v.Finish(last), nil
}

// readCheckpoints calls fn with every checkpoint message, in order. It
// reads by direct gets (batched), not through a consumer: the reader
// identity, which `tokenline verify` runs with, may not create consumers on
// the checkpoint stream (natsserver.ReaderPermissions says why).
func (s *Store) readCheckpoints(ctx context.Context, fn func([]byte)) error {
	info, err := s.checkpoints.Info(ctx)
	if err != nil {
		return fmt.Errorf("jsstore: checkpoint stream: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	err = s.streamSubjectMsgs(ctx, info.Config.Name, events.CheckpointSubject, info.State.FirstSeq, info.State.LastSeq, func(m *rangeMsg) error {
		fn(m.data)
		return nil
	})
	if err != nil {
		return fmt.Errorf("jsstore: read checkpoints: %w", err)
	}
	return nil
}
