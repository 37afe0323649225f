package lifecycle

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// stoppedClock reads a fixed time.
type stoppedClock struct{ t time.Time }

func (c stoppedClock) Now() time.Time                       { return c.t }
func (c stoppedClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }

// spreadService is a Service with the scheduler's state only, its clock at
// t0, and a capacity of concurrency refreshes per job.
func spreadService(t0 time.Time, concurrency int, job time.Duration) *Service {
	s := &Service{cfg: Config{Margin: DefaultMargin, Concurrency: concurrency}, clock: stoppedClock{t0},
		sched: map[string]*schedEntry{}, inflight: map[string]bool{}, spread: newSpreader(concurrency)}
	s.spread.job = job
	return s
}

// activeConn is a connection whose tokens were issued at issued and live
// for life.
func activeConn(id string, version uint64, issued time.Time, life time.Duration) *domain.Connection {
	return &domain.Connection{ID: id, Version: version, State: domain.StateActive, Since: issued, TokensHeld: true,
		Tokens: domain.TokenInfo{AccessTokenExpiresAt: issued.Add(life), RefreshTokenFP: "sha256:000000000001"}}
}

// perSecond counts the queued refreshes per second of due time.
func perSecond(s *Service) map[int64]int {
	n := map[int64]int{}
	for _, en := range s.dueQ {
		n[timeOf(en.due).Unix()]++
	}
	return n
}

func busiest(n map[int64]int) int {
	top := 0
	for _, c := range n {
		top = max(top, c)
	}
	return top
}

// A burst of connections issued together is spread so that no second holds
// more refreshes than the capacity gives it (3/4 of Concurrency per refresh
// duration), none earlier than a fifth of the lifetime nor later than its
// due time; without spreading, the burst comes due within about a second.
func TestSpreadFlattensABurst(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	const n, life = 3000, 30 * time.Second
	s := spreadService(t0, 16, 50*time.Millisecond) // 320 refreshes a second, 240 planned
	flat := spreadService(t0, 16, 50*time.Millisecond)
	flat.spread = nil
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("conn-%04d", i)
		s.Observe(nil, activeConn(id, 3, t0, life))
		flat.Observe(nil, activeConn(id, 3, t0, life))
	}
	if got := busiest(perSecond(flat)); got < n/2 {
		t.Fatalf("without spreading the busiest second has %d refreshes; the burst should come due together", got)
	}
	r, _ := s.spread.perBucket()
	room := int(r)
	if room != 240 {
		t.Fatalf("room per second %d, want 240", room)
	}
	if got := busiest(perSecond(s)); got > room {
		t.Errorf("the busiest second has %d refreshes, more than the %d the capacity gives it", got, room)
	}
	if len(s.dueQ) != n {
		t.Fatalf("%d queued", len(s.dueQ))
	}
	for id, en := range s.sched {
		natural := s.dueAt(id, t0, t0.Add(life))
		if timeOf(en.due).After(natural) || timeOf(en.due).Before(t0.Add(life/5)) {
			t.Fatalf("%s planned at +%v, outside [+%v, +%v]", id, timeOf(en.due).Sub(t0), life/5, natural.Sub(t0))
		}
		// The refresh is due (for Refresh's own check) at the planned time,
		// not before.
		c := activeConn(id, 3, t0, life)
		if !s.due(c, timeOf(en.due)) || s.due(c, timeOf(en.due).Add(-time.Millisecond)) {
			t.Fatalf("%s: due() disagrees with the plan at +%v", id, timeOf(en.due).Sub(t0))
		}
	}

	// Observed again (another event, same tokens): each keeps its place.
	before := map[string]time.Time{}
	for id, en := range s.sched {
		before[id] = timeOf(en.due)
	}
	for id := range s.sched {
		s.Observe(nil, activeConn(id, 4, t0, life))
	}
	for id, en := range s.sched {
		if !timeOf(en.due).Equal(before[id]) {
			t.Fatalf("%s moved from +%v to +%v when observed again", id, before[id].Sub(t0), timeOf(en.due).Sub(t0))
		}
	}
	if got := busiest(perSecond(s)); got > room {
		t.Errorf("after observing again the busiest second has %d", got)
	}
}

// When the burst does not fit the window at 3/4 of the capacity, the rest
// is shared evenly up to the full capacity; what does not fit at all stays
// at its due time (moving it would only add refreshes). None goes before a
// fifth of the lifetime.
func TestSpreadOverloaded(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	const life = 30 * time.Second
	for _, n := range []int{2500, 4000} {
		s := spreadService(t0, 16, 100*time.Millisecond) // room 120 a second, capacity 160
		for i := 0; i < n; i++ {
			s.Observe(nil, activeConn(fmt.Sprintf("conn-%04d", i), 3, t0, life))
		}
		moved := map[int64]int{}
		kept := 0
		for id, en := range s.sched {
			natural := s.dueAt(id, t0, t0.Add(life))
			switch {
			case timeOf(en.due).Before(t0.Add(life / 5)):
				t.Fatalf("%d: %s planned at +%v, before a fifth of the lifetime", n, id, timeOf(en.due).Sub(t0))
			case timeOf(en.due).Equal(natural):
				kept++
			default:
				moved[timeOf(en.due).Unix()]++
			}
		}
		// The window runs from +6 s to the due times (+23.4 s to +24.6 s):
		// 17 seconds, 18 for some.
		if busiest(moved) > 160 {
			t.Errorf("%d: %d moved into one second, more than the capacity", n, busiest(moved))
		}
		total := 0
		for _, c := range moved {
			total += c
		}
		switch {
		case n == 2500 && busiest(perSecond(s)) > 160:
			t.Errorf("%d: the busiest second has %d refreshes; the window has room for all at 160 a second", n, busiest(perSecond(s)))
		case n == 4000 && (kept < 4000-18*160 || total < 16*120):
			t.Errorf("%d: %d kept at their due time, %d moved; want the window filled and the rest kept", n, kept, total)
		}
	}
}

// With room to spare every refresh stays at its due time, and a planned
// refresh leaves its second when it is taken (it runs) or planned again.
func TestSpreadKeepsDueTimesWhenThereIsRoom(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	s := spreadService(t0, 16, 70*time.Millisecond)
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("conn-%03d", i)
		s.Observe(nil, activeConn(id, 3, t0, 15*time.Minute))
		if en := s.sched[id]; !timeOf(en.due).Equal(s.dueAt(id, t0, t0.Add(15*time.Minute))) {
			t.Fatalf("%s moved to +%v", id, timeOf(en.due).Sub(t0))
		}
	}
	total := func() (n int32) {
		for _, c := range s.spread.load {
			n += c
		}
		return n
	}
	if got := total(); got != 100 {
		t.Fatalf("%d counted, want 100", got)
	}
	for i := 0; i < 10; i++ {
		if _, _, ok := s.take(t0.Add(time.Hour)); !ok {
			t.Fatal("nothing due")
		}
	}
	s.Observe(nil, &domain.Connection{ID: "conn-050", Version: 9, State: domain.StateUnauthenticated})
	if got, want := total(), int32(100-10-1); got != want && got != want+1 {
		t.Fatalf("%d counted after 10 taken and one unauthenticated, want about %d", got, want)
	}
	for len(s.dueQ) > 0 {
		s.take(t0.Add(time.Hour))
	}
	if len(s.spread.load) != 0 {
		t.Fatalf("%d seconds still counted with an empty queue", len(s.spread.load))
	}
}
