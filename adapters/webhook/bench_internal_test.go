package webhook

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
)

// BenchmarkDeliveryVsRawConsumer delivers the same stored events (200
// connections x 25 events) by webhook to a local receiver and reads them
// with a raw durable JetStream consumer (explicit acks), alternating, and
// prints both rates and their ratio. The webhook side runs the production
// configuration: signing, the pinned consumer, per-connection order, the
// delivery log. The receiver counts distinct webhook-ids and does not
// verify (its CPU would be charged to tokenline on the same cores).
//
//	go test -run '^$' -bench DeliveryVsRaw -benchtime 3x ./adapters/webhook/
func BenchmarkDeliveryVsRawConsumer(b *testing.B) {
	const conns, perConn = 200, 25
	const n = conns * perConn
	s := natstest.Start(b, "")
	nc := s.Connect(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TOKENLINE", Subjects: []string{"tokenline.conn.*"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	last := map[string]uint64{}
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	for j := range perConn {
		for _, c := range ids {
			body := fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/tokenline","type":"tokenline.refresh.succeeded","subject":%q,"time":"2026-12-02T00:00:00Z","datacontenttype":"application/json","schemaversion":1,"data":{"n":%d,"access_token_fp":"sha256:0123456789ab","access_token_expires_at":"2026-12-02T01:00:00Z","scopes":["users:read"]}}`, uuid.NewString(), c, j)
			ack, err := js.Publish(ctx, "tokenline.conn."+c, body, jetstream.WithExpectLastSequencePerSubject(last[c]))
			if err != nil {
				b.Fatal(err)
			}
			last[c] = ack.Sequence
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		got  atomic.Int64
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get("webhook-id")
		mu.Lock()
		if !seen[id] {
			seen[id] = true
			got.Add(1)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	m, err := Open(ctx, js, Config{SecretsKey: make([]byte, 32), Safety: Safety{AllowHTTP: true, AllowPrivate: true}, Instance: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()

	var hookTime, rawTime time.Duration
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		// Webhooks: a new subscription from the stream's start.
		mu.Lock()
		clear(seen)
		mu.Unlock()
		got.Store(0)
		t0 := time.Now()
		w, _, err := m.create(ctx, CreateRequest{URL: recv.URL}, 1)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; got.Load() < n; i++ {
			if i > 12000 {
				b.Fatalf("webhooks: %d of %d after 60 s", got.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		hookTime += time.Since(t0)
		if _, err := m.Delete(ctx, w.ID, ""); err != nil {
			b.Fatal(err)
		}

		// Raw: a new durable consumer reading the same events.
		t0 = time.Now()
		name := fmt.Sprintf("raw%d", round)
		cons, err := js.CreateOrUpdateConsumer(ctx, "TOKENLINE", jetstream.ConsumerConfig{Durable: name, FilterSubject: "tokenline.conn.*",
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(256))
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			msg, err := it.Next()
			if err != nil {
				b.Fatal(err)
			}
			_ = msg.Ack()
		}
		it.Stop()
		rawTime += time.Since(t0)
		_ = js.DeleteConsumer(ctx, "TOKENLINE", name)
	}
	b.StopTimer()
	hookRate := float64(n*b.N) / hookTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	b.ReportMetric(hookRate, "deliveries/s")
	b.ReportMetric(rawRate, "raw_msgs/s")
	b.ReportMetric(hookRate/rawRate, "ratio")
	b.Logf("webhooks %.0f deliveries/s, raw JetStream consumer %.0f msgs/s, ratio %.2f (%d events x %d rounds)", hookRate, rawRate, hookRate/rawRate, n, b.N)
}
