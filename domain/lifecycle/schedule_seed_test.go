package lifecycle

import (
	"container/heap"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// seedMix is a mixed set of connections as a start-up seeds them: a burst
// of active ones (spreading moves some), active ones with various
// expiries, one retrying after a transient failure, one without a refresh
// token, refreshing ones with leases, reauthorising ones with an attempt
// expiry, unauthenticated ones with and without tokens held (an
// invalidation pending), and deleted ones.
func seedMix(t0 time.Time) []*domain.Connection {
	var out []*domain.Connection
	for i := range 400 {
		out = append(out, activeConn(fmt.Sprintf("burst-%03d", i), 3, t0.Add(-time.Minute), 10*time.Minute))
	}
	for i := range 50 {
		c := activeConn(fmt.Sprintf("active-%02d", i), uint64(3+i), t0.Add(-time.Duration(i)*time.Minute), time.Duration(5+i)*time.Minute)
		if i%7 == 0 { // refreshed since it became active
			c.LastRefreshAt, c.LastRefreshOK = t0.Add(-time.Duration(i)*time.Second), true
		}
		out = append(out, c)
	}
	retry := activeConn("retrying", 9, t0.Add(-5*time.Minute), 10*time.Minute)
	retry.RetryAt = t0.Add(30 * time.Second)
	noRefresh := activeConn("no-refresh", 4, t0.Add(-time.Minute), time.Hour)
	noRefresh.Tokens.RefreshTokenFP = ""
	out = append(out, retry, noRefresh)
	for i := range 10 {
		out = append(out, &domain.Connection{ID: fmt.Sprintf("refreshing-%d", i), Version: 7, State: domain.StateRefreshing,
			TokensHeld: true, LeaseUntil: t0.Add(time.Duration(i-5) * time.Minute)})
		out = append(out, &domain.Connection{ID: fmt.Sprintf("reauth-%d", i), Version: 2, State: domain.StateReauthorising,
			AttemptExpiresAt: t0.Add(time.Duration(i) * time.Minute)})
		out = append(out, &domain.Connection{ID: fmt.Sprintf("unauth-held-%d", i), Version: 12, State: domain.StateUnauthenticated,
			TokensHeld: true, Reason: domain.ReasonInvalidGrant})
		out = append(out, &domain.Connection{ID: fmt.Sprintf("unauth-%d", i), Version: 13, State: domain.StateUnauthenticated,
			Reason: domain.ReasonInvalidGrant})
		out = append(out, &domain.Connection{ID: fmt.Sprintf("deleted-%d", i), Version: 14, State: domain.StateUnauthenticated,
			Deleted: true, TokensHeld: i%2 == 0, Reason: domain.ReasonConnectionDeleted})
	}
	return out
}

// plans returns every entry's job and due time, and the jobs in the order
// the queue hands them out (by due time; the order of equal due times is
// not part of the plan).
func plans(t *testing.T, s *Service) (map[string]string, []string) {
	t.Helper()
	jobs := map[string]string{}
	for id, en := range s.sched {
		queued := en.idx >= 0
		if queued != (en.job != jobNone) || queued && s.dueQ[en.idx] != en {
			t.Fatalf("%s: job %q, queue index %d", id, en.job, en.idx)
		}
		jobs[id] = fmt.Sprintf("%s@%s", en.job, timeOf(en.due).Format(time.RFC3339Nano))
	}
	q := append(dueQueue(nil), s.dueQ...)
	var order []string
	for q.Len() > 0 {
		en := heap.Pop(&q).(*schedEntry)
		order = append(order, timeOf(en.due).Format(time.RFC3339Nano))
	}
	for _, en := range s.dueQ {
		en.idx = -1 // Pop reset them; the caller does not use the queue afterwards
	}
	return jobs, order
}

// Seeding in bulk (Seed) plans exactly what one Observe per connection, in
// the same order, plans: the same jobs at the same times, the same
// spreading load, the same prober entries; into an empty scheduler (heap
// built at once) and into one that already holds entries (some seen again).
func TestSeedPlansAsObserve(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	conns := seedMix(t0)
	for _, pre := range []int{0, 30} {
		t.Run(fmt.Sprintf("observed-before=%d", pre), func(t *testing.T) {
			one := spreadService(t0, 2, 100*time.Millisecond) // 15 refreshes a second: the burst is spread
			bulk := spreadService(t0, 2, 100*time.Millisecond)
			for _, c := range conns[len(conns)-pre:] {
				one.Observe(nil, c)
				bulk.Observe(nil, c)
			}
			for _, c := range conns {
				one.Observe(nil, c)
			}
			bulk.Seed(conns)

			if len(one.sched) != len(conns) || len(bulk.sched) != len(conns) {
				t.Fatalf("entries: %d by Observe, %d by Seed; want %d", len(one.sched), len(bulk.sched), len(conns))
			}
			jobsOne, orderOne := plans(t, one)
			jobsBulk, orderBulk := plans(t, bulk)
			kinds := map[string]int{}
			for id, want := range jobsOne {
				if got := jobsBulk[id]; got != want {
					t.Errorf("%s: Seed planned %q, Observe %q", id, got, want)
				}
				kind, _, _ := strings.Cut(want, "@")
				kinds[kind]++
			}
			if fmt.Sprint(orderOne) != fmt.Sprint(orderBulk) {
				t.Errorf("queue order differs:\nObserve %v\nSeed    %v", orderOne, orderBulk)
			}
			if !maps.Equal(one.spread.load, bulk.spread.load) {
				t.Errorf("spreading load differs: Observe %v, Seed %v", one.spread.load, bulk.spread.load)
			}
			if n := perSecond(bulk); busiest(n) >= 400 {
				t.Errorf("the burst was not spread: %d in one second", busiest(n))
			}
			if len(one.probes.conns) != len(bulk.probes.conns) {
				t.Errorf("prober entries: Observe %d, Seed %d", len(one.probes.conns), len(bulk.probes.conns))
			}
			for id, a := range one.probes.conns {
				if b, ok := bulk.probes.conns[id]; !ok || a != b || one.probes.providers.name(a.provider) != bulk.probes.providers.name(b.provider) {
					t.Errorf("prober entry %s: Observe %+v, Seed %+v", id, a, b)
				}
			}
			// Every kind of job is in the mix.
			for _, kind := range []string{"refresh", "recover", "expire", "invalidate", "lapse", ""} {
				if kinds[kind] == 0 {
					t.Errorf("no %q job in the mix: %v", kind, kinds)
				}
			}
		})
	}
}

// BenchmarkSeed seeds a scheduler with 100k active connections as
// BenchmarkColdStart's (one-hour tokens issued 1 to 10 minutes ago; the
// default Concurrency of 16) by one Observe per connection and at once
// (Seed), interleaved; "unspread" seeds without spreading (the share of
// the time spreading takes: 185 refreshes come due a second, more than
// the 120 a second it plans before it moves them earlier).
//
//	go test -run '^$' -bench 'Seed$' ./domain/lifecycle/
func BenchmarkSeed(b *testing.B) {
	t0 := time.Now()
	conns := make([]*domain.Connection, benchSize(100_000, 5_000))
	for i := range conns {
		issued := t0.Add(-time.Minute - time.Duration(i*540/len(conns))*time.Second)
		conns[i] = activeConn(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), 10, issued, time.Hour)
	}
	for _, mode := range []string{"observe", "seed", "observe-unspread", "seed-unspread"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				s := spreadService(t0, 16, spreadInitialJob)
				if strings.HasSuffix(mode, "-unspread") {
					s.spread = nil
				}
				if strings.HasPrefix(mode, "seed") {
					s.Seed(conns)
					continue
				}
				for _, c := range conns {
					s.Observe(nil, c)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(conns)), "ns/conn")
		})
	}
}

