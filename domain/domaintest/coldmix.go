// Package domaintest builds domain values for tests and benchmarks of
// several packages. It imports only the domain (and uuid), so any package's
// tests may use it; no production code does.
package domaintest

import (
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// ColdMix is n connections as BenchmarkColdStart's snapshot holds them
// (tests/coldstart_bench_test.go): UUID ids, three in four of provider
// "sandbox" and the rest "pleo-eu", one-hour tokens issued 1 to 10 minutes
// before t0 (two in three refreshed since they became active), with a few
// refreshing, reauthorising, unauthenticated, deleted and retrying ones,
// in an order other than their allocation's (as the status projection
// hands them over, in its map's order). The same n and t0 give the same
// mix but for the ids.
func ColdMix(n int, t0 time.Time) []*domain.Connection {
	rng := rand.New(rand.NewPCG(11, 100_000))
	out := make([]*domain.Connection, n)
	for i := range out {
		id := strings.Clone(uuid.NewString())
		provider := []string{"sandbox", "sandbox", "sandbox", "pleo-eu"}[rng.IntN(4)]
		issued := t0.Add(-time.Duration(1+rng.IntN(9))*time.Minute - time.Duration(rng.IntN(60_000))*time.Millisecond)
		c := &domain.Connection{ID: id, Version: uint64(3 + rng.IntN(12)), Provider: provider,
			State: domain.StateActive, Since: issued, TokensHeld: true,
			Tokens: domain.TokenInfo{AccessTokenFP: "sha256:" + id[:12], RefreshTokenFP: "sha256:" + id[24:], AccessTokenExpiresAt: issued.Add(time.Hour)}}
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
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
