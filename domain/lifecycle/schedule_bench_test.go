package lifecycle

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// benchClock is a clock the benchmark moves.
type benchClock struct{ t *time.Time }

func (c benchClock) Now() time.Time                       { return *c.t }
func (c benchClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }

// BenchmarkDueJobs measures the scheduler's own work per refresh job over
// 100k active connections with 15-minute tokens issued evenly over the
// last 15 minutes (the steady state: about 140 refreshes a second). One op
// is what Run and the status projection's hook do for one refresh, minus
// the refresh itself and the sleep until it is due: take pops the earliest
// due job off the heap (moving the clock to its due time when none is due
// yet, as Run's timer does), Observe plans the connection after
// refresh.started (a lease recovery job) and after refresh.succeeded (the
// next refresh, spread), and the worker's completion clears it from the
// jobs in flight and records its duration for the spreading capacity.
// "idle" is one look at the queue when nothing is due (what every tick
// costs between jobs).
//
//	go test -run '^$' -bench DueJobs ./domain/lifecycle/
func BenchmarkDueJobs(b *testing.B) {
	const conns = 100_000
	const life = 15 * time.Minute
	newSched := func(now *time.Time) (*Service, []string) {
		s := &Service{cfg: Config{Margin: DefaultMargin, Concurrency: 16, Lease: 30 * time.Second, LeaseGrace: 30 * time.Second},
			clock: benchClock{now}, sched: map[string]*schedEntry{}, inflight: map[string]bool{}, spread: newSpreader(16)}
		ids := make([]string, conns)
		for i := range ids {
			ids[i] = uuid.NewString()
			issued := now.Add(-life + time.Duration(i)*life/conns)
			s.Observe(nil, activeConn(ids[i], 3, issued, life))
		}
		return s, ids
	}
	b.Run("dispatch", func(b *testing.B) {
		now := time.Unix(1_700_000_000, 0)
		s, _ := newSched(&now)
		b.ReportAllocs()
		for b.Loop() {
			t, wait, ok := s.take(now)
			if !ok {
				if wait <= 0 {
					b.Fatal("nothing queued")
				}
				now = now.Add(wait) // Run's timer fires at the due time
				if t, _, ok = s.take(now); !ok {
					b.Fatal("nothing due at its due time")
				}
			}
			if t.job.kind != "refresh" {
				b.Fatalf("job %q", t.job.kind)
			}
			id := t.job.id
			seq := t.seq
			s.Observe(nil, &domain.Connection{ID: id, Version: seq + 1, State: domain.StateRefreshing, Since: now, TokensHeld: true,
				LeaseUntil: now.Add(s.cfg.Lease), Tokens: domain.TokenInfo{RefreshTokenFP: "sha256:9ad50a31977d", AccessTokenExpiresAt: now.Add(time.Minute)}})
			s.Observe(nil, &domain.Connection{ID: id, Version: seq + 2, State: domain.StateActive, Since: now, TokensHeld: true,
				LastRefreshAt: now, LastRefreshOK: true, Tokens: domain.TokenInfo{RefreshTokenFP: "sha256:9ad50a31977d", AccessTokenExpiresAt: now.Add(life)}})
			s.mu.Lock()
			delete(s.inflight, id)
			s.spread.observe(50 * time.Millisecond)
			if en := s.sched[id]; en == nil || en.idx < 0 || en.job != jobRefresh {
				b.Fatal("not planned again")
			}
			s.mu.Unlock()
		}
		per := b.Elapsed() / time.Duration(b.N)
		rate := float64(conns) / (0.8 * life.Seconds()) // refreshed about 12 minutes into 15
		fmt.Printf("scheduler dispatch of one refresh job over 100k connections (take, plan after refresh.started and refresh.succeeded, completion): %v per job; at %.0f refreshes/s, %.3f%% of one core\n",
			per, rate, 100*rate*per.Seconds())
	})
	b.Run("idle", func(b *testing.B) {
		now := time.Unix(1_700_000_000, 0)
		s, _ := newSched(&now)
		for { // take everything due now: the next job is in the future
			if _, _, ok := s.take(now); !ok {
				break
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := s.take(now); ok {
				b.Fatal("a job is due")
			}
		}
		per := b.Elapsed() / time.Duration(b.N)
		fmt.Printf("scheduler look at its queue when nothing is due (100k connections): %v (%.5f%% of one core at a 250 ms tick)\n", per, 100*float64(per)/float64(250*time.Millisecond))
	})
}

// BenchmarkObserveBurst measures planning a burst: 100k connections whose
// 15-minute tokens were issued at the same moment (a restart after an
// outage, the worst case of spreading: most go to the least loaded second
// of a 9-minute window), observed one after the other as the status
// projection's seeding does.
func BenchmarkObserveBurst(b *testing.B) {
	now := time.Unix(1_700_000_000, 0)
	ids := make([]string, 100_000)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	for b.Loop() {
		s := &Service{cfg: Config{Margin: DefaultMargin, Concurrency: 16}, clock: stoppedClock{now},
			sched: map[string]*schedEntry{}, inflight: map[string]bool{}, spread: newSpreader(16)}
		for _, id := range ids {
			s.Observe(nil, activeConn(id, 3, now, 15*time.Minute))
		}
	}
	fmt.Printf("planning 100k connections issued together: %v each\n", b.Elapsed()/time.Duration(b.N*len(ids)))
}
