package jsstore

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// readSubject is Read for a range of one connection (r.ConnectionID set):
// the audit log of a connection, its state at an instant. A connection has
// tens of events among possibly millions of messages, so rather than a
// consumer filtered on its subject (created, then deleted: two requests to
// the stream's leader and consumer state on every server), it reads the
// subject's messages by batched direct gets (subjectMsgs), which leave
// nothing behind on the server, up to the subject's last message as the
// leader has it (on a stream of one copy, up to where the batches end).
// Records are decoded on the calling goroutine.
func (s *Store) readSubject(ctx context.Context, r events.Range, fn func(*events.Record) error) (uint64, error) {
	if !domain.ValidConnectionID(r.ConnectionID) {
		return 0, fmt.Errorf("jsstore: invalid connection id %q", r.ConnectionID)
	}
	subj := events.Subject(r.ConnectionID)
	var dec events.Decoder
	var rec events.Record
	var last uint64
	deliver := func(m *rangeMsg) error {
		stored := m.stored()
		if !r.StartTime.IsZero() && stored.Before(r.StartTime) {
			return nil
		}
		rec = events.Record{Seq: m.seq, Subject: subj, Stored: stored}
		decodeData(&rec, m.data, &dec)
		if err := fn(&rec); err != nil {
			return err
		}
		last = m.seq
		return nil
	}
	from := max(r.From, 1)
	if s.cfg.Replicas <= 1 && r.To == 0 && directRanges {
		// One copy: the server answering the direct get is the leader, so
		// its batches end at the subject's last message; no need to ask
		// for that first. A transport error continues as below.
		next, err := s.directRange(ctx, subj, from, math.MaxUint64, deliver)
		var ferr fnError
		switch {
		case errors.As(err, &ferr):
			return last, ferr.err
		case err == nil:
			return last, ctx.Err()
		}
		from = next
	}
	to, err := s.lastSeq(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return last, nil
	} else if err != nil {
		return last, fmt.Errorf("jsstore: read: %w", err)
	}
	if r.To != 0 {
		to = min(to, r.To)
	}
	if from > to {
		return last, nil
	}
	if err := s.subjectMsgs(ctx, subj, from, to, deliver); err != nil {
		return last, err
	}
	return last, ctx.Err()
}
