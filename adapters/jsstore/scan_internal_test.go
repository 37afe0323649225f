package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/natstest"
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
	sub, err := nc.SubscribeSync(nc.NewRespInbox()) // nobody answers
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	next := uint64(1)
	if _, err := st.directBatch(ctx, sub, "tokenline.conn.x", &next, 10, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("directBatch: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := st.directBatch(ctx, sub, "tokenline.conn.x", &next, 10, nil); !errors.Is(err, context.DeadlineExceeded) {
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
