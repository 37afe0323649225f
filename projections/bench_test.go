package projections

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

var (
	rebuildEvents  = flag.Int("rebuild.events", 100_000, "events in the rebuild benchmark's stream")
	rebuildConns   = flag.Int("rebuild.conns", 0, "connections in the rebuild benchmark (default events/10, at most 100000)")
	rebuildWorkers = flag.Int("rebuild.workers", 0, "decoding goroutines (default GOMAXPROCS)")
)

const benchConns = 100_000

// lifeEvents returns the events of one connection's life in stream order
// (without sequences): created, authorised, then refresh cycles with the
// occasional transient failure and 403.
func lifeEvents(id string, n int, rng *rand.Rand, now time.Time) []domain.Event {
	var c domain.Connection
	out := make([]domain.Event, 0, n)
	gen := 0
	add := func(cmd domain.Command) {
		p, err := domain.Decide(&c, cmd)
		if err != nil {
			panic(err)
		}
		now = now.Add(time.Duration(1+rng.IntN(3000)) * time.Second)
		e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: now, Actor: "instance/api-1", Seq: uint64(len(out) + 1), Payload: p}
		if err := c.Apply(e); err != nil {
			panic(err)
		}
		out = append(out, e)
	}
	add(domain.Create{Provider: "pleo", Scopes: []string{"expenses:read", "users:read"}, Config: map[string]string{"team": "finance"}})
	for len(out) < n {
		switch c.State {
		case domain.StateUnauthenticated:
			add(domain.StartAuthorisation{AttemptID: uuid.NewString(), ExpiresAt: now.Add(10 * time.Minute)})
		case domain.StateReauthorising:
			gen++
			add(domain.CompleteAuthorisation{AttemptID: c.AttemptID, Tokens: tokens(id, gen, now).Info()})
		case domain.StateActive:
			if rng.IntN(10) == 0 {
				add(domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "admin:write"})
			} else {
				add(domain.StartRefresh{LeaseUntil: now.Add(30 * time.Second), RefreshTokenFP: c.Tokens.RefreshTokenFP})
			}
		case domain.StateRefreshing:
			if rng.IntN(8) == 0 {
				add(domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: now.Add(time.Minute), MaxAttempts: 5})
			} else {
				gen++
				add(domain.SucceedRefresh{Tokens: tokens(id, gen, now).Info(), Rotated: true})
			}
		}
	}
	return out
}

var gateBench struct {
	once sync.Once
	g    *Gate
	ids  []string
	toks []string
}

// benchGate loads 100k active connections, each with its token, into a gate.
func benchGate() (*Gate, []string) {
	gateBench.once.Do(func() {
		rng := rand.New(rand.NewPCG(1, 1))
		g := NewGate(GateOptions{})
		st := NewStatus()
		st.OnChange(g.Observe)
		now := time.Now().Add(-time.Minute)
		ids := make([]string, benchConns)
		toks := make([]string, benchConns)
		var seq uint64
		for i := range ids {
			ids[i] = uuid.NewString()
			evs := lifeEvents(ids[i], 3, rng, now) // created, started, completed
			for _, e := range evs {
				seq++
				e.Seq = seq
				if _, err := st.Apply(e); err != nil {
					panic(err)
				}
			}
			toks[i] = tokens(ids[i], 1, now).AccessToken
		}
		for i, id := range ids {
			if err := g.SetToken(id, domain.Fingerprint(toks[i]), toks[i]); err != nil {
				panic(err)
			}
		}
		gateBench.g, gateBench.ids, gateBench.toks = g, ids, toks
	})
	return gateBench.g, gateBench.ids
}

var sinkStr string

