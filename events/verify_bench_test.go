package events_test

import (
	"fmt"
	"testing"
	"time"

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

// BenchmarkLinkCheck is what `tokenline verify` does per message since it
// checks links on the message bytes: ParseLink (which hashes the message)
// and Verifier.Link, against the decode and Verifier.Event it replaces,
// interleaved; it prints both rates and their ratio.
func BenchmarkLinkCheck(b *testing.B) {
	var ids []string
	for i := range 100 {
		ids = append(ids, fmt.Sprintf("2f9c4a4e-6a55-4c0e-a8a5-%012d", i))
	}
	ms := history(&testing.T{}, 100, ids...)
	var link, full time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		v := events.NewVerifier(nil, "")
		var lr events.LinkRecord
		for _, m := range ms {
			lr = events.LinkRecord{Seq: m.seq}
			lr.Light = events.ParseLink(m.data, &lr.Info)
			v.Link(&lr)
		}
		if r := v.Finish(uint64(len(ms))); len(r.Breaks) != 0 || r.Events != len(ms) {
			b.Fatal(r.Breaks)
		}
		link += time.Since(start)
		start = time.Now()
		v = events.NewVerifier(nil, "")
		var dec events.Decoder
		for _, m := range ms {
			rec := events.Record{Seq: m.seq, Subject: events.Subject(m.conn)}
			rec.Event, rec.Err = dec.Decode(m.data)
			rec.Event.Seq = m.seq
			v.Event(&rec)
		}
		if r := v.Finish(uint64(len(ms))); len(r.Breaks) != 0 {
			b.Fatal(r.Breaks)
		}
		full += time.Since(start)
	}
	n := float64(len(ms) * b.N)
	b.ReportMetric(n/link.Seconds(), "link-events/s")
	b.ReportMetric(n/full.Seconds(), "decode-events/s")
	fmt.Printf("link check %.0f events/s; decode and fold %.0f events/s; %.2fx\n", n/link.Seconds(), n/full.Seconds(), full.Seconds()/link.Seconds())
}
