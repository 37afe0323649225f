package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// coldLife returns n events of one connection as production writes them
// (hash-chained, encoded): created, authorised, then refresh cycles every
// 45 minutes with one-hour tokens, ending active with its last token issued
// between 1 and 10 minutes before the run, so that it expires 50 to 59
// minutes after it and the scheduler has nothing due while the starts are
// measured. An
// odd count ends with a non-terminal 403 (active stays active).
func coldLife(id string, n int, rng *rand.Rand) [][]byte {
	provider := []string{"sandbox", "sandbox", "sandbox", "pleo-eu"}[rng.IntN(4)]
	scopes := [][]string{{"users:read"}, {"users:read", "expenses:read"}, {"expenses:read", "expenses:write", "users:read"}}[rng.IntN(3)]
	cycles := max(n-3, 0) / 2
	t := time.Now().Add(-time.Duration(1+rng.IntN(9))*time.Minute - time.Duration(cycles)*45*time.Minute - 2*time.Minute).UTC()
	var prev [32]byte
	out := make([][]byte, 0, n)
	gen := 0
	add := func(p domain.Payload, step time.Duration) {
		t = t.Add(step)
		e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: t, Actor: "instance/a1b2c3d4", Payload: p,
			Link: domain.ChainLink{Chained: true, Prev: prev}}
		b, err := events.Encode(e)
		if err != nil {
			panic(err)
		}
		prev = events.HashOf(b)
		out = append(out, b)
	}
	tok := func() domain.TokenInfo {
		gen++
		return domain.Tokens{AccessToken: fmt.Sprintf("at-%s-%d", id, gen), RefreshToken: fmt.Sprintf("rt-%s-%d", id, gen),
			Expiry: t.Add(time.Hour), Scopes: scopes}.Info()
	}
	attempt := uuid.NewString()
	add(domain.ConnectionCreated{Provider: provider, Scopes: scopes, Config: map[string]string{"team": []string{"finance", "ops", "sales"}[rng.IntN(3)]}}, 0)
	add(domain.AuthorisationStarted{AttemptID: attempt, Scopes: scopes, ExpiresAt: t.Add(10 * time.Minute)}, time.Second)
	add(domain.AuthorisationCompleted{AttemptID: attempt, Tokens: tok()}, 40*time.Second)
	for len(out)+2 <= n {
		add(domain.RefreshStarted{Attempt: 1, LeaseUntil: t.Add(45*time.Minute + 30*time.Second), Trigger: domain.TriggerSchedule}, 45*time.Minute)
		add(domain.RefreshSucceeded{Attempt: 1, Tokens: tok(), Rotated: true}, 400*time.Millisecond)
	}
	if len(out) < n {
		add(domain.AccessRejected{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "admin:write"}, time.Second)
	}
	return out[:n]
}

