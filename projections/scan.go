package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// scanOptions narrows a scan of the stream.
type scanOptions struct {
	// From is the first sequence (0, 1: the beginning); To the last (0: the
	// stream's last sequence when the scan starts).
	From, To uint64
	// ConnectionID limits the scan to one connection's subject.
	ConnectionID string
	// StartTime, if set, starts at the first message stored at or after it
	// (instead of From).
	StartTime time.Time
	// Workers decode in parallel (default GOMAXPROCS).
	Workers int
}

var scanWorkers = runtime.GOMAXPROCS(0)

// scanChunk is how many messages travel together through the pipeline.
const scanChunk = 256

type chunk struct {
	msgs []jetstream.Msg
	recs []jsstore.Record
	done chan struct{}
}

var chunkPool = sync.Pool{New: func() any {
	return &chunk{msgs: make([]jetstream.Msg, 0, scanChunk), recs: make([]jsstore.Record, 0, scanChunk)}
}}

func getChunk() *chunk {
	c := chunkPool.Get().(*chunk)
	c.msgs, c.recs, c.done = c.msgs[:0], c.recs[:0], make(chan struct{})
	return c
}

// scan reads the stream in order with an ordered consumer (as jsstore's
// Replay does: no side effect on the stream) and calls fn for every record,
// in stream order, from the calling goroutine. Decoding, the expensive part,
// runs on worker goroutines between the reading goroutine and fn: the reader
// hands chunks of messages to the workers and, in the same order, to fn's
// loop, which waits for each chunk to be decoded. fn must not keep the
// pointer it is given. fn returning an error stops the scan with it.
//
// It returns the last sequence it delivered (0 if none).
func scan(ctx context.Context, st *jsstore.Store, o scanOptions, fn func(*jsstore.Record) error) (uint64, error) {
	to := o.To
	if to == 0 {
		last, err := st.LastSeq(ctx)
		if err != nil {
			return 0, err
		}
		to = last
	}
	from := max(o.From, 1)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	if !o.StartTime.IsZero() {
		t := o.StartTime
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t}
	}
	if o.ConnectionID != "" {
		if !domain.ValidConnectionID(o.ConnectionID) {
			return 0, fmt.Errorf("projections: invalid connection id %q", o.ConnectionID)
		}
		subj := events.Subject(o.ConnectionID)
		cfg.FilterSubjects = []string{subj}
		last, err := st.Stream().GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		} else if err != nil {
			return 0, fmt.Errorf("projections: scan: %w", err)
		}
		to = min(to, last.Sequence)
	}
	if from > to {
		return 0, nil
	}
	if !o.StartTime.IsZero() {
		// Nothing stored at or after StartTime: the consumer would wait.
		last, err := st.Stream().GetMsg(ctx, to)
		if err == nil && last.Time.Before(o.StartTime) {
			return 0, nil
		}
	}
	cons, err := st.Stream().OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("projections: scan consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(5000))
	if err != nil {
		return 0, fmt.Errorf("projections: scan: %w", err)
	}
	defer it.Stop()
	stopIt := context.AfterFunc(ctx, it.Stop)
	defer stopIt()

	workers := o.Workers
	if workers <= 0 {
		workers = scanWorkers
	}
	work := make(chan *chunk, 4*workers)
	order := make(chan *chunk, 4*workers)
	quit := make(chan struct{})
	var readErr error
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			in := newInterner()
			for c := range work {
				for i := range c.msgs {
					decodeInto(&c.recs[i], c.msgs[i], in)
					c.msgs[i] = nil
				}
				close(c.done)
			}
		}()
	}
	go func() { // reader
		defer close(order)
		defer close(work)
		c := getChunk()
		send := func() bool {
			select {
			case order <- c:
			case <-quit:
				return false
			}
			work <- c
			c = getChunk()
			return true
		}
		for {
			m, err := it.Next()
			if err != nil {
				readErr = err
				if len(c.msgs) > 0 {
					send()
				}
				return
			}
			r := jsstore.Record{Subject: m.Subject()}
			if seq, ts, ok := ackInfo(m.Reply()); ok {
				r.Seq, r.Stored = seq, time.Unix(0, ts)
			} else if md, err := m.Metadata(); err == nil {
				r.Seq, r.Stored = md.Sequence.Stream, md.Timestamp
			} else {
				r.Err = fmt.Errorf("projections: message metadata: %w", err)
				m = nil
			}
			c.msgs = append(c.msgs, m)
			c.recs = append(c.recs, r)
			if r.Seq >= to || len(c.msgs) == scanChunk {
				if !send() || r.Seq >= to {
					return
				}
			}
		}
	}()

	var last uint64
	var fnErr error
	finish := func() {
		close(quit)
		it.Stop()
		for c := range order { // let the reader and workers finish
			<-c.done
		}
		wg.Wait()
	}
	for c := range order {
		<-c.done
		for i := range c.recs {
			r := &c.recs[i]
			if r.Seq > to {
				break
			}
			if fnErr = fn(r); fnErr != nil {
				break
			}
			last = r.Seq
		}
		done := last >= to || fnErr != nil
		clear(c.recs)
		chunkPool.Put(c)
		if done {
			finish()
			return last, fnErr
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return last, ctx.Err()
	}
	if last < to && readErr != nil {
		return last, fmt.Errorf("projections: scan: %w", readErr)
	}
	return last, nil
}

// decodeInto completes a record (Seq, Stored and Subject set) with the
// decoded event, as jsstore does for Replay and Subscribe.
func decodeInto(r *jsstore.Record, m jetstream.Msg, in *interner) {
	if m == nil || r.Err != nil {
		return
	}
	e, err := decodeEventWith(m.Data(), in)
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

// connectionOfSubject returns the connection id of a message subject.
func connectionOfSubject(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, events.SubjectPrefix)
	return id, ok && domain.ValidConnectionID(id)
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
