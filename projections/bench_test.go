package projections

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

var benchConns = benchSize(100_000, 2_000)

// benchUniqueConfigs (TOKENLINE_BENCH_CONFIGS=unique) gives every
// connection a config of its own ({"scenario": "<n>"}, as the scale run
// does) instead of one config shared by all.
var benchUniqueConfigs = os.Getenv("TOKENLINE_BENCH_CONFIGS") == "unique"

var uniqueConfigs atomic.Int64

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
	cfg := map[string]string{"team": "finance"}
	if benchUniqueConfigs {
		// As the scale run gives them: a config of each connection's own.
		cfg = map[string]string{"scenario": strconv.Itoa(int(uniqueConfigs.Add(1)))}
	}
	add(domain.Create{Provider: "pleo", Scopes: []string{"expenses:read", "users:read"}, Config: cfg})
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

// benchConnsFromEnv is TOKENLINE_BENCH_CONNS (a quick run) or def.
func benchConnsFromEnv(def int) int {
	if n, err := strconv.Atoi(os.Getenv("TOKENLINE_BENCH_CONNS")); err == nil && n > 0 {
		return n
	}
	return def
}

// realisticLives returns the events of conns connections as a production
// stream holds them: several providers with their own scopes and config,
// tokens with fingerprints and expiries, refreshes, the occasional 403 and
// transient failure; each connection's life ends active or refreshing with
// an access token valid for an hour from about now.
func realisticLives(conns, per int, rng *rand.Rand) [][]domain.Event {
	lives := make([][]domain.Event, conns)
	for i := range lives {
		// Each event advances 1..3000 s: start far enough back for the
		// last token to be recent.
		start := time.Now().Add(-time.Duration(per) * 1500 * time.Second)
		lives[i] = lifeEvents(uuid.NewString(), per, rng, start)
	}
	return lives
}

// heapFigures returns the heap in use and the live heap after two
// collections.
func heapFigures() (inuse, live uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.HeapAlloc
}

