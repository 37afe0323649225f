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
