package events

import "testing"

// seenList keeps every entry, in order, across its blocks.
func TestSeenList(t *testing.T) {
	var l seenList
	const n = 3*seenBlock + 5
	for i := range n {
		l.add(seen{hash: uint64(i) * 7, seq: uint64(i) + 1, accepted: i%3 == 0})
	}
	if l.n != n || len(l.blocks) != 4 {
		t.Fatalf("n %d, %d blocks", l.n, len(l.blocks))
	}
	for i := range n {
		if s := l.at(i); s.hash != uint64(i)*7 || s.seq != uint64(i)+1 || s.accepted != (i%3 == 0) {
			t.Fatalf("at(%d) = %+v", i, s)
		}
	}
}
