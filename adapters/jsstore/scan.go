package jsstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// Reading the stream: Info, Read (a bounded, parallel-decoding read) and
// Follow (a live subscription). Together they are the event source the
// projections read (projections.Source). A read of one connection's
// subject uses batched direct gets (readSubject), which create nothing on
// the server; every other read uses an ordered (ephemeral, unacknowledged)
// consumer, so it has no side effect on the stream, and deletes that
// consumer however it ends instead of leaving it to expire on the server
// (which allows a bounded number of consumers per stream).

// LastSeq returns the stream's last sequence (0 when empty).
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.Info(ctx)
	return info.LastSeq, err
}

// Info returns the stream's name, creation time and last sequence.
func (s *Store) Info(ctx context.Context) (events.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := jsreq.Do(ctx, func(ctx context.Context) (err error) {
		info, err = s.stream.Info(ctx)
		return err
	})
	if err != nil {
		return events.StreamInfo{}, fmt.Errorf("jsstore: stream info: %w", err)
	}
	return events.StreamInfo{Name: s.cfg.Stream, Created: info.Created, LastSeq: info.State.LastSeq}, nil
}

// ReadWorkers is how many goroutines decode for one Read (GOMAXPROCS at
// start-up). Benchmarks change it.
var ReadWorkers = runtime.GOMAXPROCS(0)

// readChunk is how many messages travel together through the pipeline.
const readChunk = 256

// readPull is how many messages a read asks the server for at a time.
const readPull = 8192

// readPipe decodes every message of a Read.
var readPipe = newPipe(readChunk, func(r *events.Record) *events.Record { return r }, decodeInto)

// Read reads the part of the stream r selects, in order, and calls fn for
// every record from the calling goroutine. Decoding, the expensive part,
// runs on ReadWorkers goroutines between the consumer and fn: the
// consumer's callback gathers the messages into chunks and hands them to
// the workers and, in the same order, to fn's loop, which waits for each
// chunk to be decoded. fn
// must not keep the pointer it is given. fn returning an error stops the
// read with that error. A record that does not decode is delivered with
// Err set. A range of one connection (r.ConnectionID) is read by direct
// gets and decoded on the calling goroutine (readSubject).
//
// It returns the last sequence it delivered (0 if none).
func (s *Store) Read(ctx context.Context, r events.Range, fn func(*events.Record) error) (uint64, error) {
	if r.ConnectionID != "" {
		return s.readSubject(ctx, r, fn)
	}
	to := r.To
	if to == 0 {
		last, err := s.LastSeq(ctx)
		if err != nil {
			return 0, err
		}
		to = last
	}
	from := max(r.From, 1)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	if !r.StartTime.IsZero() {
		t := r.StartTime
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t}
	}
	if from > to {
		return 0, nil
	}
	if !r.StartTime.IsZero() {
		// Nothing stored at or after StartTime: the consumer would wait.
		last, err := s.stream.GetMsg(ctx, to)
		if err == nil && last.Time.Before(r.StartTime) {
			return 0, nil
		}
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("jsstore: read consumer: %w", err)
	}
	// Consume creates the server's consumer: deleted however the read
	// ends, even if Consume itself fails after creating it.
	defer s.dropConsumer(cons)

	return readPipe.run(ctx, cons, to, fn)
}

// dropConsumer deletes the server-side consumer an ordered consumer is
// using once a read is done, rather than leaving it to the server's
// inactivity threshold. It is best effort, with its own short deadline (the
// read's context may be cancelled already).
func (s *Store) dropConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	if err := s.stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Debug("could not delete a read's consumer", "consumer", info.Name, "error", err.Error())
	}
}

// Follow delivers every record from stream sequence from (0 or 1: the
// beginning) onwards, in order, as it arrives, until stop is called or ctx
// ends. fn is called from one goroutine at a time and must not keep the
// pointer it is given. stop ends delivery (a call of fn in progress may
// still complete), releases the context registration and deletes the
// consumer; it may be called more than once.
func (s *Store) Follow(ctx context.Context, from uint64, fn func(*events.Record)) (stop func(), err error) {
	return s.FollowKnown(ctx, from, nil, fn)
}