// BenchmarkMemoryPerConnection measures the heap in use after GC
// (MemStats.HeapInuse, spans holding live objects, which is what the
// process keeps; the live heap HeapAlloc is printed too) of Status and Gate
// for 100k connections (TOKENLINE_BENCH_CONNS overrides) with ten events
// each, decoded from their wire form in stream order (interleaved across
// connections) as the Runner does, with the gate seeded at the end of the
// catch-up and every active connection's access token loaded.
//
//	go test -run '^$' -bench MemoryPerConnection -benchtime 1x ./projections/
func BenchmarkMemoryPerConnection(b *testing.B) {
	n := benchConnsFromEnv(benchConns)
	for range b.N {
		rng := rand.New(rand.NewPCG(2, 2))
		lives := realisticLives(n, 10, rng)
		// The wire form, step by step in stream order, in a few large
		// buffers that stay allocated through the measure (they are in the
		// baseline and do not fragment the small size classes).
		type step struct {
			buf []byte
			off []int
		}
		steps := make([]step, 10)
		for j := range steps {
			steps[j].off = make([]int, 0, n+1)
			for _, l := range lives {
				steps[j].off = append(steps[j].off, len(steps[j].buf))
				w, _ := events.Encode(l[j])
				steps[j].buf = append(steps[j].buf, w...)
			}
			steps[j].off = append(steps[j].off, len(steps[j].buf))
		}
		ids, secrets := make([]string, n), make([]string, n)
		for i, l := range lives {
			ids[i] = strings.Clone(l[0].ConnectionID)
			gen := 0
			for _, e := range l {
				switch e.Payload.(type) {
				case domain.AuthorisationCompleted, domain.RefreshSucceeded:
					gen++
				}
			}
			secrets[i] = accessToken(ids[i], gen) // what the vault hands the gate
		}
		lives = nil
		inuse0, live0 := heapFigures()
		st := NewStatus()
		st.follow() // as under a Runner: the stream path, quiet during the catch-up
		var dec events.Decoder
		var seq uint64
		for _, sp := range steps {
			for i := range n {
				seq++
				d, err := dec.Decode(sp.buf[sp.off[i]:sp.off[i+1]])
				if err != nil {
					b.Fatal(err)
				}
				d.Seq = seq
				if _, err := st.applyStream(d); err != nil {
					b.Fatal(err)
				}
			}
		}
		st.announce() // the end of the catch-up (no observer yet: compacts only)
		inuse1, live1 := heapFigures()
		g := NewGate(GateOptions{})
		st.OnChange(g.Observe)
		st.announce() // the start-up seeding of the gate
		for i, id := range ids {
			c, _ := st.Connection(id)
			if c.State == domain.StateActive || c.State == domain.StateRefreshing {
				if err := g.SetToken(id, c.Tokens.AccessTokenFP, secrets[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
		secrets = nil
		inuse2, live2 := heapFigures()
		per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
		statusIn, gateIn := per(inuse1, inuse0), per(inuse2, inuse1)
		statusLive, gateLive := per(live1, live0), per(live2, live1)
		b.ReportMetric(statusIn+gateIn, "inuse-B/conn")
		b.ReportMetric(statusLive+gateLive, "live-B/conn")
		b.ReportMetric(statusIn, "status-inuse-B/conn")
		b.ReportMetric(gateIn, "gate-inuse-B/conn")
		fmt.Printf("memory for %d connections, heap in use after GC: status %.0f B/conn, gate %.0f B/conn, total %.0f B/conn (target ≤ 2048); "+
			"live heap: status %.0f, gate %.0f, total %.0f B/conn\n",
			n, statusIn, gateIn, statusIn+gateIn, statusLive, gateLive, statusLive+gateLive)
		runtime.KeepAlive(st)
		runtime.KeepAlive(g)
		runtime.KeepAlive(ids)
		runtime.KeepAlive(steps)
		_ = secrets
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

// rawRead reads the whole stream (n messages) with an ordered consumer and
// does nothing with the messages: the floor any reader of the stream pays
// (natstest.ReadAll).
func rawRead(b *testing.B, st *jsstore.Store, n int) time.Duration {
	d, err := natstest.ReadAll(context.Background(), st.Stream(), uint64(n), 10*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkRebuild times the rebuild of the projections as production
// does it when there is no usable snapshot: a Runner without checkpoints
// started on the stream (restore, catch-up through Status.applyStream,
// decoding on every core, the gate seeded at the end of the catch-up)
// until it is ready, interleaved with its baseline, a raw ordered-consumer
// read of the same stream. It prints both, best of two, and the ratio.
//
//	go test -run '^$' -bench Rebuild -benchtime 1x ./projections/ -rebuild.events=1000000
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
		var rawCPU, rebuildCPU time.Duration = 1 << 62, 1 << 62
		var connsBuilt int
		for range 2 { // best of two, alternating, on a shared machine
			c0 := processCPU()
			raw = min(raw, rawRead(b, st, n))
			rawCPU = min(rawCPU, processCPU()-c0)
			runtime.GC()
			c0 = processCPU()
			start := time.Now()
			status := NewStatus()
			g := NewGate(GateOptions{})
			status.OnChange(g.Observe)
			r, err := NewRunner(RunnerConfig{Source: st, Status: status, Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			if err := r.Start(ctx); err != nil {
				b.Fatal(err)
			}
			if err := r.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			rebuild = min(rebuild, time.Since(start))
			rebuildCPU = min(rebuildCPU, processCPU()-c0)
			connsBuilt = len(status.List())
			r.Close(ctx)
			cancel()
			runtime.GC()
		}
		if connsBuilt != conns {
			b.Fatalf("rebuild built %d connections of %d", connsBuilt, conns)
		}
		rawRate := float64(n) / raw.Seconds()
		rebuildRate := float64(n) / rebuild.Seconds()
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(rebuildRate, "rebuild-events/s")
		b.ReportMetric(rebuildRate/rawRate, "rebuild/raw")
		fmt.Printf("rebuild of %d events (%d connections), GOMAXPROCS=%d: raw ordered-consumer read %v (%.0f events/s), "+
			"Runner catch-up into status+gate %v (%.0f events/s), ratio %.2f (target ≥ 0.60)\n",
			n, conns, runtime.GOMAXPROCS(0), raw.Round(time.Millisecond), rawRate, rebuild.Round(time.Millisecond), rebuildRate, rebuildRate/rawRate)
		// CPU of the whole process (the embedded server's included): a
		// steadier figure than time on a shared machine.
		fmt.Printf("  CPU per event: raw read %.2f µs, rebuild %.2f µs\n",
			float64(rawCPU.Nanoseconds())/1e3/float64(n), float64(rebuildCPU.Nanoseconds())/1e3/float64(n))
		b.ReportMetric(float64(rebuildCPU.Nanoseconds())/float64(n), "rebuild-cpu-ns/event")
	}
}

// BenchmarkDecodeApply measures the CPU side of a rebuild per event, the
// part tokenline owns: decoding a stored message with an events.Decoder
// and folding it into Status through the Runner's path (applyStream), in
// stream order over 10k connections; allocations per event are reported.
//
//	go test -run '^$' -bench DecodeApply -benchmem ./projections/
func BenchmarkDecodeApply(b *testing.B) {
	const conns, per = 10_000, 10
	rng := rand.New(rand.NewPCG(4, 4))
	lives := realisticLives(conns, per, rng)
	wire := make([][]byte, 0, conns*per)
	for step := range per {
		for _, l := range lives {
			w, err := events.Encode(l[step])
			if err != nil {
				b.Fatal(err)
			}
			wire = append(wire, w)
		}
	}
	lives = nil
	b.ReportAllocs()
	b.ResetTimer()
	var st *Status
	var dec events.Decoder
	for i := range b.N {
		k := i % len(wire)
		if k == 0 {
			st = NewStatus()
			st.follow()
		}
		e, err := dec.Decode(wire[k])
		if err != nil {
			b.Fatal(err)
		}
		e.Seq = uint64(k + 1)
		if _, err := st.applyStream(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot writes and reads a snapshot of 100k connections
// (TOKENLINE_BENCH_CONNS overrides) with the fields a real one has set,
// and prints its size and the time of each.
//
//	go test -run '^$' -bench '^BenchmarkSnapshot$' -benchtime 5x ./projections/
func BenchmarkSnapshot(b *testing.B) {
	n := benchConnsFromEnv(benchConns)
	conns := make([]*domain.Connection, n)
	for i := range conns {
		c := sampleConnection(i)
		c.ID, c.LeaseID = uuid.NewString(), ""
		conns[i] = c
	}
	ents := entriesOf(conns)
	h := snapshotHeader{Projection: "status", Stream: "TOKENLINE", StreamCreated: time.Unix(1700000000, 0).UTC(), Position: uint64(n + 5)}
	var buf bytes.Buffer
	var write, read time.Duration
	var writeAlloc uint64
	b.ResetTimer()
	for range b.N {
		buf.Reset()
		buf.Grow(n * 256) // the destination's growth is not the writer's
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		s := time.Now()
		if err := writeSnapshot(&buf, h, ents); err != nil {
			b.Fatal(err)
		}
		write += time.Since(s)
		runtime.ReadMemStats(&m1)
		writeAlloc += m1.TotalAlloc - m0.TotalAlloc
		s = time.Now()
		if _, st, err := readSnapshot(bytes.NewReader(buf.Bytes())); err != nil || len(st.conns) != n {
			b.Fatal(err)
		}
		read += time.Since(s)
	}
	b.ReportMetric(float64(buf.Len())/float64(n), "B/conn-on-disk")
	b.ReportMetric(float64(read.Milliseconds())/float64(b.N), "read-ms")
	b.ReportMetric(float64(write.Milliseconds())/float64(b.N), "write-ms")
	b.ReportMetric(float64(writeAlloc)/float64(b.N)/float64(n), "write-alloc-B/conn")
	fmt.Printf("snapshot of %d connections: %.1f MB (%d B/conn), written in %v (allocating %.0f KiB), read in %v\n",
		n, float64(buf.Len())/1e6, buf.Len()/n, (write / time.Duration(b.N)).Round(time.Millisecond),
		float64(writeAlloc)/float64(b.N)/1024, (read / time.Duration(b.N)).Round(time.Millisecond))
}

// processCPU returns the CPU time (user and system) this process used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
