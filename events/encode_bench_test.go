package events_test

import (
	"testing"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// BenchmarkEncode and BenchmarkDecode measure the hot event of the store, a
// refresh.succeeded.
func BenchmarkEncode(b *testing.B) {
	e := sampleEvent(samplePayloads()[domain.EventRefreshSucceeded])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	raw := encode(b, sampleEvent(samplePayloads()[domain.EventRefreshSucceeded]))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeChained is what the store's prepare does since the hash
// chain: Encode with a prevhash, then the hash of the bytes. Compare with
// BenchmarkEncode for the chain's cost per append.
func BenchmarkEncodeChained(b *testing.B) {
	e := sampleEvent(samplePayloads()[domain.EventRefreshSucceeded])
	events.Chain(&e, domain.ChainHead{Hash: [32]byte{1}})
	b.ReportAllocs()
	for b.Loop() {
		raw, err := events.Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		e.Link.Hash = events.HashOf(raw)
	}
}
