package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/natstest"
)

// BenchmarkDeliveryVsRawConsumer delivers the same stored events (1,000
// connections x 20 events, interleaved in the stream as a live system
// appends them) three ways, one after the other in every round, and prints
// the three rates and their ratios:
//
//   - webhooks: a new subscription from the stream's start, in the
//     production configuration (signing, the pinned durable consumer,
//     per-connection order, acks after the 2xx, the delivery log with
//     every attempt, metrics), timed from Create until the receiver has
//     every event;
//   - raw: a new durable JetStream consumer (explicit acks) reading and
//     acknowledging the same events: the baseline;
//   - http: a bare net/http client POSTing the same bodies to the same
//     receiver with the same concurrency (Config.Concurrency) over keep-alive
//     connections, without signing, order or acks: the HTTP ceiling of this
//     machine, so the reader sees whether the time goes to HTTP or to
//     tokenline.
//
// Besides the rates it prints the process's CPU time per event in each mode
// (tokenline, the NATS server and the receiver together): on a shared
// machine that varies less than the rates, and webhooks' CPU against raw
// plus bare HTTP is what tokenline itself adds; and the cores each mode
// kept busy (CPU time over wall time): below the machine's cores, a mode
// waits rather than computes. Last, the HTTP ceiling against the target:
// the rate 0.5 of raw asks for, and how far above the bare HTTP client's
// rate it is.
//
// The receiver runs in the process on loopback (keep-alive), counts distinct
// webhook-ids and does not verify (its CPU would be charged to the sender on
// the same cores). The NATS server runs in the process too: every figure
// pays for it.
//
//	go test -run '^$' -bench DeliveryVsRaw -benchtime 3x ./adapters/webhook/
func BenchmarkDeliveryVsRawConsumer(b *testing.B) {
	const conns, perConn = 1000, 20
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
	type ev struct {
		id   string
		body []byte
	}
	evs := make([]ev, 0, n)
	for j := range perConn {
		for _, c := range ids {
			id := uuid.NewString()
			body := fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/tokenline","type":"tokenline.refresh.succeeded","subject":%q,"time":"2026-12-02T00:00:00Z","datacontenttype":"application/json","schemaversion":1,"data":{"n":%d,"access_token_fp":"sha256:0123456789ab","access_token_expires_at":"2026-12-02T01:00:00Z","scopes":["users:read"]}}`, id, c, j)
			ack, err := js.Publish(ctx, "tokenline.conn."+c, body, jetstream.WithExpectLastSequencePerSubject(last[c]))
			if err != nil {
				b.Fatal(err)
			}
			last[c] = ack.Sequence
			evs = append(evs, ev{id, body})
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		got  atomic.Int64
	)
	var dials atomic.Int64
	recv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	recv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	recv.Start()
	defer recv.Close()
	reset := func() {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		got.Store(0)
	}
	// As app.Main opens it: metrics registered (every attempt counted).
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	m, err := Open(ctx, js, Config{SecretsKey: make([]byte, 32), Safety: Safety{AllowHTTP: true, AllowPrivate: true}, Instance: "bench",
		Metrics: metrics, UserAgent: "tokenline-webhooks/bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	concurrency := m.cfg.Concurrency

	hook := func() time.Duration {
		reset()
		t0 := time.Now()
		w, _, err := m.create(ctx, CreateRequest{URL: recv.URL}, 1)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; got.Load() < n; i++ {
			if i > 120000 {
				b.Fatalf("webhooks: %d of %d after 120 s", got.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
		d := time.Since(t0)
		if _, err := m.Delete(ctx, w.ID, ""); err != nil {
			b.Fatal(err)
		}
		return d
	}
	raw := func(round int) time.Duration {
		t0 := time.Now()
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
		d := time.Since(t0)
		_ = js.DeleteConsumer(ctx, "TOKENLINE", name)
		return d
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency}}
	defer client.CloseIdleConnections()
	bare := func() time.Duration {
		reset()
		t0 := time.Now()
		next := make(chan int, n)
		for i := range n {
			next <- i
		}
		close(next)
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for i := range next {
					req, err := http.NewRequest(http.MethodPost, recv.URL, bytes.NewReader(evs[i].body))
					if err != nil {
						b.Error(err)
						return
					}
					req.Header.Set("Content-Type", "application/cloudevents+json")
					req.Header.Set("webhook-id", evs[i].id)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		if got.Load() != n {
			b.Fatalf("bare HTTP: the receiver got %d of %d", got.Load(), n)
		}
		return time.Since(t0)
	}

	var hookTime, rawTime, httpTime, hookCPU, rawCPU, httpCPU time.Duration
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		// Interleaved, in a rotating order, so that a change in the shared
		// machine's load falls on all three.
		var h, r, c time.Duration
		for k := range 3 {
			c0 := cpuTime()
			switch (round + k) % 3 {
			case 0:
				h = hook()
				hookCPU += cpuTime() - c0
			case 1:
				r = raw(round)
				rawCPU += cpuTime() - c0
			case 2:
				c = bare()
				httpCPU += cpuTime() - c0
			}
		}
		hookTime, rawTime, httpTime = hookTime+h, rawTime+r, httpTime+c
		b.Logf("round %d: webhooks %.0f/s, raw consumer %.0f/s, bare HTTP %.0f/s: webhooks/raw %.2f, webhooks/http %.2f (connections the receiver accepted so far: %d, keep-alive)",
			round, rate(h), rate(r), rate(c), rate(h)/rate(r), rate(h)/rate(c), dials.Load())
	}
	b.StopTimer()
	hookRate := float64(n*b.N) / hookTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	httpRate := float64(n*b.N) / httpTime.Seconds()
	b.ReportMetric(hookRate, "deliveries/s")
	b.ReportMetric(rawRate, "raw_msgs/s")
	b.ReportMetric(httpRate, "http_req/s")
	b.ReportMetric(hookRate/rawRate, "ratio")
	b.ReportMetric(hookRate/httpRate, "of_http")
	perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n*b.N) }
	b.ReportMetric(perEvent(hookCPU), "hook_cpu_us/ev")
	b.ReportMetric(perEvent(rawCPU), "raw_cpu_us/ev")
	b.ReportMetric(perEvent(httpCPU), "http_cpu_us/ev")
	cores := func(cpu, wall time.Duration) float64 { return cpu.Seconds() / wall.Seconds() }
	b.ReportMetric(cores(hookCPU, hookTime), "hook_cores")
	b.Logf("process CPU (tokenline, NATS server and receiver together) per event: webhooks %.0f µs, raw consumer %.0f µs, bare HTTP %.0f µs; cores kept busy: webhooks %.2f, raw consumer %.2f, bare HTTP %.2f (of %d)",
		perEvent(hookCPU), perEvent(rawCPU), perEvent(httpCPU), cores(hookCPU, hookTime), cores(rawCPU, rawTime), cores(httpCPU, httpTime), runtime.NumCPU())
	b.Logf("HTTP ceiling: a bare net/http client at the same concurrency reaches %.0f req/s = %.2f of raw; webhooks at 0.5 of raw would be %.0f deliveries/s = %.2f x that ceiling",
		httpRate, httpRate/rawRate, rawRate/2, rawRate/2/httpRate)
	b.Logf("webhooks %.0f deliveries/s, raw JetStream consumer %.0f msgs/s, bare HTTP %.0f req/s (concurrency %d): ratio %.2f of raw, %.2f of the HTTP ceiling (%d events over %d connections x %d rounds)",
		hookRate, rawRate, httpRate, concurrency, hookRate/rawRate, hookRate/httpRate, n, conns, b.N)
}

// cpuTime is the process's CPU time so far (user and system): on a shared
// machine the CPU an event costs varies less than the wall-clock rate.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
