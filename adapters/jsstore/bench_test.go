package jsstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

// BenchmarkAppend compares tokenline's Store.Append with the bare JetStream
// publish it is built on, against one real nats-server (file store, TCP
// client connections), with 1 and with 8 concurrent writers.
//
// Each side writes to its own stream of the store's configuration (the raw
// side's has its own name and equally long subjects: in tokenline's stream
// the projection Runner would fold the raw side's events as well), each to
// its own 10k connection subjects, with the same per-subject optimistic
// concurrency: every publish carries a fresh Nats-Msg-Id and
// Nats-Expected-Last-Subject-Sequence, the subject's last sequence tracked
// client-side. Every connection is first
// created and authorised (untimed setup); the timed steady state is the token
// refresh cycle, refresh.started then refresh.succeeded, which is what
// tokenline writes most. The raw side publishes pre-encoded bodies of exactly
// those events (same size); tokenline encodes them, applies them to its
// aggregate cache and runs the production hooks (see wireProduction: the
// status projection, the gate and the scheduler, with a Runner following
// the stream on a connection of its own, as in production). Each writer owns a fixed share of the
// subjects, so no append conflicts.
//
// A third side, raw+follower, is the raw side with a bare follower: the
// same publishes on a stream of their own, which an ordered consumer on a
// connection of its own follows (counting the messages, nothing more). It is the floor of any store whose projections follow the stream,
// as tokenline's Runner does: the server's delivery of every event to the
// follower and the client's read of it. tokenline/raw+follower is printed
// beside tokenline/raw (the target's ratio).
//
// The sides run in rotating chunks of at most 1000 events (the first side
// rotating too), so that all see the same stream sizes and the same
// background load; one op is one append of each side, and the events/s
// metrics are per side. A tokenline chunk ends when the Runner
// has taken its last event from the stream, so that the next chunk, the raw side's,
// does not run while the Runner catches up. The cpu-µs/event metrics are the
// process's CPU time (user and system: the embedded nats-server's too,
// alike on every side) per event during each side's chunks.
//
//	go test -run '^$' -bench Append -benchtime 3s ./adapters/jsstore/
func BenchmarkAppend(b *testing.B) {
	env := newBenchEnv(b, benchSize(10_000, 200))
	compareWithRaw(b, "append", env, env.tl)
}

// BenchmarkTransition is BenchmarkAppend for a whole state transition as
// the use cases make it (lifecycle's transact and refresh): load the
// aggregate to decide against (Store.LoadForAppend, what they call),
// domain.Decide the command (StartRefresh, then SucceedRefresh), append the
// event with the production hooks; against the same raw OCC publish, in
// the same run, alternating chunks as BenchmarkAppend does.
//
//	go test -run '^$' -bench Transition -benchtime 3s ./adapters/jsstore/
func BenchmarkTransition(b *testing.B) {
	env := newBenchEnv(b, benchSize(10_000, 200))
	compareWithRaw(b, "transition", env, env.tx)
}

// compareWithRaw runs side against the raw publish with 1 and 8 writers
// in alternating chunks and prints both rates and their ratio. A third side
// runs in the same rotation: the raw publish with a bare follower on its
// stream (rawFollow), the floor of any store whose projections follow the
// stream; its ratio is printed beside the target's.
func compareWithRaw(b *testing.B, what string, env *benchEnv, side *benchSide) {
	type result struct{ raw, rawf, tl float64 }
	results := map[int]result{}
	writerCounts := []int{1, 8}
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			const chunk = 1000
			sides := [...]*benchSide{env.raw, env.rawf, side}
			var took, cpu [len(sides)]time.Duration // raw, raw with a follower, tokenline
			for round, done := 0, 0; done < b.N; round++ {
				n := min(chunk, b.N-done)
				for k := range sides {
					k = (k + round) % len(sides)
					c0 := cpuTime()
					took[k] += env.run(b, sides[k], writers, n)
					cpu[k] += cpuTime() - c0
				}
				done += n
			}
			rate := func(k int) float64 { return float64(b.N) / took[k].Seconds() }
			r := result{raw: rate(0), rawf: rate(1), tl: rate(2)}
			results[writers] = r
			b.ReportMetric(r.raw, "raw-events/s")
			b.ReportMetric(r.rawf, "raw+follower-events/s")
			b.ReportMetric(r.tl, "tokenline-events/s")
			b.ReportMetric(r.tl/r.raw, "tokenline/raw")
			b.ReportMetric(r.tl/r.rawf, "tokenline/raw+follower")
			// The process's CPU per event during each side's chunks (the
			// embedded nats-server's included, on every side alike).
			for k, unit := range [...]string{"raw-cpu-µs/event", "raw+follower-cpu-µs/event", "tokenline-cpu-µs/event"} {
				b.ReportMetric(float64(cpu[k].Microseconds())/float64(b.N), unit)
			}
		})
	}
	for _, writers := range writerCounts {
		r, ok := results[writers]
		if !ok {
			continue // filtered out by -bench
		}
		w := "writer"
		if writers > 1 {
			w = "writers"
		}
		fmt.Printf("%s %d %s: raw %.0f/s, raw with a follower %.0f/s, tokenline %.0f/s; ratio %.2f to raw, %.2f to raw with a follower\n",
			what, writers, w, r.raw, r.rawf, r.tl, r.tl/r.raw, r.tl/r.rawf)
	}
}

