package jsstore_test

import (
	"context"
	"errors"
	"strconv"
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
	"github.com/tokenline/tokenline/projections"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, nc *nats.Conn) *jsstore.Store {
	t.Helper()
	st, err := jsstore.Open(ctxT(t), nc, jsstore.Config{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openNew starts a NATS server and opens a store on it.
func openNew(t *testing.T) *jsstore.Store {
	t.Helper()
	return open(t, natstest.Start(t, "").Connect(t))
}

// expectHistory checks that the connection's history has n events, and
// returns it.
func expectHistory(t *testing.T, st *jsstore.Store, id string, n int) []domain.Event {
	t.Helper()
	h, err := st.History(ctxT(t), id)
	if err != nil || len(h) != n {
		t.Fatalf("history has %d events (%v), want %d", len(h), err, n)
	}
	return h
}

func ev(p domain.Payload) domain.Event { return domain.Event{Payload: p} }

// decideAppend decides cmd against the loaded state and appends the event.
func decideAppend(t *testing.T, st *jsstore.Store, id string, cmd domain.Command) domain.Event {
	t.Helper()
	ctx := ctxT(t)
	c, err := st.Load(ctx, id)
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		t.Fatal(err)
	}
	p, err := domain.Decide(&c, cmd)
	if err != nil {
		t.Fatalf("decide %T: %v", cmd, err)
	}
	out, err := st.Append(ctx, id, c.Version, ev(p))
	if err != nil {
		t.Fatalf("append %T: %v", cmd, err)
	}
	return out
}

func create(t *testing.T, st *jsstore.Store) string {
	id := uuid.NewString()
	decideAppend(t, st, id, domain.Create{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"team": "a"}})
	return id
}

func TestAppendLoadRoundTrip(t *testing.T) {
	srv := natstest.Start(t, "")
	st := open(t, srv.Connect(t))
	id := create(t, st)
	decideAppend(t, st, id, domain.StartAuthorisation{AttemptID: "a1", ExpiresAt: time.Now().Add(time.Minute)})
	tok := domain.Tokens{AccessToken: "at", RefreshToken: "rt", Expiry: time.Now().Add(time.Hour)}
	decideAppend(t, st, id, domain.CompleteAuthorisation{AttemptID: "a1", Tokens: tok.Info()})

	c, err := st.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateActive || c.Config["team"] != "a" || c.Tokens.AccessTokenFP != domain.Fingerprint("at") || c.Events != 3 {
		t.Fatalf("unexpected aggregate: %+v", c)
	}
	// A fresh store (another instance) rebuilds the same state from the stream.
	other := open(t, srv.Connect(t))
	c2, err := other.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if c2.State != c.State || c2.Version != c.Version || c2.Events != c.Events {
		t.Fatalf("rebuilt %+v != cached %+v", c2, c)
	}
	if _, err := st.Load(ctxT(t), uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown connection: %v", err)
	}
	if _, err := st.Load(ctxT(t), "tokenline.>"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("bad id: %v", err)
	}
}

func TestRacingWritersOneWins(t *testing.T) {
	srv := natstest.Start(t, "")
	a := open(t, srv.Connect(t))
	b := open(t, srv.Connect(t))
	id := create(t, a)
	for round := 0; round < 20; round++ {
		c, err := a.Load(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, st := range []*jsstore.Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = st.Append(ctxT(t), id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"round": "x"}}))
			}()
		}
		wg.Wait()
		wins, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, domain.ErrConflict):
				conflicts++
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if wins != 1 || conflicts != 1 {
			t.Fatalf("round %d: wins=%d conflicts=%d", round, wins, conflicts)
		}
	}
	expectHistory(t, b, id, 21)
}

func TestResentEventIsIdempotent(t *testing.T) {
	st := openNew(t)
	id := create(t, st)
	c, _ := st.Load(ctxT(t), id)
	e := domain.Event{ID: uuid.NewString(), Payload: domain.ConnectionUpdated{Config: map[string]string{"k": "v"}}}
	first, err := st.Append(ctxT(t), id, c.Version, e)
	if err != nil {
		t.Fatal(err)
	}
	// The same event again, with the same (now stale) expected sequence: a
	// retry after a lost ack. It is reported as stored, not as a conflict.
	again, err := st.Append(ctxT(t), id, c.Version, e)
	if err != nil {
		t.Fatalf("resend: %v", err)
	}
	if again.Seq != first.Seq {
		t.Fatalf("resend seq %d, first %d", again.Seq, first.Seq)
	}
	// A different event with the stale sequence is a conflict.
	if _, err := st.Append(ctxT(t), id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"k": "w"}})); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append: %v", err)
	}
	expectHistory(t, st, id, 2)
}

