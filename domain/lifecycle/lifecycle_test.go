package lifecycle

import (
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

func TestBackoffIsExponentialJitteredBoundedAndHonoursRetryAfter(t *testing.T) {
	s := &Service{cfg: Config{BackoffBase: time.Second, BackoffMax: 30 * time.Second}}
	for attempt := 1; attempt <= 8; attempt++ {
		full := min(time.Second<<(attempt-1), 30*time.Second)
		for i := 0; i < 200; i++ {
			d := s.backoff(attempt, 0)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
	if d := s.backoff(1, 20*time.Second); d != 20*time.Second {
		t.Fatalf("Retry-After not honoured: %v", d)
	}
}

func TestDefaultMargin(t *testing.T) {
	floor5s := 1250 * time.Millisecond
	floor5s = floor5s*10/9 + time.Microsecond
	for life, want := range map[time.Duration]time.Duration{
		15 * time.Minute: 3 * time.Minute, // Pleo's access tokens
		time.Hour:        5 * time.Minute, // capped
		24 * time.Hour:   5 * time.Minute, // capped
		// 20 s: L/5 = 4 s is above the floor (2 s margin + 0.75 s latency and slack)/0.9
		20 * time.Second: 4 * time.Second,
		// 5 s: the floor (0.5 s margin + 0.75 s)/0.9 wins over L/5 = 1 s
		5 * time.Second: floor5s,
	} {
		if got := DefaultMargin(life); got != want {
			t.Errorf("DefaultMargin(%v) = %v, want %v", life, got, want)
		}
	}
}

// The scheduler's queue hands out jobs in due order, only when due, and
// re-plans an entry when the aggregate it follows changes.
func TestSchedulerQueue(t *testing.T) {
	s := &Service{cfg: Config{Margin: DefaultMargin, LeaseGrace: 30 * time.Second}, sched: map[string]*schedEntry{}, inflight: map[string]bool{}}
	t0 := time.Unix(1_700_000_000, 0).UTC()
	conns := map[string]*domain.Connection{}
	var history []domain.Connection // every aggregate observed, in order
	ev := func(id string, seq uint64, at time.Time, p domain.Payload) {
		c := conns[id]
		if c == nil {
			c = &domain.Connection{}
			conns[id] = c
		}
		before := c.Clone()
		if err := c.Apply(domain.Event{ConnectionID: id, Seq: seq, Time: at, Payload: p}); err != nil {
			t.Fatalf("%s seq %d: %v", id, seq, err)
		}
		history = append(history, c.Clone())
		s.Observe(&before, c)
	}
	active := func(id string, seq uint64, life time.Duration) {
		ev(id, seq, t0, domain.ConnectionCreated{Provider: "p"})
		ev(id, seq+1, t0, domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: t0.Add(10 * time.Minute)})
		ev(id, seq+2, t0, domain.AuthorisationCompleted{AttemptID: "a", Tokens: domain.TokenInfo{AccessTokenExpiresAt: t0.Add(life), RefreshTokenFP: "sha256:000000000001"}})
	}
	active("late", 1, 15*time.Minute)
	active("soon", 10, 5*time.Minute)
	ev("open", 20, t0, domain.ConnectionCreated{Provider: "p"})
	ev("open", 21, t0, domain.AuthorisationStarted{AttemptID: "b", ExpiresAt: t0.Add(2 * time.Minute)})

	if j := s.dueJobs(t0.Add(time.Minute)); len(j) != 0 {
		t.Fatalf("nothing is due yet: %v", j)
	}
	if j := s.dueJobs(t0.Add(3 * time.Minute)); len(j) != 1 || j[0] != (job{"open", "expire"}) {
		t.Fatalf("at +3m: %v", j)
	}
	if j := s.dueJobs(t0.Add(5 * time.Minute)); len(j) != 1 || j[0] != (job{"soon", "refresh"}) {
		t.Fatalf("at +5m: %v", j)
	}
	// A transient failure re-plans "late" for its retry time.
	ev("late", 4, t0.Add(6*time.Minute), domain.RefreshStarted{LeaseUntil: t0.Add(7 * time.Minute)})
	ev("late", 5, t0.Add(6*time.Minute), domain.RefreshFailed{RetryAt: t0.Add(8 * time.Minute)})
	if j := s.dueJobs(t0.Add(7 * time.Minute)); len(j) != 0 {
		t.Fatalf("before the retry time: %v", j)
	}
	if j := s.dueJobs(t0.Add(8 * time.Minute)); len(j) != 1 || j[0] != (job{"late", "refresh"}) {
		t.Fatalf("at the retry time: %v", j)
	}
	// The latest notification is what the scheduler plans for: the
	// aggregate at refresh.started (the refresh in flight) is recovered
	// after its lease, not refreshed.
	for _, old := range history {
		if old.ID == "late" && old.Version == 4 {
			s.Observe(nil, &old)
		}
	}
	if en := s.sched["late"]; en.state.State() != domain.StateRefreshing || en.job.String() != "recover" || !timeOf(en.due).Equal(t0.Add(7*time.Minute+30*time.Second)) {
		t.Fatalf("entry %s job %q due %v", en.state.State(), en.job, timeOf(en.due))
	}
	// A lease extension moves the recovery: a live holder is not recovered.
	ext := history[len(history)-2].Clone() // "late" at refresh.started
	if err := ext.Apply(domain.Event{ConnectionID: "late", Seq: 5, Time: t0.Add(7 * time.Minute), Payload: domain.RefreshLeaseExtended{LeaseUntil: t0.Add(8 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	s.Observe(nil, &ext)
	if j := s.dueJobs(t0.Add(8 * time.Minute)); len(j) != 0 {
		t.Fatalf("an extended lease recovered: %v", j)
	}
	if j := s.dueJobs(t0.Add(8*time.Minute + 30*time.Second)); len(j) != 1 || j[0] != (job{"late", "recover"}) {
		t.Fatalf("after the extended lease and its grace: %v", j)
	}
}
