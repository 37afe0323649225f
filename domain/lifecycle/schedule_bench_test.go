package lifecycle

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// BenchmarkDueJobs measures one look of the scheduler at its queue over 100k
// active connections of which none is due (the steady state between
// refreshes).
func BenchmarkDueJobs(b *testing.B) {
	s := &Service{cfg: Config{Margin: DefaultMargin}, sched: map[string]*schedEntry{}, inflight: map[string]bool{}}
	now := time.Now()
	for i := 0; i < 100_000; i++ {
		en := &schedEntry{idx: -1, seq: 3, state: domain.StateActive, tokensHeld: true, issuedAt: now, expiresAt: now.Add(15 * time.Minute)}
		id := uuid.NewString()
		s.sched[id] = en
		s.plan(id, en)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, ok := s.take(now); ok {
			b.Fatal("a job is due")
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	fmt.Printf("scheduler look at its queue over 100k connections: %v (%.1f%% of one core at a 250 ms tick)\n", per, 100*float64(per)/float64(250*time.Millisecond))
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
