package jsstore_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/jsstore/tamper"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func signingKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func verify(t *testing.T, nc *nats.Conn, key ed25519.PrivateKey, only string) events.VerifyReport {
	t.Helper()
	r, err := jsstore.OpenReader(ctxT(t), nc, jsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Verify(ctxT(t), events.NewVerifier(key.Public().(ed25519.PublicKey), only), only)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func update(t *testing.T, st *jsstore.Store, id, v string) domain.Event {
	return decideAppend(t, st, id, domain.Update{Config: map[string]string{"v": v}})
}

// forge publishes an event as someone with write access to NATS could.
func forge(t *testing.T, nc *nats.Conn, e domain.Event) {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(events.Subject(e.ConnectionID), b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestChainIsWrittenAndVerifies(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	key := signingKey(t)
	a, b := create(t, st), create(t, st)
	for i := range 3 {
		update(t, st, a, strings.Repeat("a", i+1))
		update(t, st, b, strings.Repeat("b", i+1))
	}
	h := expectHistory(t, st, a, 4)
	if h[0].Link.Prev != ([32]byte{}) || !h[0].Link.Chained {
		t.Fatalf("first event's link %+v, want the genesis", h[0].Link)
	}
	for i := 1; i < len(h); i++ {
		if !h[i].Link.Chained || h[i].Link.Prev != h[i-1].Link.Hash {
			t.Fatalf("event %d does not link to event %d", i, i-1)
		}
	}
	if n, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d %v", n, err)
	}
	if n, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil || n != 0 {
		t.Fatalf("nothing moved, yet %d checkpoints (%v)", n, err)
	}
	update(t, st, a, "after")
	if n, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d %v", n, err)
	}
	rep := verify(t, nc, key, "")
	if len(rep.Breaks) != 0 || rep.Checkpoints != 2 || rep.Events != 9 || rep.LastCheckpoint.Number != 2 || len(rep.LastCheckpoint.Heads) != 1 {
		t.Fatalf("report %+v", rep)
	}
	// Another key's checkpoints do not verify, and are not continued.
	other := signingKey(t)
	if rep := verify(t, nc, other, ""); len(rep.Breaks) == 0 || rep.Breaks[0].Kind != events.BreakCheckpoint {
		t.Fatalf("checkpoints verified with another key: %+v", rep.Breaks)
	}
	update(t, st, a, "more")
	if _, err := st.WriteCheckpoint(ctxT(t), other, time.Now()); err == nil {
		t.Fatal("continued a checkpoint chain signed by another key")
	}
}

// A forged event published straight to the subject, without a link or with
// a made-up one, is refused by Load: the connection is not deleted, the
// break is counted, and tokenline's next append extends the real head.
func TestForgedEventIsRefused(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	key := signingKey(t)
	id := create(t, st)
	update(t, st, id, "1")
	forged := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: time.Now(), Actor: "user", Payload: domain.ConnectionDeleted{}}
	forge(t, nc, forged)
	forged.ID = uuid.NewString()
	forged.Link = domain.ChainLink{Prev: [32]byte{1, 2, 3}, Chained: true}
	forge(t, nc, forged)

	fresh := open(t, srv.Connect(t)) // no cache: reads the stream
	c, err := fresh.Load(ctxT(t), id)
	if err != nil || c.Deleted || c.ChainBreaks != 2 || c.Version != 4 || c.Head.Seq != 2 {
		t.Fatalf("load over forged events: %+v %v", c, err)
	}
	update(t, fresh, id, "2") // extends the head at seq 2
	c, err = open(t, srv.Connect(t)).Load(ctxT(t), id)
	if err != nil || c.Config["v"] != "2" || c.Head.Seq != 5 || c.ChainBreaks != 2 {
		t.Fatalf("append after forged events: %+v %v", c, err)
	}
	rep := verify(t, nc, key, id)
	if len(rep.Breaks) != 2 || rep.Breaks[0].Seq != 3 || rep.Breaks[1].Seq != 4 || rep.Breaks[0].Kind != events.BreakChain {
		t.Fatalf("verify: %+v", rep.Breaks)
	}
}

