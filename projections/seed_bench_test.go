package projections

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// coldMix is n connections as BenchmarkColdStart's snapshot holds them
// (tests/coldstart_bench_test.go): UUID ids, one-hour tokens issued 1 to 10
// minutes before t0 (most refreshed since they became active), with a few
// refreshing, reauthorising, unauthenticated and deleted ones, in an order
// other than their allocation's (as the status projection hands them over).
func coldMix(n int, t0 time.Time) []*domain.Connection {
	rng := rand.New(rand.NewPCG(11, 100_000))
	out := make([]*domain.Connection, n)
	for i := range out {
		id := strings.Clone(uuid.NewString())
		issued := t0.Add(-time.Duration(1+rng.IntN(9))*time.Minute - time.Duration(rng.IntN(60_000))*time.Millisecond)
		c := &domain.Connection{ID: id, Version: uint64(3 + rng.IntN(12)), Provider: []string{"sandbox", "sandbox", "sandbox", "pleo-eu"}[rng.IntN(4)],
			State: domain.StateActive, Since: issued, TokensHeld: true,
			Tokens: domain.TokenInfo{AccessTokenFP: "sha256:" + id[:12], RefreshTokenFP: "sha256:" + id[24:], AccessTokenExpiresAt: issued.Add(time.Hour)}}
		if rng.IntN(3) > 0 {
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
		}
		out[i] = c
	}
	// In the order of the status projection's map, which is not the order
	// the connections were allocated in.
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// BenchmarkGateSeed seeds an empty gate with 100k connections of
// BenchmarkColdStart's mix at once (Seed), as a start from the snapshot
// does, and reports the CPU per connection and the allocations (allocs/op:
// per seeding of all of them); cpu-ns/conn is the process's CPU time (the
// garbage collector included).
//
//	go test -run '^$' -bench GateSeed -benchmem ./projections/
func BenchmarkGateSeed(b *testing.B) {
	conns := coldMix(100_000, time.Now())
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