// BenchmarkGateCheck measures Check with 100k connections loaded against
// the floor of any lookup: a plain Go map read (no lock: it is read only
// here, so it does not degrade under parallel reads as a locked map does),
// keyed by separate copies of the ids, as a caller's map would be. The two
// run interleaved, in alternating chunks of 256 calls timed separately, in
// the same loop (serial) or in every goroutine of RunParallel (parallel),
// so that both see the same machine:
//
//   - hot: the calls cycle over 1,024 connections (the working set of a busy
//     integration worker), so the cost is the code path;
//   - spread: the calls cycle over all 100k connections, so nearly every call
//     misses the CPU caches whatever the code does.
//
// It prints the time per call of each (in parallel: per call in each
// goroutine), their ratio, and Check's allocations per call, which must be 0.
//
//	go test -run '^$' -bench GateCheck ./projections/
func BenchmarkGateCheck(b *testing.B) {
	g, loaded := benchGate()
	var all strings.Builder
	for _, id := range loaded {
		all.WriteString(id)
	}
	flat := all.String()
	ids := make([]string, len(loaded))
	for i := range ids {
		ids[i] = flat[i*36 : (i+1)*36]
	}
	plain := make(map[string]string, len(ids))
	for i, id := range loaded {
		plain[strings.Clone(id)] = gateBench.toks[i]
	}
	gate := func(id string) string {
		tok, err := g.Check(id)
		if err != nil {
			panic(err)
		}
		return tok
	}
	mapRead := func(id string) string { return plain[id] }
	allocs := testing.AllocsPerRun(1000, func() { sinkStr = gate(ids[0]) })
	if allocs != 0 {
		b.Errorf("gate Check allocates %.1f times per call, want 0", allocs)
	}
	const chunk = 256
	// calls runs n calls of check from position *i and returns how long they took.
	calls := func(check func(string) string, n int, i *int) time.Duration {
		var s string
		t0 := time.Now()
		for range chunk {
			s = check(ids[*i])
			if *i++; *i == n {
				*i = 0
			}
		}
		d := time.Since(t0)
		if len(s) == 0 {
			panic("no token")
		}
		return d
	}
	for _, set := range []struct {
		name string
		n    int
	}{{"hot", 1024}, {"spread", len(ids)}} {
		n := set.n
		for _, parallel := range []bool{false, true} {
			mode := "serial"
			if parallel {
				mode = "parallel"
			}
			b.Run(set.name+"/"+mode, func(b *testing.B) {
				var mu sync.Mutex
				var gateT, mapT time.Duration
				var gateN, mapN int64
				worker := func(next func() bool) {
					i := rand.IntN(n)
					j := i
					var gt, mt time.Duration
					var gn, mn int64
					for round := 0; next(); round++ {
						if round%2 == 0 {
							gt += calls(gate, n, &i)
							gn += chunk
							mt += calls(mapRead, n, &j)
							mn += chunk
						} else {
							mt += calls(mapRead, n, &j)
							mn += chunk
							gt += calls(gate, n, &i)
							gn += chunk
						}
					}
					mu.Lock()
					gateT, mapT, gateN, mapN = gateT+gt, mapT+mt, gateN+gn, mapN+mn
					mu.Unlock()
				}
				// One op is one chunk of each.
				if parallel {
					b.RunParallel(func(pb *testing.PB) { worker(pb.Next) })
				} else {
					worker(b.Loop)
				}
				gns := float64(gateT.Nanoseconds()) / float64(gateN)
				mns := float64(mapT.Nanoseconds()) / float64(mapN)
				b.ReportMetric(gns, "gate-ns/call")
				b.ReportMetric(mns, "map-ns/call")
				b.ReportMetric(gns/mns, "gate/map")
				b.ReportMetric(allocs, "gate-allocs/call")
				fmt.Printf("gate Check (%s: %d of %d connections, %s, GOMAXPROCS=%d): gate %.1f ns/call, plain map read %.1f ns/call, ratio %.2f, gate allocations %.0f/call\n",
					set.name, n, len(ids), mode, runtime.GOMAXPROCS(0), gns, mns, gns/mns, allocs)
			})
		}
	}
}

