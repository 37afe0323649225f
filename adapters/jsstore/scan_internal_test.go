package jsstore

import "testing"

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
