package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
)

// directBatch is how many messages one batched direct get asks for.
const directBatch = 256

// directRanges is false in tests that read every message of a range from
// the leader, as subjectRange does when the replica answering the direct
// get is behind.
var directRanges = true

// lastSeq returns the stream sequence of the last message on subject as
// the stream's leader has it (an error wrapping jetstream.ErrMsgNotFound if
// there is none). A direct get could be answered by a follower that has
// not stored the latest writes yet; the leader has every acknowledged one.
// A stream with one replica is its own leader and is read by direct get.
func (s *Store) lastSeq(ctx context.Context, subject string) (uint64, error) {
	m, err := jsreq.Latest(ctx, s.js, s.cfg.Stream, s.cfg.Replicas, subject)
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// subjectRange calls fn for every message on subject with a stream sequence
// in [from, upTo], in order. upTo must be a sequence the leader reported
// (lastSeq), so every message up to it exists. It reads by batched direct
// gets (one round trip per directBatch messages), which any replica may
// answer; what that replica did not have yet (it is behind the leader), or
// did not answer in time, is read from the leader one message at a time.
// A follower being behind never fails the caller.
func (s *Store) subjectRange(ctx context.Context, subject string, from, upTo uint64, fn func(seq uint64, data []byte) error) error {
	return s.subjectMsgs(ctx, subject, from, upTo, func(m *rangeMsg) error { return fn(m.seq, m.data) })
}

// rangeMsg is one message subjectMsgs delivers: valid only during the call.
type rangeMsg struct {
	seq    uint64
	data   []byte
	stored func() time.Time // when the server stored it (parsed on demand)
}

// subjectMsgs is subjectRange with the time each message was stored.
func (s *Store) subjectMsgs(ctx context.Context, subject string, from, upTo uint64, fn func(*rangeMsg) error) error {
	return s.streamSubjectMsgs(ctx, s.cfg.Stream, subject, from, upTo, fn)
}

// streamSubjectMsgs is subjectMsgs on another stream of the store (the
// checkpoint stream).
func (s *Store) streamSubjectMsgs(ctx context.Context, stream, subject string, from, upTo uint64, fn func(*rangeMsg) error) error {
	next, err := from, error(nil)
	if directRanges {
		next, err = s.streamDirectRange(ctx, stream, subject, from, upTo, fn)
	}
	var ferr fnError
	if errors.As(err, &ferr) {
		return ferr.err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("jsstore: read %s: %w", subject, ctx.Err())
	}
	if err != nil {
		s.log.Debug("direct get failed: reading from the stream leader", "subject", subject, "from", next, "error", err.Error())
	}
	for next <= upTo {
		m, err := jsreq.NextMsg(ctx, s.js, stream, subject, next)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // the caller sees what is missing
		}
		if err != nil {
			return fmt.Errorf("jsstore: read %s from the stream leader: %w", subject, err)
		}
		if m.Sequence > upTo {
			return nil
		}
		if err := fn(&rangeMsg{seq: m.Sequence, data: m.Data, stored: func() time.Time { return m.Time }}); err != nil {
			return err
		}
		next = m.Sequence + 1
	}
	return nil
}

// fnError marks an error of subjectRange's fn (not of the transport).
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// directRange is subjectRange's batched direct gets. It returns the next
// sequence it still needs (upTo+1 when it delivered everything), and why it
// stopped early: the replica that answered had nothing more up to upTo (no
// error), or an error.
func (s *Store) directRange(ctx context.Context, subject string, from, upTo uint64, fn func(*rangeMsg) error) (uint64, error) {
	return s.streamDirectRange(ctx, s.cfg.Stream, subject, from, upTo, fn)
}

// streamDirectRange is directRange on another stream of the store.
func (s *Store) streamDirectRange(ctx context.Context, stream, subject string, from, upTo uint64, fn func(*rangeMsg) error) (uint64, error) {
	// One batch is answered at a time (directBatch messages and an end
	// marker): a channel of two batches holds them, where a synchronous
	// subscription's would be the connection's SubChanLen (65,536 slots,
	// 512 KiB allocated for every query).
	inbox := s.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 2*(directBatch+1))
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return from, err
	}
	defer sub.Unsubscribe()
	api := "$JS.API.DIRECT.GET." + stream
	next := from
	for next <= upTo {
		req, _ := json.Marshal(struct {
			Seq     uint64 `json:"seq"`
			NextFor string `json:"next_by_subj"`
			Batch   int    `json:"batch"`
			UpToSeq uint64 `json:"up_to_seq"`
		}{next, subject, directBatch, upTo})
		if err := s.nc.PublishRequest(api, inbox, req); err != nil {
			return next, err
		}
		more, err := s.directBatch(ctx, ch, subject, &next, upTo, fn)
		if err != nil || !more {
			return next, err
		}
	}
	return next, nil
}