// writeSnapshot makes m's status projection write its snapshot now, with
// time to spare (Close allows it 5 s, which a loaded machine may need more
// than for 100k connections).
func writeSnapshot(b *testing.B, m *app.Main) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.Proj.Runner.Snapshot(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkColdStart measures `tokenline serve` (Main.Run: embedded NATS,
// store, vault, projections restored from their snapshot and position, the
// tail replayed, the gate and the scheduler seeded, HTTP up) on a data dir
// holding 1M events of 100k active connections, interleaved in the same run
// with its baseline, a bare restart of the embedded nats-server on the same
// data dir (until the stream answers), and with a start whose snapshot
// pointer was deleted (a full replay). It prints each figure (the median
// of the rounds), the ratios to the baseline, the start-up phases and the
// heap in use after GC once started. Beside the full replay it times that
// replay's floor, in the rounds before it: the bare restart followed by a
// raw read of every message of the stream (an ordered consumer taking the
// messages in its callback, as tokenline's reads do, and doing nothing with
// them), the least any start that reads the whole history can take.
//
// It measures the store in two conditions, one after the other:
//
//   - right after writing: the rounds start as soon as the store is
//     written, inside the stream's de-duplication window (2 minutes), so
//     that nats-server, recovering the stream, first rebuilds its table
//     from the messages of that window, in every start alike (the
//     condition of the figures: a restart soon after a busy spell);
//   - at rest: the rounds start once the last event is older than the
//     window (a restart of a store not written to for two minutes), where
//     a bare restart is far shorter, so tokenline's own work weighs more.
//
// Its metrics carry the condition's suffix (-written, -rest).
//
//	go test -run '^$' -bench ColdStart -benchtime 1x -timeout 60m ./tests/
//
// TOKENLINE_COLDSTART_EVENTS, TOKENLINE_COLDSTART_CONNS and
// TOKENLINE_COLDSTART_ROUNDS (default 1000000, 100000 and 3) change the
// size for a quick run, for example 100000 and 10000.
// TOKENLINE_COLDSTART_DIR names a data dir to keep the populated store in
// and to reuse on the next run of the same size (populating 1M events takes
// a minute or more); a reused store is measured at rest only.
// TOKENLINE_COLDSTART_NOWAIT=1 measures right after writing only (no wait
// for the window to pass).
func BenchmarkColdStart(b *testing.B) {
	n := envInt("TOKENLINE_COLDSTART_EVENTS", 1_000_000)
	conns := min(envInt("TOKENLINE_COLDSTART_CONNS", 100_000), n)
	rounds := envInt("TOKENLINE_COLDSTART_ROUNDS", 3)
	per := n / conns
	n = per * conns
	dir := b.TempDir()
	reuse := os.Getenv("TOKENLINE_COLDSTART_DIR")
	populated := false
	if reuse != "" {
		dir = reuse
		want := fmt.Sprintf("%d %d\n", n, conns)
		if got, err := os.ReadFile(filepath.Join(dir, "coldstart-populated")); err == nil {
			if string(got) != want {
				b.Fatalf("%s holds a store of %q events and connections, not %q", dir, got, want)
			}
			populated = true
		}
	}
	ctx := context.Background()
	mk := func() *app.Main {
		m := app.NewMain()
		m.Config.DataDir, m.Config.NATSListen, m.Config.HTTPAddr = dir, "127.0.0.1:0", "127.0.0.1:0"
		m.Config.LogLevel = "error"
		m.LogOutput = io.Discard
		return m
	}
	written := time.Now() // when the last event was stored
	marker := filepath.Join(dir, "coldstart-populated")
	if populated {
		if fi, err := os.Stat(marker); err == nil {
			written = fi.ModTime()
		}
	} else {
		written = populate(b, ctx, mk, n, conns, per)
		if reuse != "" {
			if err := os.WriteFile(marker, fmt.Appendf(nil, "%d %d\n", n, conns), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	type condition struct{ name, suffix string }
	var conds []condition
	if !populated {
		conds = append(conds, condition{"right after writing (inside the de-duplication window)", "-written"})
	}
	if os.Getenv("TOKENLINE_COLDSTART_NOWAIT") != "1" {
		conds = append(conds, condition{"at rest (the de-duplication window passed)", "-rest"})
	}
	b.ResetTimer()
	for _, cond := range conds {
		if cond.suffix == "-rest" {
			b.StopTimer()
			if wait := time.Until(written.Add(2*time.Minute + 5*time.Second)); wait > 0 {
				fmt.Printf("waiting %v for the stream's de-duplication window to pass\n", wait.Round(time.Second))
				time.Sleep(wait)
			}
			b.StartTimer()
		}
		coldStartRounds(b, ctx, mk, dir, n, conns, rounds, cond.name, cond.suffix)
		if cond.suffix == "-written" && time.Since(written) > 2*time.Minute {
			fmt.Println("  (the de-duplication window passed during these rounds: the later ones met the store at rest)")
		}
	}
	b.StopTimer()
}

// coldStartRounds runs the rounds of BenchmarkColdStart in one condition of
// the store and prints and reports their figures.
func coldStartRounds(b *testing.B, ctx context.Context, mk func() *app.Main, dir string, n, conns, rounds int, cond, suffix string) {
	// The CPU time the process used during each start (the embedded
	// nats-server's included): on a shared machine a start waits for a
	// core, and this figure moves less than the time.
	var cpuBare, cpuSnap, cpuFull []time.Duration
	// The floor of any full replay, timed in the rounds before one: the
	// bare restart, then a raw read of every message of the stream (an
	// ordered consumer, nothing done with the messages), until it has the
	// last one.
	var tFloor []time.Duration
	// bare restarts the embedded nats-server on the data dir and waits
	// until the stream answers; with dropSnapshot it then reads the whole
	// stream raw (tFloor) and deletes the status projection's snapshot
	// pointer (not timed).
	bare := func(dropSnapshot bool) time.Duration {
		// From a collected heap, as tokenline's starts (and as a
		// fresh process): the garbage of the round before would
		// otherwise raise the collector's goal for the server's recovery.
		runtime.GC()
		runtime.GC()
		s, c := time.Now(), processCPU()
		srv, err := natsserver.Start(ctx, natsserver.Config{DataDir: dir, Listen: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		nc, err := srv.Connect()
		if err != nil {
			b.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		st, err := js.Stream(ctx, natsserver.DefaultStream)
		if err != nil || st.CachedInfo().State.Msgs < uint64(n) {
			b.Fatalf("bare restart: stream %v", err)
		}
		d := time.Since(s)
		cpuBare = append(cpuBare, processCPU()-c)
		if dropSnapshot {
			read, err := natstest.ReadAll(ctx, st, st.CachedInfo().State.Msgs, 10*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			tFloor = append(tFloor, d+read)
		}
		kv, err := js.KeyValue(ctx, jsstore.PositionsBucket)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.Get(ctx, "snapshot.status"); err != nil {
			b.Fatalf("no snapshot to start from: %v", err)
		}
		if dropSnapshot {
			if err := kv.Delete(ctx, "snapshot.status"); err != nil {
				b.Fatal(err)
			}
		}
		nc.Close()
		srv.Shutdown()
		return d
	}
	var phases, fullPhases []app.Phase
	var inuse int64
	tokenline := func(wantSnapshot bool) time.Duration {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		m := mk()
		var logs bytes.Buffer
		m.Config.LogLevel, m.Config.LogFormat, m.LogOutput = "info", "text", &logs
		s, c := time.Now(), processCPU()
		if err := m.Run(ctx); err != nil {
			b.Fatal(err)
		}
		d, dc := time.Since(s), processCPU()-c
		if wantSnapshot {
			cpuSnap = append(cpuSnap, dc)
		} else {
			cpuFull = append(cpuFull, dc)
		}
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "msg=\"projection restored") || strings.Contains(line, "msg=\"projection caught up") {
				fmt.Print("  ", line)
			}
		}
		if wantSnapshot {
			phases = m.Startup
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&ms)
			inuse = int64(ms.HeapInuse) - int64(base)
		} else {
			fullPhases = m.Startup
		}
		if got := len(m.Proj.Status.List()); got != conns {
			b.Fatalf("status has %d connections, want %d", got, conns)
		}
		if !wantSnapshot {
			writeSnapshot(b, m) // for the next start from a snapshot
		}
		m.Close()
		return d
	}
	var tBare, tSnap, tFull []time.Duration
	for range rounds {
		tBare = append(tBare, bare(false))
		tSnap = append(tSnap, tokenline(true))
		tBare = append(tBare, bare(true))
		tFull = append(tFull, tokenline(false)) // Close writes a snapshot again
	}
	med := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mb, ms, mf, mfl := med(tBare), med(tSnap), med(tFull), med(tFloor)
	b.ReportMetric(float64(ms.Milliseconds()), "snapshot-start-ms"+suffix)
	b.ReportMetric(float64(mf.Milliseconds()), "replay-start-ms"+suffix)
	b.ReportMetric(float64(mb.Milliseconds()), "bare-nats-ms"+suffix)
	b.ReportMetric(float64(ms)/float64(mb), "snapshot/bare"+suffix)
	b.ReportMetric(float64(mf)/float64(mb), "replay/bare"+suffix)
	b.ReportMetric(float64(mfl.Milliseconds()), "bare+raw-read-ms"+suffix)
	b.ReportMetric(float64(mf)/float64(mfl), "replay/bare+raw-read"+suffix)
	b.ReportMetric(float64(inuse)/float64(conns), "heap-inuse-B/conn"+suffix)
	cb, cs, cf := med(cpuBare), med(cpuSnap), med(cpuFull)
	b.ReportMetric(float64(cs.Milliseconds()), "snapshot-start-cpu-ms"+suffix)
	b.ReportMetric(float64(cf.Milliseconds()), "replay-start-cpu-ms"+suffix)
	fmt.Printf("cold start, %d events of %d connections, store %s, median of %d rounds, interleaved:\n"+
		"  bare nats-server restart on the same store: %v (all %v)\n"+
		"  tokenline from snapshot+position:           %v (all %v), %.2fx the bare restart (target <= 1.3)\n"+
		"  tokenline by full replay (no snapshot):     %v (all %v), %.2fx the bare restart (target <= 3)\n"+
		"  its floor, the bare restart and a raw read of every message: %v (all %v), %.2fx the bare restart; the replay %.2fx it\n"+
		"  start-up phases (last snapshot start): %v\n"+
		"  start-up phases (last full replay):    %v\n"+
		"  CPU of the process during each start (median; the embedded nats-server's included): bare %v, from snapshot %v, by full replay %v (%.2f µs/event)\n"+
		"  heap in use after GC once started from the snapshot (the embedded nats-server's included): %.0f B/conn\n",
		n, conns, cond, rounds, mb.Round(time.Millisecond), tBare, ms.Round(time.Millisecond), tSnap, float64(ms)/float64(mb),
		mf.Round(time.Millisecond), tFull, float64(mf)/float64(mb),
		mfl.Round(time.Millisecond), tFloor, float64(mfl)/float64(mb), float64(mf)/float64(mfl), phases, fullPhases,
		cb.Round(time.Millisecond), cs.Round(time.Millisecond), cf.Round(time.Millisecond), float64(cf.Nanoseconds())/1e3/float64(n),
		float64(inuse)/float64(conns))
}

// populate writes the cold-start store into the data dir of mk's Main: n
// events of conns connections (per each). It returns once the projections
// caught up and their snapshot was written, with the time the last event
// was stored.
func populate(b *testing.B, ctx context.Context, mk func() *app.Main, n, conns, per int) time.Time {

	m := mk()
	if err := m.Run(ctx); err != nil {
		b.Fatal(err)
	}
	// The lives are published step by step: a connection's token, as
	// published so far, may be long expired, and the scheduler would
	// refresh it and break the chain of the events still to come.
	m.StopScheduler()
	js, _ := jetstream.New(m.Conn, jetstream.WithPublishAsyncMaxPending(20000))
	rng := rand.New(rand.NewPCG(7, 7))
	lives := make([][][]byte, conns)
	ids := make([]string, conns)
	for i := range lives {
		ids[i] = uuid.NewString()
		lives[i] = coldLife(ids[i], per, rng)
	}
	start := time.Now()
	for step := range per {
		for i := range lives {
			if _, err := js.PublishAsync(events.Subject(ids[i]), lives[i][step], jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
			lives[i][step] = nil
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Minute):
		b.Fatal("publish did not complete")
	}
	lives = nil
	lastPublish := time.Now()
	fmt.Printf("populated %d events across %d connections in %v\n", n, conns, time.Since(start).Round(time.Millisecond))
	// Let the projections catch up, then stop: Close writes the snapshot.
	eventually(b, 10*time.Minute, "projections caught up", func() bool {
		lag, err := m.Proj.Runner.Lag(ctx)
		return err == nil && lag == 0
	})
	writeSnapshot(b, m)
	m.Close()
	return lastPublish
}

// processCPU returns the CPU time (user and system) this process used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