// FollowKnown is Follow taking the event of a message from known(seq)
// when it returns one for the message's subject, instead of decoding the
// message (projections.KnownFollower): the projection Runner gives it the
// events this instance appended, whose bytes the stream holds.
func (s *Store) FollowKnown(ctx context.Context, from uint64, known func(seq uint64) (domain.Event, bool), fn func(*events.Record)) (stop func(), err error) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.follow.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("jsstore: follow: %w", err)
	}
	// The handler runs on one goroutine at a time: its decoder and record
	// are reused from one message to the next (fn does not keep the
	// pointer), and the sequence and storage time are read from the
	// message's ack subject without allocating (ackInfo; Metadata, which
	// allocates, only for a shape it does not know).
	var (
		dec events.Decoder
		rec events.Record
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		rec = events.Record{Subject: m.Subject()}
		if seq, ts, ok := ackInfo(m.Reply()); ok {
			rec.Seq, rec.Stored = seq, time.Unix(0, ts)
			if e, ok := knownAt(known, seq); ok && subjectIs(rec.Subject, e.ConnectionID) {
				e.Seq = seq
				rec.Event = e
			} else {
				decodeInto(&rec, m, &dec)
			}
		} else if md, err := m.Metadata(); err != nil {
			rec.Err = fmt.Errorf("jsstore: message metadata: %w", err)
		} else {
			rec.Seq, rec.Stored = md.Sequence.Stream, md.Timestamp
			decodeInto(&rec, m, &dec)
		}
		fn(&rec)
		rec = events.Record{} // holds nothing of the message until the next
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("jsstore: follow: %w", err)
	}
	var once sync.Once
	end := func() {
		once.Do(func() {
			cc.Stop()
			s.dropConsumer(cons)
		})
	}
	unregister := context.AfterFunc(ctx, end)
	return func() {
		unregister()
		end()
	}, nil
}

// knownAt is known(seq), or nothing without a known.
func knownAt(known func(uint64) (domain.Event, bool), seq uint64) (domain.Event, bool) {
	if known == nil {
		return domain.Event{}, false
	}
	return known(seq)
}

// decodeInto completes a record (Seq, Stored and Subject set) with the
// decoded event.
func decodeInto(r *events.Record, m jetstream.Msg, dec *events.Decoder) {
	if m == nil || r.Err != nil {
		return
	}
	decodeData(r, m.Data(), dec)
}

// decodeData completes a record (Seq, Stored and Subject set) with the event
// data decodes to.
func decodeData(r *events.Record, data []byte, dec *events.Decoder) {
	e, err := dec.Decode(data)
	if err != nil {
		r.Err = err
		return
	}
	if !subjectIs(r.Subject, e.ConnectionID) {
		r.Err = fmt.Errorf("%w: event subject %s does not match message subject", events.ErrMalformed, e.ConnectionID)
		return
	}
	e.Seq = r.Seq
	r.Event = e
}

func subjectIs(subject, connectionID string) bool {
	return len(subject) == len(events.SubjectPrefix)+len(connectionID) &&
		strings.HasPrefix(subject, events.SubjectPrefix) && subject[len(events.SubjectPrefix):] == connectionID
}

// ackInfo reads the stream sequence and the storage time (Unix ns) from a
// JetStream ack subject without allocating, as jetstream.Msg.Metadata does:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending> or,
// from newer servers, $JS.ACK.<domain>.<account>.<stream>.<consumer>.
// <delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>]. ok is false for any
// other shape (the caller then uses Metadata).
func ackInfo(reply string) (seq uint64, ts int64, ok bool) {
	var tok [13]string
	n := 0
	for start := 0; ; {
		i := strings.IndexByte(reply[start:], '.')
		if n == len(tok) {
			return 0, 0, false
		}
		if i < 0 {
			tok[n] = reply[start:]
			n++
			break
		}
		tok[n] = reply[start : start+i]
		n++
		start += i + 1
	}
	if n < 2 || tok[0] != "$JS" || tok[1] != "ACK" {
		return 0, 0, false
	}
	var sseq, tm string
	switch {
	case n == 9:
		sseq, tm = tok[5], tok[7]
	case n >= 11:
		sseq, tm = tok[7], tok[9]
	default:
		return 0, 0, false
	}
	s, ok1 := parseDigits(sseq)
	t, ok2 := parseDigits(tm)
	if !ok1 || !ok2 || s == 0 {
		return 0, 0, false
	}
	return s, int64(t), true
}

func parseDigits(s string) (uint64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