// placeRef is place as it was before it passed over full runs (skip): the
// reference TestSpreadSkipPlacesAsScan compares with.
func (p *spreader) placeRef(id string, due, earliest time.Time) time.Time {
	if !due.After(earliest) {
		return due
	}
	last := bucketOf(due)
	first := last - int64(due.Sub(earliest)/spreadBucket)
	room, capacity := p.perBucket()
	best, bestLoad := last, p.load[last]
	for b := last; b >= first; b-- {
		l := p.load[b]
		if l < room {
			best, bestLoad = b, l
			break
		}
		if l < bestLoad {
			best, bestLoad = b, l
		}
	}
	if best == last || bestLoad >= capacity {
		return due
	}
	return p.phase(id, best, last, earliest, due)
}

// Passing over full runs of buckets places every refresh where scanning
// bucket by bucket does, while refreshes are placed, taken (remove),
// planned again and the capacity changes, across an overloaded window.
func TestSpreadSkipPlacesAsScan(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	rng := rand.New(rand.NewPCG(1, 2))
	p := newSpreader(2)
	p.job = 100 * time.Millisecond // 15 refreshes a second, 20 at most
	var planned []*schedEntry
	moved := 0
	for i := range 30000 {
		id := fmt.Sprintf("c-%d", i)
		due := t0.Add(time.Duration(rng.IntN(600_000)) * time.Millisecond)
		earliest := due.Add(-time.Duration(rng.IntN(900_000)) * time.Millisecond)
		want := p.placeRef(id, due, earliest)
		if got := p.place(id, due, earliest); !got.Equal(want) {
			t.Fatalf("step %d: place %v, scan %v (due %v, earliest %v)", i, got, want, due, earliest)
		}
		if !want.Equal(due) {
			moved++
		}
		en := &schedEntry{spreadDue: nanos(want)}
		p.add(en)
		planned = append(planned, en)
		switch r := rng.IntN(100); {
		case r < 20: // taken or planned again
			k := rng.IntN(len(planned))
			p.remove(planned[k])
			planned[k] = planned[len(planned)-1]
			planned = planned[:len(planned)-1]
		case r == 20: // the measured refresh duration moves
			p.observe(time.Duration(50+rng.IntN(100)) * time.Millisecond)
		}
	}
	if moved == 0 {
		t.Fatal("nothing was moved: the window is not overloaded")
	}
}