// rawSubjectPrefix and rawFollowSubjectPrefix are the raw sides' subject
// prefixes, as long as events.SubjectPrefix.
const (
	rawSubjectPrefix       = "rawevents.conn."
	rawFollowSubjectPrefix = "rawfollow.conn."
)

// benchSide is one way of appending: raw JetStream or tokenline's Store.
type benchSide struct {
	name string
	ids  []string
	seq  []uint64 // last stream sequence per subject, tracked client-side
	step []int    // steady-state events appended per subject
	// prefix is a raw side's subject prefix; sent counts its publishes.
	prefix string
	sent   atomic.Uint64
	// append writes the next event of subject i.
	append func(ctx context.Context, i int) error
	// settle, if set, returns once the side's work for the events it
	// appended up to subject i's last one is done (tokenline: the Runner
	// has taken it from the stream); run times it with the chunk, so that the next
	// chunk, the other side's, does not do it.
	settle func(ctx context.Context, i int) error
}

type benchEnv struct {
	raw, tl *benchSide
	rawf    *benchSide     // raw publishes on a stream a bare follower reads
	tx      *benchSide     // tl's subjects, written by whole transitions
	cursor  map[[3]any]int // (side, writers, writer) -> next index into its subjects
}

func newBenchEnv(b *testing.B, subjects int) *benchEnv {
	b.Helper()
	srv := natstest.StartOn(b, b.TempDir(), -1)
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL(), nats.Name(name)) // TCP, not in-process
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	ctx := context.Background()
	status := projections.NewStatus()
	store, err := jsstore.Open(ctx, connect("tokenline"), jsstore.Config{
		Actor: "instance/api-1", Logger: slog.New(slog.DiscardHandler), Seed: status.Confirmed,
		FollowConn: connect("tokenline/projections"), // as cmd/tokenline/app opens it
	})
	if err != nil {
		b.Fatal(err)
	}
	runner := wireProduction(b, store, status)
	js, err := jetstream.New(connect("raw"))
	if err != nil {
		b.Fatal(err)
	}
	// The raw side's stream: the store's configuration, its own name and
	// subjects (as long as tokenline's). Not tokenline's stream: there the
	// Runner and its consumer would fold the raw side's events too, work
	// done while the raw side runs that a bare publisher does not cause.
	rawCfg := jsstore.StreamConfig(jsstore.Config{Stream: "RAW"})
	rawCfg.Subjects = []string{rawSubjectPrefix + "*"}
	if _, err := js.CreateStream(ctx, rawCfg); err != nil {
		b.Fatal(err)
	}
	env := &benchEnv{cursor: map[[3]any]int{}}
	newSide := func(name string) *benchSide {
		s := &benchSide{name: name, ids: make([]string, subjects), seq: make([]uint64, subjects), step: make([]int, subjects)}
		for i := range s.ids {
			s.ids[i] = uuid.NewString()
		}
		return s
	}
	tok := domain.Tokens{AccessToken: "at-0123456789abcdef0123456789abcdef", RefreshToken: "rt-0123456789abcdef0123456789abcdef",
		Expiry: time.Now().Add(time.Hour), Scopes: []string{"users:read", "expenses:write"}}
	info := tok.Info()
	setup := []domain.Payload{
		domain.ConnectionCreated{Provider: "pleo", Scopes: []string{"users:read", "expenses:write"}, Config: map[string]string{"team": "finance"}},
		domain.AuthorisationStarted{AttemptID: "att_7Yq2c1", Scopes: []string{"users:read", "expenses:write"}, ExpiresAt: time.Now().Add(10 * time.Minute)},
		domain.AuthorisationCompleted{AttemptID: "att_7Yq2c1", Tokens: info},
	}
	refresh := func(step int) domain.Payload { // the refresh cycle, as Decide builds it
		if step%2 == 0 {
			return domain.RefreshStarted{Attempt: 1, LeaseUntil: time.Now().Add(30 * time.Second), Trigger: domain.TriggerSchedule, RefreshTokenFP: info.RefreshTokenFP}
		}
		return domain.RefreshSucceeded{Attempt: 1, Tokens: info, Rotated: true}
	}

	// tokenline: Store.Append, one event per command.
	env.tl = newSide("tokenline")
	tl := env.tl
	tl.append = func(ctx context.Context, i int) error {
		out, err := store.Append(ctx, tl.ids[i], tl.seq[i], domain.Event{Payload: refresh(tl.step[i])})
		if err != nil {
			return err
		}
		tl.seq[i] = out.Seq
		tl.step[i]++
		return nil
	}

	// The Runner takes tokenline's events from the stream, in stream
	// order: once it has the last one appended, it has them all.
	tl.settle = func(ctx context.Context, i int) error {
		if err := waitFor(ctx, func() bool { return runner.Position() >= tl.seq[i] }); err != nil {
			return fmt.Errorf("the Runner did not confirm event %d of %s: %w", tl.seq[i], tl.ids[i], err)
		}
		return nil
	}

	// tokenline, whole transitions: load, decide, append.
	env.tx = &benchSide{name: "tokenline-transition", ids: tl.ids, seq: tl.seq, step: tl.step, settle: tl.settle}
	tx := env.tx
	tx.append = func(ctx context.Context, i int) error {
		c, _, err := store.LoadForAppend(ctx, tx.ids[i])
		if err != nil {
			return err
		}
		var cmd domain.Command = domain.StartRefresh{LeaseUntil: time.Now().Add(30 * time.Second), Trigger: domain.TriggerSchedule, RefreshTokenFP: c.Tokens.RefreshTokenFP}
		if c.State == domain.StateRefreshing {
			cmd = domain.SucceedRefresh{Tokens: info, Rotated: true}
		}
		p, err := domain.Decide(&c, cmd)
		if err != nil {
			return err
		}
		out, err := store.Append(ctx, tx.ids[i], c.Version, domain.Event{Payload: p})
		if err != nil {
			return err
		}
		tx.seq[i] = out.Seq
		tx.step[i]++
		return nil
	}

	// raw: the same bytes tokenline writes, published as they are.
	env.raw = newSide("raw")
	rawBodies := make([][2][]byte, subjects)
	for i := range rawBodies {
		for j := range 2 {
			// With a prevhash, as tokenline writes them (same size; the
			// raw side does not compute it).
			body, err := events.Encode(domain.Event{ID: uuid.NewString(), ConnectionID: env.raw.ids[i], Time: time.Now(), Actor: "instance/api-1", Payload: refresh(j), Link: domain.ChainLink{Chained: true}})
			if err != nil {
				b.Fatal(err)
			}
			rawBodies[i][j] = body
		}
	}
	rawPublish := func(ctx context.Context, side *benchSide, i int, body []byte) error {
		m := &nats.Msg{Subject: side.prefix + side.ids[i], Data: body, Header: nats.Header{}}
		m.Header[jetstream.MsgIDHeader] = []string{uuid.NewString()}
		m.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(side.seq[i], 10)}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			return err
		}
		side.seq[i] = ack.Sequence
		side.sent.Add(1)
		return nil
	}
	rawAppend := func(side *benchSide, prefix string) func(ctx context.Context, i int) error {
		side.prefix = prefix
		return func(ctx context.Context, i int) error {
			if err := rawPublish(ctx, side, i, rawBodies[i][side.step[i]%2]); err != nil {
				return err
			}
			side.step[i]++
			return nil
		}
	}
	env.raw.append = rawAppend(env.raw, rawSubjectPrefix)

	// raw with a follower: the same publishes on a third stream, which an
	// ordered consumer on a connection of its own follows, as tokenline's
	// Runner does, counting the messages and nothing more (no metadata,
	// no decoding, no projection). A chunk ends when it has as many as
	// were published.
	env.rawf = newSide("raw+follower")
	env.rawf.append = rawAppend(env.rawf, rawFollowSubjectPrefix)
	rawfCfg := jsstore.StreamConfig(jsstore.Config{Stream: "RAWFOLLOW"})
	rawfCfg.Subjects = []string{rawFollowSubjectPrefix + "*"}
	rawfStream, err := js.CreateStream(ctx, rawfCfg)
	if err != nil {
		b.Fatal(err)
	}
	followJS, err := jetstream.New(connect("raw/follower"))
	if err != nil {
		b.Fatal(err)
	}
	follower, err := followJS.OrderedConsumer(ctx, rawfStream.CachedInfo().Config.Name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var followed atomic.Uint64
	cc, err := follower.Consume(func(jetstream.Msg) { followed.Add(1) }, jetstream.PullMaxMessages(1000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	env.rawf.settle = func(ctx context.Context, _ int) error {
		sent := env.rawf.sent.Load()
		if err := waitFor(ctx, func() bool { return followed.Load() >= sent }); err != nil {
			return fmt.Errorf("the raw follower did not take %d messages: %w", sent, err)
		}
		return nil
	}

	// Untimed setup: create and authorise every connection on every side.
	start := time.Now()
	parallel(b, subjects, 16, func(i int) error {
		for _, p := range setup {
			out, err := store.Append(ctx, tl.ids[i], tl.seq[i], domain.Event{Payload: p})
			if err != nil {
				return err
			}
			tl.seq[i] = out.Seq
			for _, side := range [...]*benchSide{env.raw, env.rawf} {
				body, err := events.Encode(domain.Event{ID: uuid.NewString(), ConnectionID: side.ids[i], Time: time.Now(), Actor: "instance/api-1", Payload: p})
				if err != nil {
					return err
				}
				if err := rawPublish(ctx, side, i, body); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if c, err := store.Load(ctx, tl.ids[subjects-1]); err != nil || c.State != domain.StateActive {
		b.Fatalf("setup: %+v %v", c, err)
	}
	b.Logf("setup: %d connections per side in %v", subjects, time.Since(start).Round(time.Millisecond))
	return env
}

// waitFor polls done every 50 µs until it holds or ctx ends.
func waitFor(ctx context.Context, done func() bool) error {
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Microsecond):
		}
	}
	return nil
}

// parallel runs fn(0..n-1) on g goroutines, each taking indices i%g == k.
func parallel(b *testing.B, n, g int, fn func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make([]error, g)
	for k := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n && errs[k] == nil; i += g {
				errs[k] = fn(i)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// run appends n events with the given number of writers and returns how long
// it took. Writer w owns the subjects i with i%writers == w and cycles
// through them; its position carries over from one call to the next.
func (env *benchEnv) run(b *testing.B, side *benchSide, writers, n int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	subjects := len(side.ids)
	var wg sync.WaitGroup
	errs := make([]error, writers)
	cursors := make([]int, writers)
	last := make([]int, writers) // the subject each writer appended to last
	for w := range writers {
		cursors[w] = env.cursor[[3]any{side, writers, w}]
		last[w] = -1
	}
	start := time.Now()
	for w := range writers {
		ops := n / writers
		if w < n%writers {
			ops++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			owned := (subjects - w + writers - 1) / writers // subjects w, w+writers, ...
			c := cursors[w]
			for range ops {
				if err := side.append(ctx, w+c*writers); err != nil {
					errs[w] = err
					return
				}
				last[w] = w + c*writers
				c = (c + 1) % owned
			}
			cursors[w] = c
		}()
	}
	wg.Wait()
	if side.settle != nil {
		newest := -1 // the subject whose last event has the highest sequence
		for _, i := range last {
			if i >= 0 && (newest < 0 || side.seq[i] > side.seq[newest]) {
				newest = i
			}
		}
		if newest >= 0 && !slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
			if err := side.settle(ctx, newest); err != nil {
				b.Fatalf("%s: %v", side.name, err)
			}
		}
	}
	took := time.Since(start)
	for w := range writers {
		if errs[w] != nil {
			b.Fatalf("%s writer %d: %v", side.name, w, errs[w])
		}
		env.cursor[[3]any{side, writers, w}] = cursors[w]
	}
	return took
}

// wireProduction gives the store what cmd/tokenline/app gives it in
// production, so that every timed append pays for it: the append hook feeds
// the status projection, whose observers are the gate, the store's own
// staleness check (Saw) and the lifecycle's scheduler, and a projections
// Runner follows the stream (confirming each event a second time and
// feeding the metrics) with snapshots and positions on JetStream.
func wireProduction(b *testing.B, store *jsstore.Store, status *projections.Status) *projections.Runner {
	b.Helper()
	gate := projections.NewGate(projections.GateOptions{})
	svc, err := lifecycle.New(lifecycle.Config{
		Store: store, Vault: memory.NewVault(), Gate: gate, Attempts: memory.NewAttempts(),
		Providers: map[string]domain.TokenEndpoint{"pleo": memory.NewTokenEndpoint(memory.TokenEndpointConfig{})},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	status.OnChange(gate.Observe)
	status.OnChange(func(_, after *domain.Connection) { store.Saw(after.ID, after.Version) })
	status.OnChange(svc.Observe)
	store.OnAppend(func(e domain.Event) { _, _ = status.Apply(e) })
	ctx := context.Background()
	cp, err := store.Checkpoints(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// The Runner feeds the metrics with every live event, as
	// cmd/tokenline/app does (Metrics.ObserveEvent).
	metrics, err := httpapi.NewMetrics(prometheus.NewRegistry(), httpapi.MetricsConfig{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := projections.NewRunner(projections.RunnerConfig{Source: store, Checkpoints: cp, Status: status,
		Logger: slog.New(slog.DiscardHandler), OnEvent: metrics.ObserveEvent})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if err := r.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(ctx) })
	return r
}
