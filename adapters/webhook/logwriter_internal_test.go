package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
)

func openLogTest(t *testing.T) (*Manager, jetstream.JetStream, string) {
	t.Helper()
	s := natstest.Start(t, "")
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TOKENLINE", Subjects: []string{"tokenline.conn.*"}}); err != nil {
		t.Fatal(err)
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(recv.Close)
	m, err := Open(ctx, js, Config{SecretsKey: make([]byte, 32), Safety: Safety{AllowHTTP: true, AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := m.Create(ctx, CreateRequest{URL: recv.URL})
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, js, w.ID
}

func attempt(seq uint64) Attempt {
	return Attempt{Time: time.Unix(1_800_000_000, 0).UTC(), EventID: fmt.Sprint("e", seq), EventType: "tokenline.refresh.succeeded",
		Connection: "c", StreamSeq: seq, Attempt: 1, Outcome: "delivered", Status: 204, LatencyMS: 0.5}
}

// logMessages reads the subscription's log messages, each decoded.
func logMessages(t *testing.T, m *Manager, id string) [][]Attempt {
	t.Helper()
	var out [][]Attempt
	if err := m.readSubject(context.Background(), m.logs, LogSubjectPrefix+id, LogKeep, func(msg jetstream.Msg, _ uint64) {
		out = append(out, decodeLog(msg.Data()))
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Every attempt is written, logBatch to a message, a subscription's in
// order and apart from the others'; what is pending is written at Close.
func TestLogBatchesEveryAttempt(t *testing.T) {
	defer func(d time.Duration) { logFlush = d }(logFlush)
	logFlush = time.Hour // only full batches and Close write
	m, _, id := openLogTest(t)
	other := "other"
	for seq := range uint64(2*logBatch + 2) {
		m.log.add(id, attempt(seq+1))
		if seq < 3 {
			m.log.add(other, attempt(seq+1))
		}
	}
	m.Close()
	got := logMessages(t, m, id)
	if len(got) != 3 || len(got[0]) != logBatch || len(got[1]) != logBatch || len(got[2]) != 2 {
		t.Fatalf("log messages of %v attempts, want %d, %d, 2", lens(got), logBatch, logBatch)
	}
	next := uint64(1)
	for _, b := range got {
		for _, a := range b {
			if !sameAttempt(a, attempt(next)) {
				t.Fatalf("attempt %+v, want %+v", a, attempt(next))
			}
			next++
		}
	}
	if o := logMessages(t, m, other); len(o) != 1 || len(o[0]) != 3 {
		t.Fatalf("the other subscription's log: %v", lens(o))
	}
}

func lens(b [][]Attempt) []int {
	var n []int
	for _, x := range b {
		n = append(n, len(x))
	}
	return n
}

// A batch not full is written logFlush after its first attempt; Log
// returns the newest LogKeep attempts, oldest first, across batches and
// across a message written one attempt to a message (before batching).
func TestLogFlushesByTimeAndKeepsTheNewest(t *testing.T) {
	defer func(d time.Duration) { logFlush = d }(logFlush)
	logFlush = 50 * time.Millisecond
	m, js, id := openLogTest(t)
	defer m.Close()
	ctx := context.Background()
	old := attempt(1)
	b, _ := json.Marshal(old)
	if _, err := js.Publish(ctx, LogSubjectPrefix+id, b); err != nil {
		t.Fatal(err)
	}
	m.log.add(id, attempt(2)) // alone: written by time
	var log []Attempt
	for i := 0; i < 500 && len(log) < 2; i++ {
		time.Sleep(10 * time.Millisecond)
		var err error
		if log, err = m.Log(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if len(log) != 2 || !sameAttempt(log[0], attempt(1)) || !sameAttempt(log[1], attempt(2)) {
		t.Fatalf("log %+v", log)
	}
	const n = 3*logBatch + 10
	for seq := range uint64(n) {
		m.log.add(id, attempt(seq+3))
	}
	for i := 0; i < 500 && (len(log) == 0 || log[len(log)-1].StreamSeq != n+2); i++ {
		time.Sleep(10 * time.Millisecond)
		var err error
		if log, err = m.Log(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if len(log) != LogKeep {
		t.Fatalf("log of %d attempts, want %d", len(log), LogKeep)
	}
	for i, a := range log {
		if want := attempt(uint64(n + 2 - LogKeep + 1 + i)); !sameAttempt(a, want) {
			t.Fatalf("log[%d] %+v, want %+v", i, a, want)
		}
	}
}

func sameAttempt(a, b Attempt) bool {
	ta, tb := a.Time, b.Time
	a.Time, b.Time = time.Time{}, time.Time{}
	return ta.Equal(tb) && a.NextRetry == nil && b.NextRetry == nil && a == b
}

// The log writer's encoder writes what json.Marshal writes, byte for byte,
// on attempts as delivery records them and on odd ones.
func TestAppendAttemptsMatchesEncodingJSON(t *testing.T) {
	next := time.Date(2026, 12, 2, 8, 0, 1, 123456789, time.UTC)
	odd := time.Date(2026, 12, 2, 8, 0, 0, 0, time.FixedZone("x", 3600+30))
	year := time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []Attempt{
		attempt(1),
		{Time: time.Now(), EventID: "e", EventType: "tokenline.connection.created", Connection: "c", StreamSeq: 1 << 60, Attempt: 12,
			Outcome: "failed", Status: 503, Error: `HTTP 503 "x" <b> & \ é ` + "\n\x00\u2028", LatencyMS: 1234.567, NextRetry: &next, Instance: "i-1"},
		{Time: time.Now().In(time.FixedZone("y", -5*3600)), Outcome: "delivered", LatencyMS: 0.001},
		{Time: odd, LatencyMS: 1e-7},
		{Time: time.Time{}, LatencyMS: 1e22, NextRetry: &odd},
		{Time: next, LatencyMS: -0.5, EventID: "ü", Connection: "<c>"},
		{Time: next, NextRetry: &year, Error: "timeout"},
	}
	for i, a := range cases {
		want, err := json.Marshal([]Attempt{a})
		if err != nil {
			want = []byte("[null]")
		}
		if got := appendAttempts(nil, []Attempt{a}); string(got) != string(want) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
	want, _ := json.Marshal(cases[:3])
	if got := appendAttempts(nil, cases[:3]); string(got) != string(want) {
		t.Errorf("array:\n got %s\nwant %s", got, want)
	}
}

// The writer's queue and goroutine are made by the first attempt: an
// instance with subscriptions that never delivered (or none) holds
// neither, and Close without one returns at once. Attempts after Close
// are dropped.
func TestLogWriterStartsAtTheFirstAttempt(t *testing.T) {
	m, _, id := openLogTest(t)
	if m.log.ch != nil {
		t.Fatal("the log queue was made before any attempt")
	}
	m.log.add(id, attempt(1))
	if m.log.ch == nil || cap(m.log.ch) != logQueue {
		t.Fatal("the first attempt did not start the writer")
	}
	m.Close()
	m.log.add(id, attempt(2)) // after Close: dropped
	if got := logMessages(t, m, id); len(got) != 1 || len(got[0]) != 1 || !sameAttempt(got[0][0], attempt(1)) {
		t.Fatalf("log messages of %v attempts, want the first only", lens(got))
	}

	idle, _, _ := openLogTest(t)
	idle.Close()
	idle.log.add("x", attempt(1))
	if idle.log.ch != nil {
		t.Fatal("an attempt after Close started the writer")
	}
}
