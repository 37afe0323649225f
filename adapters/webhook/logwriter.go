package webhook

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The delivery log is for people: what was tried, what the receiver
// answered, when the next retry is. Every attempt is recorded, and writing
// the log must not slow delivery down nor hold it up, so:
//
//   - record never blocks: attempts go through a bounded queue
//     (logQueue) to one writer goroutine; when the queue is full an
//     attempt is dropped and counted
//     (tokenline_webhook_log_skipped_total{reason="full"});
//   - the writer batches: one log message holds up to logBatch attempts of
//     one subscription (a JSON array, oldest first), published as soon as
//     it is full or logFlush after its first attempt, whichever comes
//     first, asynchronously. At thousands of deliveries a second a stored
//     message per attempt cost about a sixth of a delivery's CPU
//     (BenchmarkDeliveryVsRawConsumer); a batch costs one message per
//     logBatch attempts. The attempts waiting in batches are bounded too
//     (logQueue in all; beyond it every batch is published at once).
//
// The log stream keeps LogKeep messages per subscription; Manager.Log
// returns the newest LogKeep attempts of them.
const (
	logQueue = 4096
	logBatch = 64
)

// logFlush is how long a batch waits for more attempts (a variable for the
// tests).
var logFlush = 200 * time.Millisecond

type logLine struct {
	webhook string
	a       Attempt
}

type logWriter struct {
	m    *Manager
	ch   chan logLine
	done chan struct{}
	// cmu guards closed: add after stop (a replay outliving Close) drops.
	cmu    sync.RWMutex
	closed bool
}

func newLogWriter(m *Manager) *logWriter {
	w := &logWriter{m: m, ch: make(chan logLine, logQueue), done: make(chan struct{})}
	go w.run()
	return w
}

// add queues an attempt; it never blocks.
func (w *logWriter) add(webhook string, a Attempt) {
	w.cmu.RLock()
	defer w.cmu.RUnlock()
	if w.closed {
		return
	}
	select {
	case w.ch <- logLine{webhook, a}:
	default:
		w.m.cfg.Metrics.logSkipped("full")
	}
}

func (w *logWriter) run() {
	defer close(w.done)
	batches := map[string][]Attempt{}
	held := 0
	timer := time.NewTimer(logFlush)
	timer.Stop()
	armed := false
	flush := func(webhook string) {
		b := batches[webhook]
		delete(batches, webhook)
		held -= len(b)
		w.publish(webhook, b)
	}
	flushAll := func() {
		for id := range batches {
			flush(id)
		}
		if armed {
			timer.Stop()
			armed = false
		}
	}
	for {
		select {
		case l, ok := <-w.ch:
			if !ok {
				flushAll()
				return
			}
			b := append(batches[l.webhook], l.a)
			batches[l.webhook] = b
			held++
			switch {
			case len(b) >= logBatch:
				flush(l.webhook)
			case held >= logQueue:
				flushAll()
			case !armed:
				timer.Reset(logFlush)
				armed = true
			}
		case <-timer.C:
			armed = false
			flushAll()
		}
	}
}

// publish writes one log message: the attempts as a JSON array.
func (w *logWriter) publish(webhook string, b []Attempt) {
	if len(b) == 0 {
		return
	}
	data, err := json.Marshal(b)
	if err != nil {
		w.m.cfg.Metrics.logSkippedN("error", len(b))
		return
	}
	if _, err := w.m.js.PublishMsgAsync(&nats.Msg{Subject: LogSubjectPrefix + webhook, Data: data}); err != nil {
		w.m.cfg.Metrics.logSkippedN("error", len(b))
		w.m.cfg.Logger.Debug("webhook: delivery log", "error", err.Error())
	}
}

// decodeLog reads a log message: a JSON array of attempts, or (written
// before the log was batched) a single attempt.
func decodeLog(data []byte) []Attempt {
	if i := ws(data, 0); i < len(data) && data[i] == '[' {
		var b []Attempt
		if json.Unmarshal(data, &b) != nil {
			return nil
		}
		return b
	}
	var a Attempt
	if json.Unmarshal(data, &a) != nil {
		return nil
	}
	return []Attempt{a}
}

// stop writes what is queued (the deliverers have stopped) and waits, at
// most 2 s, for the server to store it.
func (w *logWriter) stop() {
	w.cmu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.cmu.Unlock()
	<-w.done
	select {
	case <-w.m.js.PublishAsyncComplete():
	case <-time.After(2 * time.Second):
	}
}