// BenchmarkMemoryPerConnection measures the heap held by Status and Gate
// (with a token loaded) for 100k connections with ten events each, decoded
// from their wire form as in production.
func BenchmarkMemoryPerConnection(b *testing.B) {
	for range b.N {
		rng := rand.New(rand.NewPCG(2, 2))
		now := time.Now().Add(-time.Hour)
		heap := func() uint64 {
			var ms runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		before := heap()
		st := NewStatus()
		var dec events.Decoder
		var seq uint64
		type tok struct{ id, fp, tok string }
		last := make([]tok, 0, benchConns)
		for range benchConns {
			id := uuid.NewString()
			evs := lifeEvents(id, 10, rng, now)
			for _, e := range evs {
				seq++
				e.Seq = seq
				wire, _ := events.Encode(e)
				d, err := dec.Decode(wire)
				if err != nil {
					b.Fatal(err)
				}
				d.Seq = seq
				if _, err := st.Apply(d); err != nil {
					b.Fatal(err)
				}
			}
			c, _ := st.Connection(id)
			if c.State == domain.StateActive || c.State == domain.StateRefreshing {
				t := tokens(id, 0, now).AccessToken // a realistic token length
				last = append(last, tok{id, domain.Fingerprint(t), t})
			}
		}
		mid := heap()
		g := NewGate(GateOptions{})
		st.OnChange(g.Observe)
		st.announce() // the start-up seeding of the gate
		for _, t := range last {
			_ = g.SetToken(t.id, t.fp, t.tok)
		}
		last = nil
		after := heap()
		statusPer := float64(mid-before) / benchConns
		gatePer := float64(after-mid) / benchConns
		b.ReportMetric(statusPer+gatePer, "B/conn")
		b.ReportMetric(statusPer, "status-B/conn")
		b.ReportMetric(gatePer, "gate-B/conn")
		fmt.Printf("memory for %d connections: status %.0f B/conn, gate %.0f B/conn, total %.0f B/conn (target ≤ 2048)\n",
			benchConns, statusPer, gatePer, statusPer+gatePer)
		runtime.KeepAlive(st)
		runtime.KeepAlive(g)
	}
}

// populateStream publishes n realistic events across conns connections with
// async publishes, interleaved across connections as a live system would.
func populateStream(b *testing.B, st *jsstore.Store, n, conns int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 3))
	per := (n + conns - 1) / conns
	now := time.Now().Add(-24 * time.Hour)
	lives := make([][]domain.Event, conns)
	for i := range lives {
		lives[i] = lifeEvents(uuid.NewString(), per, rng, now)
	}
	var failedMu sync.Mutex
	var failed []error
	js, err := jetstream.New(st.JetStream().Conn(), jetstream.WithPublishAsyncMaxPending(8000),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			failedMu.Lock()
			failed = append(failed, err)
			failedMu.Unlock()
		}))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	sent := 0
	for step := 0; step < per && sent < n; step++ {
		for i := 0; i < conns && sent < n; i++ {
			e := lives[i][step]
			lives[i][step] = domain.Event{}
			data, err := events.Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			m := &nats.Msg{Subject: events.Subject(e.ConnectionID), Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{e.ID}}}
			for {
				_, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Second))
				if err == nil {
					break
				}
				if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
					b.Fatal(err)
				}
				<-js.PublishAsyncComplete() // let the server catch up
			}
			sent++
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publish did not complete")
	}
	if len(failed) > 0 {
		b.Fatalf("%d async publishes failed, first: %v", len(failed), failed[0])
	}
	last, err := st.LastSeq(ctx)
	if err != nil || last != uint64(n) {
		b.Fatalf("stream has %d messages, want %d (%v)", last, n, err)
	}
	fmt.Printf("populated %d events across %d connections in %v\n", n, conns, time.Since(start).Round(time.Millisecond))
}

// rawRead reads the whole stream with an ordered consumer and does nothing
// with the messages: the floor any reader of the stream pays.
func rawRead(b *testing.B, st *jsstore.Store, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	cons, err := st.Stream().OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(5000))
	if err != nil {
		b.Fatal(err)
	}
	bytes := 0
	for range n {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(m.Data())
	}
	it.Stop()
	return time.Since(start)
}

// BenchmarkRebuild compares a full rebuild of the projections (Status from
// every event, then the Gate derived from it) with a raw ordered-consumer
// read of the same stream.
func BenchmarkRebuild(b *testing.B) {
	n := *rebuildEvents
	conns := *rebuildConns
	if conns <= 0 {
		conns = min(benchConns, max(1, n/10))
	}
	srv := natstest.Start(b, "")
	st, err := jsstore.Open(context.Background(), srv.Connect(b), jsstore.Config{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	populateStream(b, st, n, conns)
	if *rebuildWorkers > 0 {
		jsstore.ReadWorkers = *rebuildWorkers
	}
	b.ResetTimer()
	for range b.N {
		var raw, rebuild time.Duration = 1 << 62, 1 << 62
		var skipped int64
		var connsBuilt int
		for range 2 { // best of two, alternating, on a shared machine
			raw = min(raw, rawRead(b, st, n))
			runtime.GC()
			start := time.Now()
			status, pos, sk, err := build(context.Background(), st, discardLogger())
			if err != nil || pos != uint64(n) {
				b.Fatalf("build: %v at %d", err, pos)
			}
			g := NewGate(GateOptions{})
			status.OnChange(g.Observe)
			status.announce() // the start-up seeding of the gate
			rebuild = min(rebuild, time.Since(start))
			skipped, connsBuilt = sk, len(status.List())
			runtime.GC()
		}
		if skipped != 0 || connsBuilt != conns {
			b.Fatalf("rebuild skipped %d, built %d connections of %d", skipped, connsBuilt, conns)
		}
		rawRate := float64(n) / raw.Seconds()
		rebuildRate := float64(n) / rebuild.Seconds()
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(rebuildRate, "rebuild-events/s")
		b.ReportMetric(rebuildRate/rawRate, "rebuild/raw")
		fmt.Printf("rebuild of %d events (%d connections), GOMAXPROCS=%d: raw ordered-consumer read %v (%.0f events/s), "+
			"rebuild through status+gate %v (%.0f events/s), ratio %.2f (target ≥ 0.60)\n",
			n, conns, runtime.GOMAXPROCS(0), raw.Round(time.Millisecond), rawRate, rebuild.Round(time.Millisecond), rebuildRate, rebuildRate/rawRate)
	}
}