// Each kind of change to a stream with a checkpoint is reported, at the
// first event it breaks.
func TestVerifyNamesTheFirstBreak(t *testing.T) {
	relink := func(ms []tamper.Msg, from int) { // recompute the chain after ms[from]
		var head [32]byte
		for i := range ms {
			if i <= from {
				head = events.HashOf(ms[i].Data)
				continue
			}
			e, err := events.Decode(ms[i].Data)
			if err != nil {
				panic(err)
			}
			e.Link.Prev = head
			b, _ := events.Encode(e)
			ms[i].Data, head = b, events.HashOf(b)
		}
	}
	alter := func(m *tamper.Msg, v string) {
		e, err := events.Decode(m.Data)
		if err != nil {
			panic(err)
		}
		e.Payload = domain.ConnectionUpdated{Config: map[string]string{"v": v}}
		m.Data, _ = events.Encode(e)
	}
	cases := []struct {
		name string
		// messages: seq 1 created, 2..6 updated (one connection);
		// checkpoint after seq 4, seq 5 and 6 after it.
		edit      func([]tamper.Msg) []tamper.Msg
		kind      string
		seq       uint64
		detailHas string
	}{
		{"altered", func(ms []tamper.Msg) []tamper.Msg { alter(&ms[2], "x"); return ms }, events.BreakChain, 4, "the event before it was altered"},
		{"altered after the checkpoint", func(ms []tamper.Msg) []tamper.Msg { alter(&ms[4], "x"); return ms }, events.BreakChain, 6, "altered or removed"},
		{"removed from the middle", func(ms []tamper.Msg) []tamper.Msg { return append(ms[:2:2], ms[3:]...) }, events.BreakChain, 3, "altered or removed"},
		{"inserted", func(ms []tamper.Msg) []tamper.Msg {
			m := tamper.Msg{Subject: ms[2].Subject, Data: ms[2].Data, Header: nats.Header{}}
			alter(&m, "forged")
			return append(ms[:3:3], append([]tamper.Msg{m}, ms[3:]...)...)
		}, events.BreakChain, 4, ""},
		{"reordered", func(ms []tamper.Msg) []tamper.Msg { ms[2], ms[3] = ms[3], ms[2]; return ms }, events.BreakChain, 3, ""},
		{"rewritten with a consistent chain", func(ms []tamper.Msg) []tamper.Msg { alter(&ms[1], "x"); relink(ms, 1); return ms }, events.BreakCheckpointSeq, 4, "altered"},
		{"tail cut after the checkpoint", func(ms []tamper.Msg) []tamper.Msg { return ms[:3] }, events.BreakTailCut, 3, "tail was cut"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t, "")
			nc := srv.Connect(t)
			st := open(t, nc)
			key := signingKey(t)
			id := create(t, st)
			for i := range 3 {
				update(t, st, id, string(rune('a'+i)))
			}
			if _, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil {
				t.Fatal(err)
			}
			update(t, st, id, "d")
			update(t, st, id, "e")
			if rep := verify(t, nc, key, ""); len(rep.Breaks) != 0 {
				t.Fatalf("before tampering: %+v", rep.Breaks)
			}
			if err := tamper.Rewrite(ctxT(t), st.JetStream(), jsstore.DefaultStream, tc.edit); err != nil {
				t.Fatal(err)
			}
			rep := verify(t, nc, key, "")
			if len(rep.Breaks) == 0 {
				t.Fatal("not detected")
			}
			first := rep.Breaks[0]
			if first.Kind != tc.kind || first.Seq != tc.seq || !strings.Contains(first.Detail, tc.detailHas) {
				t.Fatalf("first break %v, want %s at seq %d (%q); all: %v", first, tc.kind, tc.seq, tc.detailHas, rep.Breaks)
			}
		})
	}
}

