package jsstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/events"
)

// The pipeline behind Read and readLinks: an ordered consumer's messages,
// parsed on ReadWorkers goroutines and delivered in stream order. The
// consumer's callback (Consume) gathers the messages into chunks and hands
// each chunk to the workers and, in the same order, to the delivering loop
// on the calling goroutine, which waits for each chunk to be parsed. There
// is no goroutine between the consumer and the workers, and no timer per
// message (Messages' Next arms one).

// pipeChunk is a run of messages travelling together through a pipeline,
// with the records the workers complete from them.
type pipeChunk[R any] struct {
	msgs []jetstream.Msg
	recs []R
	done chan struct{} // closed when the workers have parsed every message
}

// pipe is what a pipeline makes of a message. R is the record a read
// delivers; every R holds an events.Record, whose Seq, Stored and Subject
// the pipeline sets from the message before a worker parses it.
type pipe[R any] struct {
	size   int       // messages per chunk
	pool   sync.Pool // of *pipeChunk[R], cleared before they go back
	record func(*R) *events.Record
	// parse completes a record on a worker; m is nil when the message's
	// metadata could not be read (the record's Err says why).
	parse func(r *R, m jetstream.Msg, dec *events.Decoder)
}

func newPipe[R any](size int, record func(*R) *events.Record, parse func(*R, jetstream.Msg, *events.Decoder)) *pipe[R] {
	p := &pipe[R]{size: size, record: record, parse: parse}
	p.pool.New = func() any {
		return &pipeChunk[R]{msgs: make([]jetstream.Msg, 0, size), recs: make([]R, 0, size)}
	}
	return p
}

func (p *pipe[R]) get() *pipeChunk[R] {
	c := p.pool.Get().(*pipeChunk[R])
	c.msgs, c.recs, c.done = c.msgs[:0], c.recs[:0], make(chan struct{})
	return c
}

// run consumes cons up to stream sequence to (a sequence the stream has,
// or the consumer would wait for it) and calls fn for every record, in
// order, from the calling goroutine. fn must not keep the pointer; an error
// from it stops the run with that error. It returns the last sequence it
// delivered (0 if none). The caller deletes the consumer.
func (p *pipe[R]) run(ctx context.Context, cons jetstream.Consumer, to uint64, fn func(*R) error) (uint64, error) {
	workers := max(ReadWorkers, 1)
	work := make(chan *pipeChunk[R], 4*workers)
	order := make(chan *pipeChunk[R], 8*workers)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			var dec events.Decoder
			for c := range work {
				for i := range c.recs {
					p.parse(&c.recs[i], c.msgs[i], &dec)
					c.msgs[i] = nil
				}
				close(c.done)
			}
		}()
	}
	var mu sync.Mutex // the callback's state, and stopped
	stopped := false
	c := p.get()
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
		c = p.get()
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
		rec := p.record(&c.recs[len(c.recs)-1])
		rec.Subject = m.Subject()
		if seq, ts, ok := ackInfo(m.Reply()); ok {
			rec.Seq, rec.Stored = seq, time.Unix(0, ts)
		} else if md, err := m.Metadata(); err == nil {
			rec.Seq, rec.Stored = md.Sequence.Stream, md.Timestamp
		} else {
			rec.Err = fmt.Errorf("jsstore: message metadata: %w", err)
			m = nil
		}
		seq := rec.Seq
		c.msgs = append(c.msgs, m)
		if seq >= to || len(c.msgs) == p.size {
			if !send() || seq >= to { // the chunk is the workers' now: rec too
				stopped = true
			}
		}
	}, jetstream.PullMaxMessages(readPull))
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
		var c *pipeChunk[R]
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
		var fnErr error
		for i := range c.recs {
			rec := &c.recs[i]
			seq := p.record(rec).Seq
			if seq > to {
				break
			}
			if fnErr = fn(rec); fnErr != nil {
				break
			}
			last = seq
		}
		clear(c.msgs)
		clear(c.recs)
		p.pool.Put(c)
		if fnErr != nil {
			return last, fnErr
		}
	}
	return last, nil
}
