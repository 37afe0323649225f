package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

func startRunner(t *testing.T, cfg RunnerConfig) *Runner {
	t.Helper()
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = -1
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = -1
	}
	if st, ok := cfg.Source.(*jsstore.Store); ok && cfg.Checkpoints == nil {
		cfg.Checkpoints = checkpoints(t, st)
	}
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func checkpoints(t testing.TB, st *jsstore.Store) *jsstore.Checkpoints {
	t.Helper()
	cp, err := st.Checkpoints(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// wire connects a store, a status projection and a gate as cmd/tokenline
// does: the gate follows the status, and the store's appends reach the
// status before Append returns.
func wire(st *jsstore.Store, g *Gate) *Status {
	status := NewStatus()
	status.OnChange(g.Observe)
	st.OnAppend(func(e domain.Event) { _, _ = status.Apply(e) })
	return status
}

// gatedStore starts a server and opens instance/a's store on it, with a
// gate that its appends feed (wire) and a driver.
func gatedStore(t *testing.T) (*jsstore.Store, *Gate, *driver) {
	t.Helper()
	st := openStore(t, natstest.Start(t, ""), "instance/a")
	g := NewGate(GateOptions{Now: testClock})
	wire(st, g)
	return st, g, newDriver(t, st)
}

// countingSource counts the records a runner reads (not those it follows).
type countingSource struct {
	Source
	read atomic.Int64
}

func (c *countingSource) Read(ctx context.Context, r events.Range, fn func(*events.Record) error) (uint64, error) {
	return c.Source.Read(ctx, r, func(rec *events.Record) error {
		c.read.Add(1)
		return fn(rec)
	})
}

// waitCaughtUp waits until the runner applied the stream's last sequence.
func waitCaughtUp(t *testing.T, r *Runner) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lag, err := r.Lag(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runner still %d behind", lag)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rejectionLoop brings an active connection to the point where the next
// 401 on its current token is terminal (a refresh made because of a
// rejection), with the gate open. It returns the live access token.
func rejectionLoop(t *testing.T, d *driver, g *Gate, id string) string {
	t.Helper()
	d.must(id, domain.StartRefresh{LeaseUntil: d.now.Add(time.Minute), Trigger: domain.TriggerAccessRejected})
	d.gen[id]++
	tok := tokens(id, d.gen[id], time.Now())
	if err := g.SetToken(id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	d.must(id, domain.SucceedRefresh{Tokens: tok.Info()})
	return tok.AccessToken
}

// The gate on the instance that appends a terminal event is closed before
// Append returns: concurrent callers never get a token after that.
func TestGateClosedWhenTerminalAppendReturns(t *testing.T) {
	st, g, d := gatedStore(t)

	for round := 0; round < 8; round++ {
		id := d.create()
		d.activate(id)
		var tok string
		if round%2 == 0 {
			tok = rejectionLoop(t, d, g, id) // gate open until the terminal event
		} else {
			tok = accessToken(id, d.gen[id])
			if err := g.SetToken(id, domain.Fingerprint(tok), tok); err != nil {
				t.Fatal(err)
			}
		}
		mustOpen(t, g, id, tok)

		var terminalDone atomic.Bool
		var stop atomic.Bool
		var granted, late atomic.Int64
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					runtime.Gosched()
					after := terminalDone.Load()
					got, err := g.Check(id)
					if err == nil {
						if got != tok {
							t.Errorf("gate handed out %q, want %q", got, tok)
						}
						granted.Add(1)
						if after {
							late.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(2 * time.Millisecond)
		c, _ := st.Load(ctxT(t), id)
		if round%2 == 0 {
			// A 401 on the token a rejection-triggered refresh just issued.
			d.must(id, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: c.Tokens.AccessTokenFP})
		} else {
			// The lifecycle closes the gate before deciding the refresh is
			// dead, then appends refresh.started and refresh.failed.
			d.must(id, domain.StartRefresh{LeaseUntil: d.now.Add(time.Minute)})
			d.must(id, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant", HTTPStatus: 400})
		}
		terminalDone.Store(true)
		time.Sleep(2 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		if late.Load() != 0 {
			t.Fatalf("round %d: %d calls got a token after the terminal append returned", round, late.Load())
		}
		if round%2 == 0 && granted.Load() == 0 {
			t.Fatalf("round %d: callers never got a token before the terminal event (test is vacuous)", round)
		}
		want := domain.ReasonAccessTokenRejected
		if round%2 == 1 {
			want = domain.ReasonInvalidGrant
		}
		mustGateErr(t, g, id, domain.StateUnauthenticated, want, domain.DetailUnauthenticated)
	}
}

// Close shuts the gate before anything is appended.
func TestGateCloseAheadOfAppend(t *testing.T) {
	st, g, d := gatedStore(t)
	id := d.create()
	tok := d.activate(id)
	_ = g.SetToken(id, domain.Fingerprint(tok), tok)
	mustOpen(t, g, id, tok)
	c, _ := st.Load(ctxT(t), id)
	g.CloseAfter(id, domain.ReasonAccessTokenRejected, c.Version)
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	// The append fails (conflict): the lifecycle reopens.
	if _, err := st.Append(ctxT(t), id, 1, domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"x": "y"}}}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append: %v", err)
	}
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	g.Reopen(id)
	mustOpen(t, g, id, tok)
}

// Another instance's gate closes when the terminal event reaches it through
// its runner's subscription.
func TestGateClosesOnSecondInstance(t *testing.T) {
	srv := natstest.Start(t, "")
	a := openStore(t, srv, "instance/a")
	ga := NewGate(GateOptions{Now: testClock})
	wire(a, ga)
	b := openStore(t, srv, "instance/b")
	gb := NewGate(GateOptions{Now: testClock})
	rb := startRunner(t, RunnerConfig{Source: b, Status: wire(b, gb), Name: "status-b"})
	d := newDriver(t, a)

	var lags, fromStart, appendTimes []time.Duration
	for round := 0; round < 15; round++ {
		id := d.create()
		d.activate(id)
		tok := rejectionLoop(t, d, ga, id)
		// Instance b learns of the new token from the stream and loads it
		// from the vault.
		waitCaughtUp(t, rb)
		mustGateErr(t, gb, id, domain.StateActive, "", domain.DetailTokenNotLoaded)
		_ = gb.SetToken(id, domain.Fingerprint(tok), tok)
		mustOpen(t, gb, id, tok)

		c, _ := a.Load(ctxT(t), id)
		p, err := domain.Decide(&c, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: c.Tokens.AccessTokenFP})
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		if _, err := a.Append(ctxT(t), id, c.Version, domain.Event{Payload: p}); err != nil {
			t.Fatal(err)
		}
		appended := time.Now()
		appendTimes = append(appendTimes, appended.Sub(started))
		mustGateErr(t, ga, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
		for {
			if _, err := gb.Check(id); err != nil {
				lags = append(lags, time.Since(appended))
				fromStart = append(fromStart, time.Since(started))
				mustGateErr(t, gb, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
				break
			}
			if time.Since(appended) > 10*time.Second {
				t.Fatal("instance b's gate never closed")
			}
		}
	}
	for _, l := range [][]time.Duration{lags, fromStart, appendTimes} {
		slices.Sort(l)
	}
	t.Logf("second instance's gate closed %v (median; min %v, max %v) after the terminal Append returned on the first, %v (median; max %v) after it started; Append itself took %v (median)",
		lags[len(lags)/2], lags[0], lags[len(lags)-1], fromStart[len(fromStart)/2], fromStart[len(fromStart)-1], appendTimes[len(appendTimes)/2])
}

// populate runs a random scenario of n connections and steps commands.
func populate(t *testing.T, d *driver, n, steps int, seed uint64) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = d.create()
		if i%5 != 0 {
			d.activate(ids[i])
		}
	}
	for range steps {
		d.step(rng, ids[rng.IntN(n)])
	}
	return ids
}

func TestRunnerRestartResumesFromPosition(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	cp := checkpoints(t, st)
	d := newDriver(t, st)
	ids := populate(t, d, 8, 40, 1)
	last1, _ := st.LastSeq(ctxT(t))

	src1 := &countingSource{Source: st}
	r1, err := NewRunner(RunnerConfig{Source: src1, Checkpoints: cp, SnapshotEvery: -1, SnapshotInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.WaitReady(ctxT(t)); err == nil {
		t.Fatal("WaitReady before Start")
	}
	if err := r1.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := r1.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := src1.read.Load(); n != int64(last1) {
		t.Fatalf("first run read %d records, stream at %d", n, last1)
	}
	if lag, err := r1.Lag(ctxT(t)); err != nil || lag != 0 {
		t.Fatalf("lag %d %v", lag, err)
	}
	if err := r1.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if p, err := cp.Position(ctxT(t), "status"); err != nil || p != last1 {
		t.Fatalf("recorded position %d, %v; want %d", p, err, last1)
	}

	// More events while no runner runs.
	rng := rand.New(rand.NewPCG(5, 6))
	for range 15 {
		d.step(rng, ids[rng.IntN(len(ids))])
	}
	last2, _ := st.LastSeq(ctxT(t))

	src2 := &countingSource{Source: st}
	r2 := startRunner(t, RunnerConfig{Source: src2, Checkpoints: cp})
	if n := src2.read.Load(); n != int64(last2-last1) {
		t.Fatalf("after restart: read %d records, want only the tail, %d", n, last2-last1)
	}
	built, pos, _, err := Build(ctxT(t), st)
	if err != nil || pos != last2 {
		t.Fatalf("build: %v at %d", err, pos)
	}
	if got, want := r2.Status().List(), built.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored+tail status differs from a rebuild:\n got %+v\nwant %+v", got, want)
	}
	for _, id := range ids {
		got, _ := r2.Status().Connection(id)
		want, err := st.Load(ctxT(t), id)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: status aggregate\n %+v\nstore\n %+v (%v)", id, got, want, err)
		}
	}
	// Applying everything again changes nothing.
	before := r2.Status().List()
	_, err = st.Read(ctxT(t), events.Range{}, func(rec *events.Record) error {
		if rec.Err == nil {
			if changed, _ := r2.Status().Apply(rec.Event); changed {
				t.Errorf("seq %d applied twice", rec.Seq)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, r2.Status().List()) {
		t.Fatal("re-applying the stream changed the status")
	}
	if err := r2.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// A third start with nothing new reads nothing.
	src3 := &countingSource{Source: st}
	r3 := startRunner(t, RunnerConfig{Source: src3, Checkpoints: cp})
	if n := src3.read.Load(); n != 0 || !reflect.DeepEqual(r3.Status().List(), built.List()) {
		t.Fatalf("third start read %d records", n)
	}
}

func TestRestartEqualsLive(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	g := NewGate(GateOptions{Now: testClock})
	r := startRunner(t, RunnerConfig{Source: st, Status: wire(st, g), SnapshotEvery: 100})
	d := newDriver(t, st)
	ids := populate(t, d, 50, 500, 2)
	waitCaughtUp(t, r)
	live := r.Status().List()
	if len(live) != 50 {
		t.Fatalf("live status has %d connections", len(live))
	}
	built, _, skipped, err := Build(ctxT(t), st)
	if err != nil || skipped != 0 {
		t.Fatalf("build: %v, skipped %d", err, skipped)
	}
	if !reflect.DeepEqual(live, built.List()) {
		t.Fatal("live status differs from a rebuild")
	}
	states := map[domain.State]int{}
	for _, s := range live {
		states[s.State]++
		want, _ := st.Load(ctxT(t), s.ID)
		if s.Version != want.Version || s.State != want.State || s.Events != want.Events {
			t.Fatalf("%s: status %s v%d, store %s v%d", s.ID, s.State, s.Version, want.State, want.Version)
		}
	}
	t.Logf("scenario: %d events over %d connections, states %v", len(built.List()), len(ids), states)
	// A second instance starting from the snapshots (written every 100
	// records) and the tail, with a fresh gate, agrees with the live one
	// on every connection, gate included.
	g2 := NewGate(GateOptions{Now: testClock})
	st2 := openStore(t, srv, "instance/b")
	r2 := startRunner(t, RunnerConfig{Source: st2, Status: wire(st2, g2)})
	if !reflect.DeepEqual(live, r2.Status().List()) {
		t.Fatal("restarted status differs")
	}
	for _, id := range ids {
		_, err1 := g.Check(id)
		_, err2 := g2.Check(id)
		if fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("%s: live gate %v, restarted gate %v", id, err1, err2)
		}
	}
}

func TestPoisonRecordsSkipped(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st, err := jsstore.Open(ctxT(t), nc, jsstore.Config{Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	r := startRunner(t, RunnerConfig{Source: st, Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))})
	d := newDriver(t, st)
	id := d.create()
	js, _ := jetstream.New(nc)
	for _, junk := range [][]byte{
		[]byte("\x00\xffnot json at all"),
		[]byte(`{"specversion":"1.0","id":"x","source":"/x","type":"tokenline.connection.exploded","subject":"` + id + `","time":"2026-01-01T00:00:00Z","schemaversion":1,"data":{}}`),
	} {
		if _, err := js.Publish(ctxT(t), events.Subject(id), junk); err != nil {
			t.Fatal(err)
		}
	}
	// A well-formed event the transition table refuses (authorisation
	// completed while unauthenticated): the store appends without deciding.
	last, err := st.Stream().GetLastMsgForSubject(ctxT(t), events.Subject(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctxT(t), id, last.Sequence, domain.Event{Payload: domain.AuthorisationCompleted{AttemptID: "nope"}}); err != nil {
		t.Fatal(err)
	}
	d.must(id, domain.Update{Config: map[string]string{"after": "poison"}})
	waitCaughtUp(t, r)
	logMu.Lock()
	logged := logs.String()
	logMu.Unlock()
	if strings.Count(logged, "projection skipped a record") != 3 || !strings.Contains(logged, "seq=2") || strings.Contains(logged, "not json at all") || strings.Contains(logged, `"data"`) {
		t.Fatalf("skip log:\n%s", logged)
	}
	s, ok := r.Status().Connection(id)
	if !ok || s.Config["after"] != "poison" || s.Events != 2 {
		t.Fatalf("status after poison: %+v", s)
	}
	c, _ := st.Load(ctxT(t), id)
	if s.Version != c.Version {
		t.Fatalf("status version %d, store %d", s.Version, c.Version)
	}
	built, _, skipped, err := Build(ctxT(t), st)
	if err != nil || skipped != 3 || !reflect.DeepEqual(built.List(), r.Status().List()) {
		t.Fatalf("build over poison: %v skipped %d", err, skipped)
	}
	// A restart over the poison is fine too.
	if err := r.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r2 := startRunner(t, RunnerConfig{Source: st})
	if !reflect.DeepEqual(r2.Status().List(), built.List()) {
		t.Fatal("restart over poison differs")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The wiring of cmd/tokenline: this instance's appends reach Status and Gate
// through the OnAppend hook, possibly before another instance's earlier
// event reaches the runner. The projections still converge on the stream.
func TestOwnWritesBeforeOtherInstancesEventConverge(t *testing.T) {
	srv := natstest.Start(t, "")
	a := openStore(t, srv, "instance/a")
	b := openStore(t, srv, "instance/b")
	g := NewGate(GateOptions{Now: testClock})
	status := wire(a, g)
	r := startRunner(t, RunnerConfig{Source: a, Status: status})
	da, db := newDriver(t, a), newDriver(t, b)
	id := da.create()
	da.activate(id)
	waitCaughtUp(t, r)

	r.stopFollowing() // the runner falls behind
	db.now = da.now
	db.must(id, domain.Update{Config: map[string]string{"by": "b"}}) // b's event N
	da.now = db.now
	da.must(id, domain.StartRefresh{LeaseUntil: da.now.Add(time.Minute)}) // a's N+1, hook first
	if s, _ := status.Connection(id); s.State != domain.StateRefreshing || s.Config["by"] == "b" {
		t.Fatalf("before the runner catches up: %+v", s)
	}
	if err := r.follow(r.runCtx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, r)
	built, _, _, err := Build(ctxT(t), a)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(status.List(), built.List()) {
		t.Fatalf("status diverged from the stream:\n%+v\n%+v", status.List(), built.List())
	}
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
}

// gcSource reads the garbage collector's setting while a read runs.
type gcSource struct {
	Source
	during []int
}

func (g *gcSource) Read(ctx context.Context, r events.Range, fn func(*events.Record) error) (uint64, error) {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	g.during = append(g.during, p)
	return g.Source.Read(ctx, r, fn)
}

// A Runner starts with RunnerConfig.CatchUpGCPercent (the catch-up reads
// with it) and restores the setting once it is ready; a setting below the
// current one, or 0, leaves it alone.
func TestRunnerCatchUpGCPercent(t *testing.T) {
	st := openStore(t, natstest.Start(t, ""), "instance/a")
	d := newDriver(t, st)
	for range 3 {
		d.create()
	}
	prev := debug.SetGCPercent(150)
	defer debug.SetGCPercent(prev)
	for _, c := range []struct{ percent, want int }{{777, 777}, {120, 150}, {0, 150}} {
		src := &gcSource{Source: st}
		r := startRunner(t, RunnerConfig{Source: src, Status: NewStatus(), Name: fmt.Sprintf("gc-%d", c.percent), CatchUpGCPercent: c.percent})
		if len(src.during) != 1 || src.during[0] != c.want {
			t.Fatalf("%+v: setting during the catch-up %v", c, src.during)
		}
		if p := debug.SetGCPercent(150); p != 150 {
			t.Fatalf("%+v: setting once ready %d, want it restored (150)", c, p)
		}
		r.Close(ctxT(t))
	}
}

// After a snapshot, a short tail is replayed while the observers are
// seeded from the snapshot: the gate, the observers seeded at once and
// the status agree with a rebuild from the stream, and every connection
// is seeded exactly once.
func TestShortTailReplayedWhileSeeding(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	cp := checkpoints(t, st)
	d := newDriver(t, st)
	ids := populate(t, d, 40, 120, 3)
	r1 := startRunner(t, RunnerConfig{Source: st, Checkpoints: cp})
	if err := r1.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	for i := range 12 { // 12 records: fewer than half the 40 connections
		d.step(rng, ids[i%4])
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	g := NewGate(GateOptions{Now: testClock})
	status := NewStatus()
	seeded := map[string]int{}
	told := map[string]uint64{}
	status.OnChangeSeeded(func(_, after *domain.Connection) { told[after.ID] = after.Version }, func(conns []*domain.Connection) {
		for _, c := range conns {
			seeded[c.ID]++
			told[c.ID] = c.Version
		}
	})
	status.OnChange(g.Observe)
	r2 := startRunner(t, RunnerConfig{Source: st, Checkpoints: cp, Status: status,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))})
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if !strings.Contains(out, "records=12") || !strings.Contains(out, "seeded_during_read=true") {
		t.Fatalf("the tail was not replayed while seeding:\n%s", out)
	}
	g2 := NewGate(GateOptions{Now: testClock})
	built := NewStatus()
	built.OnChange(g2.Observe)
	startRunner(t, RunnerConfig{Source: st, Status: built, Name: "rebuilt"}) // no checkpoints: from sequence 1
	if got, want := r2.Status().List(), built.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored+tail status differs from a rebuild")
	}
	for _, c := range built.List() {
		if seeded[c.ID] != 1 || told[c.ID] != c.Version {
			t.Fatalf("%s: seeded %d times, last told v%d, want once and v%d", c.ID, seeded[c.ID], told[c.ID], c.Version)
		}
		_, err1 := g.Check(c.ID)
		_, err2 := g2.Check(c.ID)
		if fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("%s: gate %v, rebuilt gate %v", c.ID, err1, err2)
		}
	}
}

// TestSnapshotCadenceScalesWithConnections checks that the records between
// two snapshot requests are SnapshotEvery or half the connections,
// whichever is more: with many connections a snapshot (every connection
// written) is not requested every SnapshotEvery records.
func TestSnapshotCadenceScalesWithConnections(t *testing.T) {
	const conns, per = 200, 10
	for _, tc := range []struct{ every, want int }{
		{10, (conns*per - conns) / (conns / 2)}, // half the connections: every 100
		{500, (conns*per - conns) / 500},        // SnapshotEvery is more
	} {
		rng := rand.New(rand.NewPCG(4, 4))
		lives := make([][]domain.Event, conns)
		for i := range lives {
			lives[i] = lifeEvents(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), per, rng, time.Now().Add(-24*time.Hour))
		}
		r, err := NewRunner(RunnerConfig{Source: (*jsstore.Store)(nil), SnapshotEvery: tc.every, SnapshotInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		var seq uint64
		requests := 0
		for step := range per {
			if step == 1 {
				// Every connection created: count from here, from a
				// snapshot just taken.
				r.sinceSnap, requests = 0, 0
			}
			for _, l := range lives {
				seq++
				e := l[step]
				e.Seq = seq
				r.handle(&events.Record{Seq: seq, Subject: events.Subject(e.ConnectionID), Event: e}, false)
				select {
				case <-r.snapReq:
					requests++
				default:
				}
			}
		}
		if r.Status().size() != conns || requests != tc.want {
			t.Fatalf("SnapshotEvery %d, %d connections: %d snapshot requests over %d records, want %d",
				tc.every, r.Status().size(), requests, conns*per-conns, tc.want)
		}
	}
}

// knownCounting counts the records FollowKnown took from known instead of
// decoding.
type knownCounting struct {
	*jsstore.Store
	hits atomic.Int64
}

func (k *knownCounting) FollowKnown(ctx context.Context, from uint64, known func(uint64) (domain.Event, bool), fn func(*events.Record)) (func(), error) {
	return k.Store.FollowKnown(ctx, from, func(seq uint64) (domain.Event, bool) {
		e, ok := known(seq)
		if ok {
			k.hits.Add(1)
		}
		return e, ok
	}, fn)
}

// The wiring of cmd/tokenline with the Runner caught up: an own append on
// the confirmed state is confirmed by its acknowledgement (Confirmed has it
// before the Runner does), the Runner takes it back from the Status instead
// of decoding its message, OnEvent still sees every event once in stream
// order, and the projection equals one built from the stream.
func TestRunnerTakesOwnAppendsConfirmedByTheirAcknowledgement(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	src := &knownCounting{Store: st}
	g := NewGate(GateOptions{Now: testClock})
	status := wire(st, g)
	var mu sync.Mutex
	var seen []uint64
	r := startRunner(t, RunnerConfig{Source: src, Status: status, OnEvent: func(e domain.Event) {
		mu.Lock()
		seen = append(seen, e.Seq)
		mu.Unlock()
	}})
	d := newDriver(t, st)
	id := d.create()
	d.activate(id)
	waitCaughtUp(t, r)
	// The create and the activation may have been taken from their
	// acknowledgement too (a CI run counted 11); count only the cycles.
	src.hits.Store(0)
	const cycles = 5
	for range cycles {
		r.stopFollowing() // the Runner does not see the append until it follows again
		e := d.must(id, domain.StartRefresh{LeaseUntil: d.now.Add(time.Minute)})
		if c, _ := status.Confirmed(id); c.Version != e.Seq {
			t.Fatalf("own append on the confirmed state not confirmed by its acknowledgement: v%d, appended %d", c.Version, e.Seq)
		}
		if err := r.follow(r.runCtx); err != nil {
			t.Fatal(err)
		}
		d.gen[id]++
		d.must(id, domain.SucceedRefresh{Tokens: tokens(id, d.gen[id], d.now).Info()})
	}
	waitCaughtUp(t, r)
	// Each refresh.started was appended while the Runner was not
	// following; a refresh.succeeded may reach it before its append's
	// hook has run (it is then decoded, and the hook finds it folded).
	if got := src.hits.Load(); got < cycles || got > 2*cycles {
		t.Fatalf("the Runner took %d own events from the acknowledgement, want %d to %d", got, cycles, 2*cycles)
	}
	h, err := st.History(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var want []uint64
	for _, e := range h {
		if e.Seq > seen[0]-1 {
			want = append(want, e.Seq)
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("OnEvent saw %v, the stream holds %v", seen, want)
	}
	built, _, _, err := Build(ctxT(t), st)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(status.List(), built.List()) {
		t.Fatalf("status diverged from the stream:\n%+v\n%+v", status.List(), built.List())
	}
}
