package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// Record is one message of the stream as read by Replay and Subscribe.
// Err is set (and Event zero) when the message does not decode: readers
// count and skip such records, they never stop on them.
type Record struct {
	Seq     uint64
	Subject string
	// Stored is when the server stored the message.
	Stored time.Time
	Event  domain.Event
	Err    error
}

func record(m jetstream.Msg) Record {
	md, err := m.Metadata()
	r := Record{Subject: m.Subject()}
	if err != nil {
		r.Err = fmt.Errorf("jsstore: message metadata: %w", err)
		return r
	}
	r.Seq, r.Stored = md.Sequence.Stream, md.Timestamp
	e, err := events.Decode(m.Data())
	if err != nil {
		r.Err = err
		return r
	}
	if events.Subject(e.ConnectionID) != r.Subject {
		r.Err = fmt.Errorf("%w: event subject %s does not match message subject", events.ErrMalformed, e.ConnectionID)
		return r
	}
	e.Seq = r.Seq
	r.Event = e
	return r
}

// LastSeq returns the stream's last sequence (0 when empty).
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("jsstore: stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// ReplayOptions narrows a replay.
type ReplayOptions struct {
	// From is the first stream sequence to read (0 or 1: the beginning).
	From uint64
	// To is the last sequence to read; 0 means the stream's last sequence
	// when Replay starts.
	To uint64
	// ConnectionID limits the replay to one connection's subject.
	ConnectionID string
	// Batch is how many messages the client keeps buffered (default 5000).
	Batch int
}

// Replay reads the stream in order from opts.From through opts.To and calls
// fn for every record. It has no side effects on the stream. fn returning an
// error stops the replay with that error.
func (s *Store) Replay(ctx context.Context, opts ReplayOptions, fn func(Record) error) error {
	to := opts.To
	if to == 0 {
		last, err := s.LastSeq(ctx)
		if err != nil {
			return err
		}
		to = last
	}
	from := max(opts.From, 1)
	if from > to {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	if opts.ConnectionID != "" {
		if !domain.ValidConnectionID(opts.ConnectionID) {
			return fmt.Errorf("jsstore: invalid connection id %q", opts.ConnectionID)
		}
		cfg.FilterSubjects = []string{events.Subject(opts.ConnectionID)}
		last, err := s.stream.GetLastMsgForSubject(ctx, cfg.FilterSubjects[0])
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("jsstore: replay: %w", err)
		}
		to = min(to, last.Sequence)
		if from > to {
			return nil
		}
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("jsstore: replay consumer: %w", err)
	}
	batch := opts.Batch
	if batch <= 0 {
		batch = 5000
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(batch))
	if err != nil {
		return fmt.Errorf("jsstore: replay: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("jsstore: replay: %w", err)
		}
		r := record(m)
		if r.Seq > to {
			return nil
		}
		if err := fn(r); err != nil {
			return err
		}
		if r.Seq >= to {
			return nil
		}
	}
}

// Subscription is a live subscription started by Subscribe.
type Subscription interface {
	// Stop ends delivery; fn is not called after Stop returns... except
	// for a call already in progress.
	Stop()
}

type subscription struct{ cc jetstream.ConsumeContext }

func (s subscription) Stop() { s.cc.Stop() }

// Subscribe delivers every record from stream sequence from (0 or 1: the
// beginning) onwards, in order, as it arrives, until Stop or ctx ends. fn is
// called from one goroutine at a time. It uses an ordered (ephemeral)
// consumer: durable downstream consumers create their own.
func (s *Store) Subscribe(ctx context.Context, from uint64, fn func(Record)) (Subscription, error) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("jsstore: subscribe: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { fn(record(m)) }, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("jsstore: subscribe: %w", err)
	}
	context.AfterFunc(ctx, cc.Stop)
	return subscription{cc}, nil
}
