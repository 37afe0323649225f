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
