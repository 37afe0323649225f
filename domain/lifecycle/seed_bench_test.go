package lifecycle

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/domaintest"
)

// BenchmarkSeedCold seeds the scheduler (and its prober, for "sandbox")
// with 100k connections of BenchmarkColdStart's mix at once (Seed), as a
// start from the snapshot does, and reports the CPU per connection and the
// allocations (allocs/op: per seeding of all of them). "sched" seeds the
// scheduler alone (Seed without the prober's part), "probes" the prober
// alone (seedProbes). cpu-ns/conn is the process's CPU time (the
// goroutines side by side and the garbage collector included).
//
//	go test -run '^$' -bench SeedCold -benchmem ./domain/lifecycle/
func BenchmarkSeedCold(b *testing.B) {
	t0 := time.Now()
	conns := domaintest.ColdMix(benchSize(100_000, 5_000), t0)
	newService := func() *Service {
		s := spreadService(t0, 16, spreadInitialJob)
		s.cfg.Lease, s.cfg.LeaseGrace = 30*time.Second, 30*time.Second
		s.cfg.Probers = map[string]domain.Prober{"sandbox": everyProber(5 * time.Minute)}
		return s
	}
	for _, part := range []string{"seed", "probes"} {
		b.Run(part, func(b *testing.B) {
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				s := newService()
				if part == "probes" {
					s.seedProbes(conns)
					continue
				}
				s.Seed(conns)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(conns)), "ns/conn")
			b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N)/float64(len(conns)), "cpu-ns/conn")
			fmt.Printf("lifecycle %s: %d connections\n", part, len(conns))
		})
	}
}

// processCPU is the CPU time the process has used (user and system): on a
// shared machine a steadier measure of the work than the elapsed time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