// directBatch reads the responses to one batched direct get, within its
// own per-try timeout. more reports whether the replica has more messages
// on the subject up to upTo than this batch carried.
func (s *Store) directBatch(ctx context.Context, ch <-chan *nats.Msg, subject string, next *uint64, upTo uint64, fn func(*rangeMsg) error) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, jsreq.TryTimeout)
	defer cancel()
	got := 0
	var rm rangeMsg
	var m *nats.Msg
	rm.stored = func() time.Time {
		t, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		return t
	}
	for {
		select {
		case m = <-ch:
		case <-ctx.Done():
			return false, fmt.Errorf("jsstore: direct get %s: %w", subject, ctx.Err())
		}
		if status := m.Header.Get("Status"); status != "" {
			switch status {
			case "204": // end of this batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				return pending > 0 && got > 0, nil
			case "404":
				return false, nil
			default:
				return false, fmt.Errorf("jsstore: direct get %s: status %s %s", subject, status, m.Header.Get("Description"))
			}
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil || seq < *next {
			return false, fmt.Errorf("jsstore: direct get %s: bad sequence %q", subject, m.Header.Get("Nats-Sequence"))
		}
		if seq > upTo {
			// Some servers do not honour up_to_seq; what lies beyond is
			// not asked for.
			return false, nil
		}
		rm.seq, rm.data = seq, m.Data
		if err := fn(&rm); err != nil {
			return false, fnError{err}
		}
		got++
		*next = seq + 1
	}
}

// publish publishes m with a per-try timeout, again after a timeout or
// while the stream has no leader (jsreq.Do). m carries its event id as
// Nats-Msg-Id and the subject's expected last sequence: if an earlier try
// was stored after all, a later one is refused as a wrong last sequence,
// and the subject's last message (from the leader) carrying m's id is that
// earlier try's success.
func (s *Store) publish(ctx context.Context, m *nats.Msg, sent func()) (*jetstream.PubAck, error) {
	var ack *jetstream.PubAck
	tries := 0
	err := jsreq.Do(ctx, func(ctx context.Context) error {
		tries++
		a, err := s.publishOnce(ctx, m, sent)
		var apiErr *jetstream.APIError
		if err != nil && tries > 1 && errors.As(err, &apiErr) &&
			(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			last, gerr := jsreq.LastMsg(ctx, s.js, s.cfg.Stream, m.Subject)
			if gerr == nil && last.Header.Get(jetstream.MsgIDHeader) == m.Header.Get(jetstream.MsgIDHeader) {
				ack = &jetstream.PubAck{Stream: s.cfg.Stream, Sequence: last.Sequence, Duplicate: true}
				return nil
			}
		}
		ack = a
		return err
	})
	return ack, err
}

// publishOnce is jetstream's PublishMsg without its own retries (publish's
// jsreq.Do tries again) and with the usual acknowledgement read without
// encoding/json: the same request, the same errors (an API error wrapped
// as PublishMsg wraps it, jetstream.ErrNoStreamResponse for no responders,
// jetstream.ErrInvalidJSAck for an acknowledgement that is none). sent, if
// not nil, is called between the request and the wait for its answer
// (AppendThen).
func (s *Store) publishOnce(ctx context.Context, m *nats.Msg, sent func()) (*jetstream.PubAck, error) {
	p, err := s.replies.Send(m)
	if sent != nil {
		sent()
	}
	var resp *nats.Msg
	if err == nil {
		resp, err = p.Wait(ctx)
	}
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, jetstream.ErrNoStreamResponse
		}
		return nil, err
	}
	return parsePubAck(resp.Data, s.cfg.Stream)
}

// parsePubAck is jsreq.ParsePubAck.
func parsePubAck(data []byte, stream string) (*jetstream.PubAck, error) {
	return jsreq.ParsePubAck(data, stream)
}

// fastPubAck is jsreq.FastPubAck.
func fastPubAck(data []byte, stream string) (*jetstream.PubAck, bool) {
	return jsreq.FastPubAck(data, stream)
}
