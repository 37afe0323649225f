package projections

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain/domaintest"
)

// BenchmarkGateSeed seeds an empty gate with 100k connections of
// BenchmarkColdStart's mix at once (Seed), as a start from the snapshot
// does, and reports the CPU per connection and the allocations (allocs/op:
// per seeding of all of them); cpu-ns/conn is the process's CPU time (the
// garbage collector included).
//
//	go test -run '^$' -bench GateSeed -benchmem ./projections/
func BenchmarkGateSeed(b *testing.B) {
	conns := domaintest.ColdMix(100_000, time.Now())
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		g := NewGate(GateOptions{})
		g.Seed(conns)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(conns)), "ns/conn")
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N)/float64(len(conns)), "cpu-ns/conn")
	fmt.Printf("gate seed: %d connections\n", len(conns))
}
