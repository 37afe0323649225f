package jsstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/events"
)

// The read behind `tokenline verify`: every message of the stream up to a
// sequence, in order, as the link check takes it (events.LinkRecord). It is
// Read's pipeline with the decode replaced by events.ParseLink, which hashes
// the message and reads only its link, type and terminal flag; a message
// ParseLink does not read (not in the canonical form, not an event) is
// decoded in full, as Read would. Reading and parsing overlap: one
// goroutine takes messages off the consumer, ReadWorkers parse chunks of
// them, and fn is called from the calling goroutine in stream order.

type linkChunk struct {
	msgs []jetstream.Msg
	recs []events.LinkRecord
	done chan struct{}
}

const linkChunkSize = 512

var linkChunkPool = sync.Pool{New: func() any {
	return &linkChunk{msgs: make([]jetstream.Msg, 0, linkChunkSize), recs: make([]events.LinkRecord, 0, linkChunkSize)}
}}

// readLinks calls fn for every message with a stream sequence in [1, to]
// (to > 0: a sequence the stream has), in order, and returns the last
// sequence it delivered. fn must not keep the record. The consumer's
// messages are taken in its callback (Consume), which gathers them into
// chunks for the workers: no goroutine in between.
func (s *Store) readLinks(ctx context.Context, to uint64, fn func(*events.LinkRecord)) (uint64, error) {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, fmt.Errorf("jsstore: read consumer: %w", err)
	}
	defer s.dropConsumer(cons)

	workers := max(ReadWorkers, 1)
	work := make(chan *linkChunk, 4*workers)
	order := make(chan *linkChunk, 8*workers)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			var dec events.Decoder
			for c := range work {
				for i := range c.recs {
					parseLink(&c.recs[i], c.msgs[i], &dec)
				}
				close(c.done)
			}
		}()
	}
	newChunk := func() *linkChunk {
		c := linkChunkPool.Get().(*linkChunk)
		c.msgs, c.recs, c.done = c.msgs[:0], c.recs[:0], make(chan struct{})
		return c
	}
	var mu sync.Mutex // the callback's state, and stopped
	stopped := false
	c := newChunk()
	send := func() bool {
		select {
		case order <- c:
		case <-quit:
			return false
		}
		select {
		case work <- c:
		case <-quit:
			return false
		}
		c = newChunk()
		return true
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		// The record is written in place: the chunk's records are zero
		// (new, or cleared before the chunk went back to the pool).
		c.recs = c.recs[:len(c.recs)+1]
		rec := &c.recs[len(c.recs)-1]
		rec.Record.Subject = m.Subject()
		if seq, ts, ok := ackInfo(m.Reply()); ok {
			rec.Record.Seq, rec.Record.Stored = seq, time.Unix(0, ts)
		} else if md, err := m.Metadata(); err == nil {
			rec.Record.Seq, rec.Record.Stored = md.Sequence.Stream, md.Timestamp
		} else {
			rec.Record.Err = fmt.Errorf("jsstore: message metadata: %w", err)
			m = nil
		}
		seq := rec.Record.Seq
		rec.Seq = seq
		c.msgs = append(c.msgs, m)
		if seq >= to || len(c.msgs) == linkChunkSize {
			if !send() || seq >= to { // the chunk is the workers' now: rec too
				stopped = true
			}
		}
	}, jetstream.PullMaxMessages(8192))
	if err != nil {
		close(work)
		wg.Wait()
		return 0, fmt.Errorf("jsstore: read: %w", err)
	}
	defer func() {
		close(quit)
		cc.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
		close(work)
		wg.Wait()
	}()

	var last uint64
	for last < to {
		var c *linkChunk
		select {
		case c = <-order:
		case <-ctx.Done():
			return last, ctx.Err()
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return last, ctx.Err()
		}
		for i := range c.recs {
			if c.recs[i].Seq > to {
				break
			}
			fn(&c.recs[i])
			last = c.recs[i].Seq
		}
		clear(c.msgs)
		clear(c.recs)
		linkChunkPool.Put(c)
	}
	return last, nil
}

// parseLink completes a record (Seq, and Record's Seq, Subject and Stored
// set): the message's link, or its whole decode.
func parseLink(r *events.LinkRecord, m jetstream.Msg, dec *events.Decoder) {
	if m == nil || r.Record.Err != nil {
		return
	}
	data := m.Data()
	if events.ParseLink(data, &r.Info) && subjectIsBytes(r.Record.Subject, r.Info.Subject) {
		r.Light = true
		return
	}
	decodeData(&r.Record, data, dec)
}

// subjectIsBytes is subjectIs for an id in the message bytes, without
// converting them to a string (a conversion to pass it would allocate).
func subjectIsBytes(subject string, connectionID []byte) bool {
	return len(subject) == len(events.SubjectPrefix)+len(connectionID) &&
		strings.HasPrefix(subject, events.SubjectPrefix) && subject[len(events.SubjectPrefix):] == string(connectionID)
}
