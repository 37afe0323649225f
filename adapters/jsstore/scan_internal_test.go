package jsstore

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// A direct get's wait for its response ends with the caller's context, and
// without one after its own per-try timeout (jsreq.TryTimeout), not the
// caller's whole deadline.
func TestDirectBatchEndsWithTheContext(t *testing.T) {
	nc := natstest.Start(t, "").Connect(t)
	st, err := Open(context.Background(), nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *nats.Msg, 1) // nobody answers
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	next := uint64(1)
	if _, err := st.directBatch(ctx, ch, "tokenline.conn.x", &next, 10, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("directBatch: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := st.directBatch(ctx, ch, "tokenline.conn.x", &next, 10, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("directBatch with an hour left: %v", err)
	}
}

func TestAckInfo(t *testing.T) {
	for _, c := range []struct {
		reply string
		seq   uint64
		ts    int64
		ok    bool
	}{
		{"$JS.ACK.TOKENLINE.cons.1.42.7.1750000000123456789.0", 42, 1750000000123456789, true},
		{"$JS.ACK._.ABCDEF.TOKENLINE.cons.1.43.8.1750000000123456789.5.XyZ", 43, 1750000000123456789, true},
		{"$JS.ACK.hub.ABCDEF.TOKENLINE.cons.1.44.8.1750000000123456789.5", 44, 1750000000123456789, true},
		{"$JS.ACK.TOKENLINE.cons.1.x.7.1.0", 0, 0, false},
		{"_INBOX.abc", 0, 0, false},
		{"$JS.ACK.a.b.c", 0, 0, false},
	} {
		seq, ts, ok := ackInfo(c.reply)
		if seq != c.seq || ts != c.ts || ok != c.ok {
			t.Errorf("ackInfo(%q) = %d %d %v", c.reply, seq, ts, ok)
		}
	}
}

// What a replica behind the leader lacks is read from the leader: with no
// direct get at all, Load and History still return every event, cold and
// with a cached aggregate one event behind.
func TestRangeFromTheLeader(t *testing.T) {
	nc := natstest.Start(t, "").Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := Open(ctx, nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	id, other := uuid.NewString(), uuid.NewString()
	var seqs []uint64
	var otherLast uint64
	for _, p := range []domain.Payload{
		domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}},
		domain.ConnectionUpdated{Config: map[string]string{"n": "1"}},
		domain.ConnectionUpdated{Config: map[string]string{"n": "2"}},
	} {
		o, err := w.Append(ctx, other, otherLast, domain.Event{Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		otherLast = o.Seq
		var last uint64
		if len(seqs) > 0 {
			last = seqs[len(seqs)-1]
		}
		e, err := w.Append(ctx, id, last, domain.Event{Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, e.Seq)
	}
	directRanges = false
	t.Cleanup(func() { directRanges = true })
	r, err := Open(ctx, nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Load(ctx, id)
	if err != nil || c.Version != seqs[2] || c.Events != 3 || c.Config["n"] != "2" {
		t.Fatalf("cold load from the leader: %+v %v", c, err)
	}
	h, err := r.History(ctx, id)
	if err != nil || len(h) != 3 || h[0].Seq != seqs[0] || h[2].Seq != seqs[2] {
		t.Fatalf("history from the leader: %d events %v", len(h), err)
	}
	e, err := w.Append(ctx, id, seqs[2], domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"n": "3"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err = r.Load(ctx, id)
	if err != nil || c.Version != e.Seq || c.Config["n"] != "3" {
		t.Fatalf("tail from the leader: %+v %v", c, err)
	}
}

// A projection's snapshot objects are told apart from those of a
// projection whose name extends it ("a" and "a.b").
func TestObjectOf(t *testing.T) {
	r := "abcdefghijklmnopqrstuvwxyz"
	for _, c := range []struct {
		name, obj string
		want      bool
	}{
		{"a", "a." + r, true},
		{"a", "a.b." + r, false},
		{"a.b", "a.b." + r, true},
		{"a", "a", false},
		{"a", "a." + r[:25], false},
		{"a", "ab." + r, false},
	} {
		if got := objectOf(c.name, c.obj); got != c.want {
			t.Errorf("objectOf(%q, %q) = %v", c.name, c.obj, got)
		}
	}
}

// A subject's range read by batched direct gets returns every message in
// order across batches, and a short read allocates little: its reply
// subscription reads a channel of two batches, not a synchronous
// subscription's 65,536 slots (512 KiB for every query).
func TestDirectRangeAcrossBatchesAllocatesLittle(t *testing.T) {
	nc := natstest.Start(t, "").Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := Open(ctx, nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	long, short := uuid.NewString(), uuid.NewString()
	appendN := func(id string, n int) []uint64 {
		var seqs []uint64
		var last uint64
		for i := range n {
			var p domain.Payload = domain.ConnectionUpdated{Config: map[string]string{"n": string(rune('a' + i%26))}}
			if i == 0 {
				p = domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}
			}
			e, err := st.Append(ctx, id, last, domain.Event{Payload: p})
			if err != nil {
				t.Fatal(err)
			}
			last = e.Seq
			seqs = append(seqs, e.Seq)
		}
		return seqs
	}
	want := appendN(long, 2*directBatch+50)
	appendN(short, 5)
	var got []uint64
	if err := st.subjectRange(ctx, "tokenline.conn."+long, 1, want[len(want)-1], func(seq uint64, data []byte) error {
		got = append(got, seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		t.Fatalf("read %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("message %d: seq %d, want %d", i, got[i], want[i])
		}
	}
	var before, after runtime.MemStats
	n := 0
	runtime.ReadMemStats(&before)
	for range 10 {
		if err := st.subjectRange(ctx, "tokenline.conn."+short, 1, 1<<62, func(uint64, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if n != 50 {
		t.Fatalf("read %d messages in 10 short reads, want 50", n)
	}
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 128<<10 {
		t.Fatalf("a read of 5 messages allocated %d bytes (process-wide), want under 128 KiB", per)
	}
}
