package webhook

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The delivery log is for people: what was tried, what the receiver
// answered, when the next retry is. Writing it must not slow delivery down
// nor hold it up, so:
//
//   - record never blocks: attempts go through a bounded queue
//     (logQueue) to one writer goroutine, which publishes them
//     asynchronously; when the queue is full an attempt is dropped and
//     counted (tokenline_webhook_log_skipped_total{reason="full"});
//   - successful deliveries are logged at most logSuccessRate a second
//     per subscription (a token bucket, burst as large); the others are
//     counted (reason "sampled") and, like every attempt, counted in
//     tokenline_webhook_deliveries_total. Failed attempts, dead letters,
//     410s and replays are always logged (subject to the queue). The log
//     keeps the last LogKeep attempts anyway: at thousands of deliveries a
//     second, logging each success costs a stored JetStream message per
//     delivery (about a sixth of a delivery's CPU, measured by
//     BenchmarkDeliveryVsRawConsumer) for lines overwritten within a
//     fraction of a second.
const (
	logQueue       = 4096
	logSuccessRate = 50
)

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

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLogWriter(m *Manager) *logWriter {
	w := &logWriter{m: m, ch: make(chan logLine, logQueue), done: make(chan struct{}), buckets: map[string]*bucket{}}
	go w.run()
	return w
}

// admit reports whether a success of webhook may be logged now.
func (w *logWriter) admit(webhook string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buckets[webhook]
	if b == nil {
		if len(w.buckets) > 10000 {
			clear(w.buckets)
		}
		b = &bucket{tokens: logSuccessRate, at: now}
		w.buckets[webhook] = b
	}
	b.tokens = min(logSuccessRate, b.tokens+now.Sub(b.at).Seconds()*logSuccessRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// add queues a line; it never blocks.
func (w *logWriter) add(webhook string, a Attempt) {
	if a.Outcome == "delivered" && !w.admit(webhook, time.Now()) {
		w.m.cfg.Metrics.logSkipped("sampled")
		return
	}
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
	for l := range w.ch {
		b, err := json.Marshal(l.a)
		if err != nil {
			continue
		}
		if _, err := w.m.js.PublishMsgAsync(&nats.Msg{Subject: LogSubjectPrefix + l.webhook, Data: b}); err != nil {
			w.m.cfg.Metrics.logSkipped("error")
			w.m.cfg.Logger.Debug("webhook: delivery log", "error", err.Error())
		}
	}
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
