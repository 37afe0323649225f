package webhook

import (
	"encoding/json"
	"strconv"
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
//
// The queue (logQueue attempts of some 180 bytes: 0.75 MB) and its
// goroutine are made by the first attempt recorded: an instance without a
// subscription never holds them.
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
	m *Manager
	// once makes ch and done and starts run, at the first add (under cmu
	// read-locked, so that stop, which write-locks it, sees them).
	once sync.Once
	ch   chan logLine
	done chan struct{}
	// cmu guards closed: add after stop (a replay outliving Close) drops.
	cmu    sync.RWMutex
	closed bool
}

func newLogWriter(m *Manager) *logWriter { return &logWriter{m: m} }

func (w *logWriter) start() {
	w.ch, w.done = make(chan logLine, logQueue), make(chan struct{})
	go w.run()
}

// add queues an attempt; it never blocks.
func (w *logWriter) add(webhook string, a Attempt) {
	w.cmu.RLock()
	defer w.cmu.RUnlock()
	if w.closed {
		return
	}
	w.once.Do(w.start)
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
	// spare: batches written, kept for reuse (their attempts are encoded).
	var spare [][]Attempt
	flush := func(webhook string) {
		b := batches[webhook]
		delete(batches, webhook)
		held -= len(b)
		w.publish(webhook, b)
		if len(spare) < 16 {
			clear(b)
			spare = append(spare, b[:0])
		}
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
			b, ok := batches[l.webhook]
			if !ok {
				if n := len(spare); n > 0 {
					b, spare = spare[n-1], spare[:n-1]
				} else {
					b = make([]Attempt, 0, logBatch)
				}
			}
			b = append(b, l.a)
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
	data := appendAttempts(make([]byte, 0, 384*len(b)), b)
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
	started := w.ch != nil
	if !w.closed {
		w.closed = true
		if started {
			close(w.ch)
		}
	}
	w.cmu.Unlock()
	if !started {
		return // nothing was recorded
	}
	<-w.done
	select {
	case <-w.m.js.PublishAsyncComplete():
	case <-time.After(2 * time.Second):
	}
}

// appendAttempts appends b as a JSON array, byte for byte as
// json.Marshal writes it (TestAppendAttemptsMatchesEncodingJSON): the log
// writer encodes every attempt, and encoding/json's reflection was most of
// its CPU.
func appendAttempts(out []byte, b []Attempt) []byte {
	out = append(out, '[')
	for i, a := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendAttempt(out, a)
	}
	return append(out, ']')
}

func appendAttempt(out []byte, a Attempt) []byte {
	if !plainTime(a.Time) || (a.NextRetry != nil && !plainTime(*a.NextRetry)) ||
		a.LatencyMS != a.LatencyMS || (a.LatencyMS != 0 && (abs(a.LatencyMS) < 1e-6 || abs(a.LatencyMS) >= 1e21)) {
		j, err := json.Marshal(a)
		if err != nil {
			return append(out, "null"...)
		}
		return append(out, j...)
	}
	out = append(out, `{"time":"`...)
	out = append(a.Time.AppendFormat(out, time.RFC3339Nano), `","event_id":`...)
	out = appendJSONString(out, a.EventID)
	out = appendJSONString(append(out, `,"event_type":`...), a.EventType)
	out = appendJSONString(append(out, `,"connection":`...), a.Connection)
	out = strconv.AppendUint(append(out, `,"stream_seq":`...), a.StreamSeq, 10)
	out = strconv.AppendInt(append(out, `,"attempt":`...), int64(a.Attempt), 10)
	out = appendJSONString(append(out, `,"outcome":`...), a.Outcome)
	if a.Status != 0 {
		out = strconv.AppendInt(append(out, `,"status":`...), int64(a.Status), 10)
	}
	if a.Error != "" {
		out = appendJSONString(append(out, `,"error":`...), a.Error)
	}
	out = strconv.AppendFloat(append(out, `,"latency_ms":`...), a.LatencyMS, 'f', -1, 64)
	if a.NextRetry != nil {
		out = append(a.NextRetry.AppendFormat(append(out, `,"next_retry":"`...), time.RFC3339Nano), '"')
	}
	if a.Instance != "" {
		out = appendJSONString(append(out, `,"instance":`...), a.Instance)
	}
	return append(out, '}')
}

// plainTime: a time encoding/json writes as RFC 3339 with nanoseconds (a
// year of four digits, a zone offset in whole minutes).
func plainTime(t time.Time) bool {
	_, off := t.Zone()
	return t.Year() >= 0 && t.Year() <= 9999 && off%60 == 0
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// appendJSONString appends s quoted as encoding/json does: printable ASCII
// other than the characters it escapes as is, anything else through
// encoding/json.
func appendJSONString(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s)
			return append(out, j...)
		}
	}
	return append(append(append(out, '"'), s...), '"')
}
