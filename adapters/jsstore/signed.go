package jsstore

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// Signed checkpoints (events/checkpoint.go) live in a sibling stream,
// <stream>_CHECKPOINTS, on the one subject events.CheckpointSubject: not
// in the event stream, so that every reader of tokenline.conn.* sees only
// events, and so that cutting the event stream's tail leaves the
// checkpoints that cover it. Writers chain their checkpoints with
// per-subject optimistic concurrency, so instances that share the signing
// key take turns and the checkpoints stay one chain.

// CheckpointStreamConfig returns the checkpoint stream's configuration:
// as immutable as the event stream.
func CheckpointStreamConfig(cfg Config) jetstream.StreamConfig {
	cfg = withDefaults(cfg)
	return jetstream.StreamConfig{
		Name:              cfg.Stream + "_CHECKPOINTS",
		Description:       "tokenline signed checkpoints of the event stream's hash chains",
		Subjects:          []string{events.CheckpointSubject},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardNew,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		Replicas:          cfg.Replicas,
		DenyDelete:        true,
		DenyPurge:         true,
		AllowDirect:       true,
	}
}

// MaxCheckpointHeads bounds the heads one checkpoint lists (a message stays
// well under NATS's 1 MiB default payload); more make several checkpoints.
var MaxCheckpointHeads = 4000

// WriteCheckpoint signs and publishes checkpoints of the heads of every
// connection with events since the last checkpoint, if there are any. It
// returns how many it wrote: 0 when nothing moved or when another instance
// wrote the next checkpoint first. The last checkpoint must verify with
// key: a chain signed by another key (or forged) is not continued.
func (s *Store) WriteCheckpoint(ctx context.Context, key ed25519.PrivateKey, now time.Time) (int, error) {
	if s.checkpoints == nil {
		return 0, errors.New("jsstore: no checkpoint stream")
	}
	var (
		prev     events.Checkpoint
		prevHash [32]byte
		lastSeq  uint64
	)
	m, err := s.checkpoints.GetLastMsgForSubject(ctx, events.CheckpointSubject)
	switch {
	case err == nil:
		prev, prevHash, _, err = events.OpenCheckpoint(m.Data, key.Public().(ed25519.PublicKey))
		if err != nil {
			return 0, fmt.Errorf("jsstore: the last checkpoint (seq %d) does not verify with this instance's signing key, not continuing its chain: %w", m.Sequence, err)
		}
		lastSeq = m.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, fmt.Errorf("jsstore: last checkpoint: %w", err)
	}
	upto, err := s.LastSeq(ctx)
	if err != nil || upto <= prev.UpTo {
		return 0, err
	}
	ids, err := s.touched(ctx, prev.UpTo+1, upto)
	if err != nil {
		return 0, err
	}
	var heads []events.CheckpointHead
	for _, id := range ids {
		if !domain.ValidConnectionID(id) {
			continue
		}
		c, err := s.Load(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if c.Head.Seq > 0 {
			heads = append(heads, events.CheckpointHead{Connection: id, Seq: c.Head.Seq, Head: events.FormatHash(c.Head.Hash)})
		}
	}
	n := 0
	for first := true; first || len(heads) > 0; first = false {
		part := heads[:min(len(heads), MaxCheckpointHeads)]
		heads = heads[len(part):]
		if part == nil {
			part = []events.CheckpointHead{}
		}
		cp := events.Checkpoint{Number: prev.Number + 1, Prev: events.FormatHash(prevHash), Stream: s.cfg.Stream, UpTo: upto, Time: now.UTC(), Heads: part}
		body, h, err := events.SignCheckpoint(cp, key)
		if err != nil {
			return n, err
		}
		msg := &nats.Msg{Subject: events.CheckpointSubject, Data: body, Header: nats.Header{}}
		msg.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(lastSeq, 10)}
		ack, err := s.js.PublishMsg(ctx, msg)
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				return n, nil // another instance checkpointed first
			}
			return n, fmt.Errorf("jsstore: publish checkpoint: %w", err)
		}
		n++
		prev, prevHash, lastSeq = cp, h, ack.Sequence
	}
	return n, nil
}

// touched returns, sorted, the connection ids of the subjects of the event
// stream's messages at sequences from to upto. It asks for the messages'
// headers only (HeadersOnly): the subject is all it needs, so the events'
// bodies neither travel nor are decoded. (With Read, every checkpoint
// decoded the whole interval's events: at 10,000 connections with 30 s
// tokens some 37,000 every 30 s, most of a checkpoint's CPU and garbage.)
func (s *Store) touched(ctx context.Context, from, upto uint64) ([]string, error) {
	if from > upto {
		return nil, nil
	}
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, HeadersOnly: true,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: checkpoint scan consumer: %w", err)
	}
	defer s.dropConsumer(cons)
	var (
		mu       sync.Mutex
		finished bool
		seen     = map[string]struct{}{}
		done     = make(chan error, 1)
	)
	finish := func(err error) { // mu held
		if !finished {
			finished = true
			done <- err
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		seq, _, ok := ackInfo(m.Reply())
		if !ok {
			md, err := m.Metadata()
			if err != nil {
				finish(fmt.Errorf("jsstore: checkpoint scan: message metadata: %w", err))
				return
			}
			seq = md.Sequence.Stream
		}
		if seq > upto {
			finish(nil)
			return
		}
		if subj := m.Subject(); len(subj) > len(events.SubjectPrefix) {
			if id := subj[len(events.SubjectPrefix):]; !has(seen, id) {
				seen[strings.Clone(id)] = struct{}{}
			}
		}
		if seq == upto {
			finish(nil)
		}
	}, jetstream.PullMaxMessages(readPull))
	if err != nil {
		return nil, fmt.Errorf("jsstore: checkpoint scan: %w", err)
	}
	defer cc.Stop()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

func has(m map[string]struct{}, k string) bool { _, ok := m[k]; return ok }

// RunCheckpoints writes checkpoints every interval until ctx ends; errors
// are logged and retried at the next tick.
func (s *Store) RunCheckpoints(ctx context.Context, key ed25519.PrivateKey, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if _, err := s.WriteCheckpoint(ctx, key, now); err != nil && ctx.Err() == nil {
				s.log.Error("checkpoint not written", "error", err.Error())
			}
		}
	}
}