func TestStreamRefusesDeleteAndPurge(t *testing.T) {
	st := openNew(t)
	id := create(t, st)
	c, _ := st.Load(ctxT(t), id)
	if err := st.Stream().DeleteMsg(ctxT(t), c.Version); err == nil {
		t.Fatal("delete message succeeded")
	}
	if err := st.Stream().SecureDeleteMsg(ctxT(t), c.Version); err == nil {
		t.Fatal("secure delete succeeded")
	}
	if err := st.Stream().Purge(ctxT(t)); err == nil {
		t.Fatal("purge succeeded")
	}
	if err := st.Stream().Purge(ctxT(t), jetstream.WithPurgeSubject(events.Subject(id))); err == nil {
		t.Fatal("subject purge succeeded")
	}
	info, err := st.Stream().Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if !cfg.DenyDelete || !cfg.DenyPurge || !cfg.AllowDirect || cfg.Storage != jetstream.FileStorage || cfg.MaxAge != 0 || cfg.MaxMsgsPerSubject != -1 || info.State.Msgs != 1 {
		t.Fatalf("stream config/state: %+v %+v", cfg, info.State)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartOn(t, dir, -1)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	st := open(t, nc)
	var ids []string
	for i := 0; i < 5; i++ {
		id := create(t, st)
		decideAppend(t, st, id, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: time.Now().Add(time.Minute)})
		ids = append(ids, id)
	}
	before := map[string]domain.Connection{}
	for _, id := range ids {
		before[id], _ = st.Load(ctxT(t), id)
	}
	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	srv2 := natstest.Start(t, dir)
	st2 := open(t, srv2.Connect(t))
	for _, id := range ids {
		c, err := st2.Load(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		b := before[id]
		if c.State != b.State || c.Version != b.Version || c.Events != b.Events || c.AttemptID != b.AttemptID {
			t.Fatalf("after restart %+v, before %+v", c, b)
		}
	}
}

func TestPoisonMessageSkippedAndAppendsContinue(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	id := create(t, st)
	js, _ := jetstream.New(nc)
	for _, junk := range [][]byte{[]byte("not json"), []byte(`{"specversion":"1.0","type":"tokenline.nope"}`)} {
		if _, err := js.Publish(ctxT(t), events.Subject(id), junk); err != nil {
			t.Fatal(err)
		}
	}
	c, err := st.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateUnauthenticated || c.Events != 1 || st.Skipped(id) != 2 {
		t.Fatalf("after poison: %+v skipped=%d", c, st.Skipped(id))
	}
	decideAppend(t, st, id, domain.Update{Config: map[string]string{"after": "poison"}})
	c, _ = st.Load(ctxT(t), id)
	if c.Config["after"] != "poison" {
		t.Fatal("append after poison lost")
	}
}

func TestLoadSeesOtherInstancesWrites(t *testing.T) {
	srv := natstest.Start(t, "")
	a := open(t, srv.Connect(t))
	b := open(t, srv.Connect(t))
	id := create(t, a)
	if _, err := b.Load(ctxT(t), id); err != nil { // b caches version 1
		t.Fatal(err)
	}
	decideAppend(t, a, id, domain.StartAuthorisation{AttemptID: "x", ExpiresAt: time.Now().Add(time.Minute)})
	c, err := b.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateReauthorising || c.AttemptID != "x" {
		t.Fatalf("stale load: %+v", c)
	}
}

func TestReadAndFollow(t *testing.T) {
	st := openNew(t)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, create(t, st))
	}
	decideAppend(t, st, ids[1], domain.Update{Config: map[string]string{"x": "y"}})
	var seqs []uint64
	last, err := st.Read(ctxT(t), events.Range{}, func(r *events.Record) error {
		if r.Err != nil || r.Event.Seq != r.Seq || events.Subject(r.Event.ConnectionID) != r.Subject || r.Stored.IsZero() {
			t.Errorf("record %d: %+v", r.Seq, r)
		}
		seqs = append(seqs, r.Seq)
		return nil
	})
	if err != nil || last != 4 {
		t.Fatalf("read: last %d, %v", last, err)
	}
	if len(seqs) != 4 || seqs[0] != 1 || seqs[3] != 4 {
		t.Fatalf("read seqs %v", seqs)
	}
	var one []domain.EventType
	if _, err := st.Read(ctxT(t), events.Range{ConnectionID: ids[1]}, func(r *events.Record) error {
		one = append(one, r.Event.Type())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(one) != 2 || one[1] != domain.EventConnectionUpdated {
		t.Fatalf("filtered read %v", one)
	}
	// A bounded range, and fn's error stops the read.
	stop := errors.New("stop")
	seqs = nil
	if _, err := st.Read(ctxT(t), events.Range{From: 2, To: 4}, func(r *events.Record) error {
		seqs = append(seqs, r.Seq)
		if r.Seq == 3 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || len(seqs) != 2 || seqs[0] != 2 {
		t.Fatalf("bounded read: %v %v", seqs, err)
	}
	info, err := st.Info(ctxT(t))
	if err != nil || info.Name != jsstore.DefaultStream || info.LastSeq != 4 || info.Created.IsZero() {
		t.Fatalf("info %+v %v", info, err)
	}
	// Reads delete their consumers once done.
	if n := consumers(t, st); n != 0 {
		t.Fatalf("%d consumers left behind by reads", n)
	}

	got := make(chan uint64, 16)
	stopFollow, err := st.Follow(ctxT(t), 3, func(r *events.Record) { got <- r.Seq })
	if err != nil {
		t.Fatal(err)
	}
	create(t, st) // seq 5 arrives live
	want := []uint64{3, 4, 5}
	for _, w := range want {
		select {
		case s := <-got:
			if s != w {
				t.Fatalf("follow got %d want %d", s, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("follow: no seq %d", w)
		}
	}
	if n := consumers(t, st); n != 1 {
		t.Fatalf("%d consumers while following", n)
	}
	stopFollow()
	stopFollow() // idempotent
	if n := consumers(t, st); n != 0 {
		t.Fatalf("%d consumers left behind by a stopped follow", n)
	}
	create(t, st)
	select {
	case s := <-got:
		t.Fatalf("delivered %d after stop", s)
	case <-time.After(50 * time.Millisecond):
	}
}

// consumers counts the stream's consumers on the server.
func consumers(t *testing.T, st *jsstore.Store) int {
	t.Helper()
	info, err := st.Stream().Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// A follow whose context ends releases its consumer too.
func TestFollowEndsWithItsContext(t *testing.T) {
	st := openNew(t)
	create(t, st)
	ctx, cancel := context.WithCancel(ctxT(t))
	got := make(chan uint64, 4)
	stop, err := st.Follow(ctx, 0, func(r *events.Record) { got <- r.Seq })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if s := <-got; s != 1 {
		t.Fatalf("got %d", s)
	}
	cancel()
	for i := 0; consumers(t, st) != 0; i++ {
		if i == 500 {
			t.Fatal("consumer not deleted after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOnAppendHookRunsBeforeAppendReturns(t *testing.T) {
	st := openNew(t)
	var mu sync.Mutex
	var seen []uint64
	st.OnAppend(func(e domain.Event) { mu.Lock(); seen = append(seen, e.Seq); mu.Unlock() })
	id := create(t, st)
	c, _ := st.Load(ctxT(t), id)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != c.Version {
		t.Fatalf("hook saw %v, version %d", seen, c.Version)
	}
}

// Load starts from a seed aggregate (a projection that follows the stream)
// on a cache miss and reads only the messages after it; the cache is bounded.
func TestLoadFromSeedAndBoundedCache(t *testing.T) {
	srv := natstest.Start(t, "")
	writer := open(t, srv.Connect(t))
	id := create(t, writer)
	seedC, err := writer.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	seedC.Config = map[string]string{"from": "seed"} // marks the seed
	var seeded int
	st, err := jsstore.Open(ctxT(t), srv.Connect(t), jsstore.Config{CacheSize: 1, Seed: func(cid string) (domain.Connection, bool) {
		seeded++
		return seedC.Clone(), cid == id
	}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Load(ctxT(t), id)
	if err != nil || c.Config["from"] != "seed" || seeded != 1 {
		t.Fatalf("load did not use the seed: %+v (seeded %d, %v)", c.Config, seeded, err)
	}
	// A newer event on top of the seed: only the tail is read.
	decideAppend(t, writer, id, domain.StartAuthorisation{AttemptID: "x", ExpiresAt: time.Now().Add(time.Minute)})
	c, err = st.Load(ctxT(t), id)
	if err != nil || c.State != domain.StateReauthorising || c.Config["from"] != "seed" {
		t.Fatalf("tail on the seed: %+v %v", c, err)
	}
	// CacheSize 1: loading another connection evicts the first.
	other := create(t, writer)
	if _, err := st.Load(ctxT(t), other); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctxT(t), id); err != nil || seeded < 2 {
		t.Fatalf("evicted entry not re-seeded: seeded %d, %v", seeded, err)
	}
}

// A history longer than one batched direct get (256) is read whole and in
// order, interleaved with another connection's events.
func TestLongHistoryAcrossBatches(t *testing.T) {
	srv := natstest.Start(t, "")
	st := open(t, srv.Connect(t))
	id, other := create(t, st), create(t, st)
	for i := 0; i < 600; i++ {
		target := id
		if i%2 == 1 {
			target = other
		}
		decideAppend(t, st, target, domain.Update{Config: map[string]string{"i": strconv.Itoa(i)}})
	}
	h := expectHistory(t, st, id, 301)
	for i := 1; i < len(h); i++ {
		if h[i].Seq <= h[i-1].Seq || h[i].ConnectionID != id {
			t.Fatalf("event %d out of order or foreign: %d after %d", i, h[i].Seq, h[i-1].Seq)
		}
	}
	fresh := open(t, srv.Connect(t))
	c, err := fresh.Load(ctxT(t), id)
	if err != nil || c.Events != 301 || c.Config["i"] != "598" {
		t.Fatalf("cold load: %d events, config %v, %v", c.Events, c.Config, err)
	}
}

// TestFollowTakesDeliveriesOnFollowConn: with Config.FollowConn, Follow's
// deliveries arrive on that connection and not on the store's, whose
// appends then get their acknowledgements without queueing behind them.
func TestFollowTakesDeliveriesOnFollowConn(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, fc := srv.Connect(t), srv.Connect(t)
	st, err := jsstore.Open(ctxT(t), nc, jsstore.Config{Actor: "test", FollowConn: fc})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	got := make(chan uint64, n)
	stop, err := st.Follow(ctxT(t), 0, func(r *events.Record) {
		if r.Err == nil {
			got <- r.Seq
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	storeIn, followIn := nc.Stats().InMsgs, fc.Stats().InMsgs
	for range n / 2 {
		id := uuid.NewString()
		first, err := st.Append(ctxT(t), id, 0, ev(domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Append(ctxT(t), id, first.Seq, ev(domain.AuthorisationStarted{AttemptID: "att_" + id[:8], Scopes: []string{"users:read"}, ExpiresAt: time.Now().Add(time.Minute)})); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case seq := <-got:
			if seq != uint64(i+1) {
				t.Fatalf("record %d has sequence %d", i, seq)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d records delivered", i, n)
		}
	}
	if d := fc.Stats().InMsgs - followIn; d < n {
		t.Errorf("the follow connection received %d messages, want the %d deliveries at least", d, n)
	}
	// The store's connection takes the appends' acknowledgements, not the
	// deliveries as well.
	if d := nc.Stats().InMsgs - storeIn; d >= 2*n {
		t.Errorf("the store's connection received %d messages for %d appends: the deliveries came there too", d, n)
	}
}

var _ projections.KnownFollower = (*jsstore.Store)(nil)

// TestFollowKnownTakesTheCallersEvent: FollowKnown gives a record the event
// known returns for its sequence instead of decoding the message (the
// projection Runner's own appends), and decodes the message when known has
// none or returns one of another connection.
func TestFollowKnownTakesTheCallersEvent(t *testing.T) {
	st := openNew(t)
	id := create(t, st)    // seq 1
	other := create(t, st) // seq 2
	third := create(t, st) // seq 3
	known := func(seq uint64) (domain.Event, bool) {
		switch seq {
		case 1:
			return domain.Event{ID: "from-known", ConnectionID: id, Actor: "known", Payload: domain.ConnectionCreated{Provider: "sandbox"}}, true
		case 3:
			return domain.Event{ID: "wrong-subject", ConnectionID: other, Actor: "known", Payload: domain.ConnectionCreated{Provider: "sandbox"}}, true
		}
		return domain.Event{}, false
	}
	got := make(chan events.Record, 3)
	stop, err := st.FollowKnown(ctxT(t), 0, known, func(r *events.Record) { got <- *r })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	want := []struct {
		conn, actor string
	}{{id, "known"}, {other, "test"}, {third, "test"}}
	for i, w := range want {
		select {
		case r := <-got:
			if r.Err != nil || r.Seq != uint64(i+1) || r.Event.Seq != r.Seq || r.Event.ConnectionID != w.conn || r.Event.Actor != w.actor {
				t.Fatalf("record %d: seq %d, event %s of %s by %q, %v; want %s by %q", i, r.Seq, r.Event.ID, r.Event.ConnectionID, r.Event.Actor, r.Err, w.conn, w.actor)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d not delivered", i)
		}
	}
}
