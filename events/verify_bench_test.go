package events_test

import (
	"fmt"
	"testing"

	"github.com/tokenline/tokenline/events"
)

// BenchmarkVerifier measures the verifier's own work per event (the part
// of `tokenline verify` that runs serially after the parallel decoding):
// the chain check, the fold and the bookkeeping, on decoded records.
func BenchmarkVerifier(b *testing.B) {
	var ids []string
	for i := range 100 {
		ids = append(ids, fmt.Sprintf("2f9c4a4e-6a55-4c0e-a8a5-%012d", i))
	}
	ms := history(&testing.T{}, 100, ids...)
	recs := make([]events.Record, len(ms))
	var dec events.Decoder
	for i, m := range ms {
		recs[i] = events.Record{Seq: m.seq, Subject: events.Subject(m.conn)}
		recs[i].Event, recs[i].Err = dec.Decode(m.data)
		recs[i].Event.Seq = m.seq
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v := events.NewVerifier(nil, "")
		for i := range recs {
			v.Event(&recs[i])
		}
		if r := v.Finish(uint64(len(recs))); len(r.Breaks) != 0 {
			b.Fatal(r.Breaks)
		}
	}
	b.ReportMetric(float64(len(recs)*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeAndHash is the parallel part per event: the fast decoder,
// which also hashes the message.
func BenchmarkDecodeAndHash(b *testing.B) {
	ms := history(&testing.T{}, 100, connA)
	var dec events.Decoder
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		for _, m := range ms {
			if _, err := dec.Decode(m.data); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
