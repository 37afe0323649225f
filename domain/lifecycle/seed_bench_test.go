package lifecycle

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// coldMix is n connections as BenchmarkColdStart's snapshot holds them
// (tests/coldstart_bench_test.go, coldLife): UUID ids, three in four of
// provider "sandbox" (which has a prober here) and the rest "pleo-eu",
// one-hour tokens issued 1 to 10 minutes before t0 (most refreshed since
// they became active), with a few refreshing, reauthorising,
// unauthenticated and deleted ones, in an order other than their
// allocation's (as the status projection hands them over).
func coldMix(n int, t0 time.Time) []*domain.Connection {
	rng := rand.New(rand.NewPCG(11, 100_000))
	out := make([]*domain.Connection, n)
	for i := range out {
		id := strings.Clone(uuid.NewString())
		provider := []string{"sandbox", "sandbox", "sandbox", "pleo-eu"}[rng.IntN(4)]
		issued := t0.Add(-time.Duration(1+rng.IntN(9))*time.Minute - time.Duration(rng.IntN(60_000))*time.Millisecond)
		c := activeConn(id, uint64(3+rng.IntN(12)), issued, time.Hour)
		c.Provider = provider
		c.Tokens.AccessTokenFP = "sha256:" + id[:12]
		c.Tokens.RefreshTokenFP = "sha256:" + id[24:]
		if rng.IntN(3) > 0 { // refreshed since it became active
			c.Since = issued.Add(-45 * time.Minute)
			c.LastRefreshAt, c.LastRefreshOK = issued, true
		}
		switch r := rng.IntN(100); {
		case r < 2:
			c.State, c.LeaseUntil = domain.StateRefreshing, t0.Add(time.Duration(rng.IntN(60))*time.Second)
		case r < 4:
			c.State, c.TokensHeld, c.Tokens = domain.StateReauthorising, false, domain.TokenInfo{}
			c.AttemptExpiresAt = t0.Add(time.Duration(rng.IntN(600)) * time.Second)
		case r < 6:
			c.State, c.Reason = domain.StateUnauthenticated, domain.ReasonInvalidGrant
			c.TokensHeld = r == 4
		case r == 6:
			c.State, c.Reason, c.Deleted = domain.StateUnauthenticated, domain.ReasonConnectionDeleted, true
		case r == 7:
			c.RetryAt = t0.Add(time.Duration(rng.IntN(60)) * time.Second)
		}
		out[i] = c
	}
	// In the order of the status projection's map, which is not the order
	// the connections were allocated in.
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

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
	conns := coldMix(benchSize(100_000, 5_000), t0)
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