// Someone relaxes the stream: Open leaves it as it is and CheckShape says
// what changed; restored, the check passes.
func TestStreamShapeGuarded(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	if err := st.CheckShape(ctxT(t), nil); err != nil {
		t.Fatal(err)
	}
	cfg := jsstore.StreamConfig(jsstore.Config{})
	bad := cfg
	bad.MaxMsgs, bad.MaxAge = 1000, time.Hour
	if _, err := st.JetStream().UpdateStream(ctxT(t), bad); err != nil {
		t.Fatal(err)
	}
	st2 := open(t, srv.Connect(t))
	err := st2.CheckShape(ctxT(t), nil)
	if !errors.Is(err, jsstore.ErrShape) || !strings.Contains(err.Error(), "max_msgs is 1000") || !strings.Contains(err.Error(), "max_age is 1h0m0s") {
		t.Fatalf("shape check: %v", err)
	}
	if _, err := st.JetStream().UpdateStream(ctxT(t), cfg); err != nil {
		t.Fatal(err)
	}
	if err := st2.CheckShape(ctxT(t), nil); err != nil {
		t.Fatal(err)
	}
	var _ jetstream.StreamConfig = cfg
}

// The buckets are guarded too: a KV bucket given an age limit (its history
// silently dropped) and an object store with one are reported by name.
func TestBucketShapeGuarded(t *testing.T) {
	srv := natstest.Start(t, "")
	st := open(t, srv.Connect(t))
	js := st.JetStream()
	if _, err := js.CreateKeyValue(ctxT(t), jetstream.KeyValueConfig{Bucket: "guarded_kv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(ctxT(t), jetstream.ObjectStoreConfig{Bucket: "guarded_obj"}); err != nil {
		t.Fatal(err)
	}
	buckets := map[string]time.Duration{"guarded_kv": 0, "OBJ_guarded_obj": 0}
	if err := st.CheckShape(ctxT(t), buckets); err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateKeyValue(ctxT(t), jetstream.KeyValueConfig{Bucket: "guarded_kv", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateObjectStore(ctxT(t), jetstream.ObjectStoreConfig{Bucket: "guarded_obj", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	err := st.CheckShape(ctxT(t), buckets)
	if !errors.Is(err, jsstore.ErrShape) || !strings.Contains(err.Error(), "bucket guarded_kv: max_age is 1m0s") || !strings.Contains(err.Error(), "bucket OBJ_guarded_obj: max_age is 1m0s") {
		t.Fatalf("bucket shape check: %v", err)
	}
}

// A checkpoint lists exactly the connections with events since the last
// one (found from the messages' headers alone), each at its head, sorted;
// a connection untouched since is not listed.
func TestCheckpointListsTheConnectionsTouchedSince(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	key := signingKey(t)
	ids := []string{create(t, st), create(t, st), create(t, st), create(t, st)}
	if n, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d %v", n, err)
	}
	if heads := verify(t, nc, key, "").LastCheckpoint.Heads; len(heads) != 4 {
		t.Fatalf("first checkpoint lists %d connections, want 4", len(heads))
	}
	want := map[string]string{}
	for i, id := range []string{ids[2], ids[0], ids[2]} {
		e := update(t, st, id, strings.Repeat("x", i+1))
		want[id] = events.FormatHash(e.Link.Hash)
	}
	if n, err := st.WriteCheckpoint(ctxT(t), key, time.Now()); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d %v", n, err)
	}
	rep := verify(t, nc, key, "")
	heads := rep.LastCheckpoint.Heads
	if len(rep.Breaks) != 0 || len(heads) != len(want) || heads[0].Connection > heads[1].Connection {
		t.Fatalf("second checkpoint %+v (breaks %v), want %d connections sorted", heads, rep.Breaks, len(want))
	}
	for _, h := range heads {
		if want[h.Connection] != h.Head {
			t.Fatalf("head of %s: %s, want %s", h.Connection, h.Head, want[h.Connection])
		}
	}
}
