package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
)

// Workers start with the first connections, never exceed Concurrency, end
// when idle, and start again for later events, which all arrive.
func TestWorkersStartOnDemandAndEndWhenIdle(t *testing.T) {
	defer func(d time.Duration) { workerIdle = d }(workerIdle)
	workerIdle = 50 * time.Millisecond
	s := natstest.Start(t, "")
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TOKENLINE", Subjects: []string{"tokenline.conn.*"}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")] = true
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	m, err := Open(ctx, js, Config{SecretsKey: make([]byte, 32), Safety: Safety{AllowHTTP: true, AllowPrivate: true}, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w, _, err := m.Create(ctx, CreateRequest{URL: recv.URL})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	d := m.workers[w.ID]
	m.mu.Unlock()
	last := map[string]uint64{}
	publish := func(round int) {
		for c := range 8 {
			conn := fmt.Sprintf("00000000-0000-4000-8000-00000000000%d", c)
			body := fmt.Appendf(nil, `{"id":%q,"type":"tokenline.refresh.succeeded","data":{"n":%d}}`, uuid.NewString(), round)
			ack, err := js.Publish(ctx, "tokenline.conn."+conn, body, jetstream.WithExpectLastSequencePerSubject(last[conn]))
			if err != nil {
				t.Fatal(err)
			}
			last[conn] = ack.Sequence
		}
	}
	waitFor := func(what string, f func() bool) {
		t.Helper()
		for i := 0; i < 1000 && !f(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if !f() {
			t.Fatalf("never: %s", what)
		}
	}
	delivered := func(n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n }
	}
	publish(0)
	waitFor("8 events delivered", delivered(8))
	if n := d.workers.Load(); n < 1 || n > 4 {
		t.Fatalf("%d workers after a burst, want 1 to 4", n)
	}
	waitFor("the workers ended when idle", func() bool { return d.workers.Load() == 0 && d.idle.Load() == 0 })
	publish(1)
	waitFor("16 events delivered", delivered(16))
}

// A deliverer forgets the acknowledgements below the consumer's floor once
// it remembers more than ackedSoft, without waiting for the heartbeat
// (AckWait/3, here 20 s).
func TestAcknowledgementsRememberedStayBounded(t *testing.T) {
	defer func(n int, d time.Duration) { ackedSoft, ackedEvery = n, d }(ackedSoft, ackedEvery)
	ackedSoft, ackedEvery = 50, 50*time.Millisecond
	s := natstest.Start(t, "")
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TOKENLINE", Subjects: []string{"tokenline.conn.*"}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")] = true
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	m, err := Open(ctx, js, Config{SecretsKey: make([]byte, 32), Safety: Safety{AllowHTTP: true, AllowPrivate: true}, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w, _, err := m.Create(ctx, CreateRequest{URL: recv.URL})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	d := m.workers[w.ID]
	m.mu.Unlock()
	const n = 400
	last := map[string]uint64{}
	for i := range n {
		conn := fmt.Sprintf("00000000-0000-4000-8000-0000000000%02d", i%20)
		ack, err := js.Publish(ctx, "tokenline.conn."+conn, fmt.Appendf(nil, `{"id":%q,"type":"tokenline.refresh.succeeded"}`, uuid.NewString()),
			jetstream.WithExpectLastSequencePerSubject(last[conn]))
		if err != nil {
			t.Fatal(err)
		}
		last[conn] = ack.Sequence
	}
	remembered := func() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.acked) }
	for i := 0; i < 1000; i++ {
		mu.Lock()
		all := len(seen) == n
		mu.Unlock()
		if all && remembered() <= ackedSoft {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("%d of %d delivered, %d acknowledgements remembered (want at most %d)", len(seen), n, remembered(), ackedSoft)
}
