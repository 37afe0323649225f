package projections

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/domaintest"
)

// A gate seeded at once (Seed: the connections taken in the order of
// their slots in the table) holds for BenchmarkColdStart's mix exactly
// the entries one Observe per connection, in order, leaves: the same
// state and refusal for every connection, the same answer to Check (tokens
// handed over before and after the seeding), and the highest version seen.
// The mix includes connections given twice (the later call wins), nil and
// id-less ones, and an unknown id.
func TestSeedColdMixAsObserveGate(t *testing.T) {
	now := time.Now()
	clk := newClock(now)
	conns := domaintest.ColdMix(3000, now)
	again := *conns[20]
	again.Version++
	again.State, again.Reason = domain.StateUnauthenticated, domain.ReasonInvalidGrant
	older := *conns[30] // given twice, the second time unchanged
	conns = append(conns, nil, &domain.Connection{}, &again, &older)
	one, bulk := NewGate(GateOptions{Now: clk.now}), NewGate(GateOptions{Now: clk.now})
	tokenOf := func(c *domain.Connection) string { return "at-" + c.ID }
	for i, c := range conns[:3000] { // handed over before the seeding, for half of them
		if i%2 == 0 {
			c.Tokens.AccessTokenFP = domain.Fingerprint(tokenOf(c))
			for _, g := range []*Gate{one, bulk} {
				if err := g.SetToken(c.ID, c.Tokens.AccessTokenFP, tokenOf(c)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, c := range conns {
		one.Observe(nil, c)
	}
	bulk.Seed(conns)
	if one.maxSeen != bulk.maxSeen || one.tab.Load().n != bulk.tab.Load().n {
		t.Fatalf("max version %d / %d, entries %d / %d", one.maxSeen, bulk.maxSeen, one.tab.Load().n, bulk.tab.Load().n)
	}
	open := 0
	for _, c := range append(conns[:3000:3000], &domain.Connection{ID: "unknown"}) {
		a, b := one.view(c.ID), bulk.view(c.ID)
		if (a == nil) != (b == nil) || a != nil && (*a.st != *b.st || a.token != b.token || a.expires != b.expires) {
			t.Fatalf("%s: Observe %+v, Seed %+v", c.ID, a, b)
		}
		ta, errA := one.Check(c.ID)
		tb, errB := bulk.Check(c.ID)
		if ta != tb || fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("Check(%s): Observe %q, %v; Seed %q, %v", c.ID, ta, errA, tb, errB)
		}
		if ta != "" {
			open++
		}
	}
	if open == 0 {
		t.Fatal("no connection is open: the mix does not test tokens")
	}
}
