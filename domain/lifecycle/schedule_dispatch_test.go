package lifecycle_test

import (
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// seqOf returns the stream sequence of the connection's first event of
// type typ.
func (e *env) seqOf(id string, typ domain.EventType) uint64 {
	e.t.Helper()
	for _, ev := range e.history(id) {
		if ev.Type() == typ {
			return ev.Seq
		}
	}
	e.t.Fatalf("%s has no %s", id, typ)
	return 0
}

// planned returns when the scheduler plans the connection's refresh.
func (e *env) planned(id string) (planned, natural time.Time) {
	e.t.Helper()
	planned, natural, ok := lifecycle.PlannedRefresh(e.svc, id)
	if !ok {
		e.t.Fatalf("no refresh planned for %s", id)
	}
	return planned, natural
}

// A job due at T starts at T on the clock, however long the tick: the
// scheduler sleeps until the next due time, not for a fixed period.
func TestJobStartsAtItsDueTimeNotAtTheNextTick(t *testing.T) {
	var mu sync.Mutex
	var lateness []time.Duration
	e := newEnv(t, withConfig(func(c *lifecycle.Config) {
		c.Tick = time.Hour
		c.ObserveLateness = func(job string, late time.Duration) {
			mu.Lock()
			lateness = append(lateness, late)
			mu.Unlock()
		}
	}))
	id := e.active()
	due, natural := e.planned(id)
	if !due.Equal(natural) {
		t.Fatalf("one connection: planned %v, due %v", due, natural)
	}
	stop := e.run()
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(due.Add(-time.Millisecond))
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.tep.Requests(memory.RequestRefresh); n != 0 {
		t.Fatalf("%d refreshes before the due time", n)
	}
	e.clock.Set(due)
	e.waitFor(id, "refresh.succeeded", hasType(domain.EventRefreshSucceeded))
	stop()
	if at := find[domain.RefreshStarted](e, id); at.Trigger != domain.TriggerSchedule {
		t.Fatalf("refresh.started %+v", at)
	}
	for _, ev := range e.history(id) {
		if ev.Type() == domain.EventRefreshStarted && !ev.Time.Equal(due) {
			t.Fatalf("refresh started at %v, %v after its due time", ev.Time, ev.Time.Sub(due))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(lateness, []time.Duration{0}) {
		t.Fatalf("lateness observed %v, want [0s]", lateness)
	}
}

// When the worker pool is full, the next free slot goes to the earliest
// due job, also one queued after others became due: here an interrupted
// invalidation (due at once) queued while a refresh holds the only slot and
// another refresh is already due.
func TestEarliestDueJobTakesTheNextFreeSlot(t *testing.T) {
	e := newEnv(t, withConfig(func(c *lifecycle.Config) { c.Concurrency = 1 }))
	p, q := e.active(), e.active()
	dp, _ := e.planned(p)
	dq, _ := e.planned(q)
	if dq.Before(dp) {
		p, q, dp, dq = q, p, dq, dp
	}
	hold := e.tep.Hold(memory.RequestRefresh)
	stop := e.run()
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(dq.Add(time.Second)) // both due; p, the earlier, takes the slot
	if err := hold.WaitHeld(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Meanwhile another instance records a terminal failure of another
	// connection and dies before invalidating its tokens: the scheduler is
	// to finish that invalidation.
	s := e.active()
	e.appendRaw(s, domain.RefreshStarted{Attempt: 1, LeaseUntil: e.clock.Now().Add(time.Minute), Trigger: domain.TriggerSchedule})
	e.appendRaw(s, domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", Attempt: 1, Reason: domain.ReasonInvalidGrant})
	hold.Release()
	e.waitFor(q, "q's refresh", hasType(domain.EventRefreshSucceeded))
	e.waitFor(s, "s's invalidation", hasType(domain.EventTokensInvalidated))
	stop()
	if e.seqOf(p, domain.EventRefreshStarted) > e.seqOf(q, domain.EventRefreshStarted) {
		t.Error("q, due later, started before p")
	}
	if inv, rq := e.seqOf(s, domain.EventTokensInvalidated), e.seqOf(q, domain.EventRefreshStarted); inv > rq {
		t.Errorf("the invalidation (due at once) ran after q's refresh (seq %d > %d): the slot went to a job taken off the queue earlier", inv, rq)
	}
}

// A burst of connections issued together, more than the scheduler serves
// at their due time, is spread ahead of it; each refresh then runs at its
// planned time (the refresh's own due check agrees with the plan) and the
// next one is planned a lifetime later.
func TestSpreadRefreshesRunAtTheirPlannedTimes(t *testing.T) {
	e := newEnv(t, withConfig(func(c *lifecycle.Config) { c.Concurrency = 1 }),
		func(_ *lifecycle.Config, tc *memory.TokenEndpointConfig) { tc.AccessTokenLifetime = 20 * time.Second })
	lifecycle.SetRefreshDuration(e.svc, 4*time.Second) // room for one refresh a second
	start := e.clock.Now()
	ids := []string{e.active(), e.active(), e.active(), e.active()}
	plan := map[string]time.Time{}
	moved := 0
	seconds := map[int64]bool{}
	for _, id := range ids {
		at, natural := e.planned(id)
		if at.After(natural) || at.Before(start.Add(4*time.Second)) {
			t.Fatalf("%s planned at +%v, outside [+4s, +%v]", id, at.Sub(start), natural.Sub(start))
		}
		if !at.Equal(natural) {
			moved++
		}
		if seconds[at.Unix()] {
			t.Fatalf("two refreshes planned in second %d", at.Unix())
		}
		seconds[at.Unix()] = true
		plan[id] = at
	}
	if moved == 0 {
		t.Fatal("nothing spread: four refreshes due within 0.4 s with room for one a second")
	}
	slices.SortFunc(ids, func(a, b string) int { return plan[a].Compare(plan[b]) })
	stop := e.run()
	for _, id := range ids {
		if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
			t.Fatal(err)
		}
		e.clock.Set(plan[id])
		e.waitFor(id, "the refresh", hasType(domain.EventRefreshSucceeded))
		for _, ev := range e.history(id) {
			if ev.Type() == domain.EventRefreshStarted && !ev.Time.Equal(plan[id]) {
				t.Fatalf("%s started at +%v, planned +%v", id, ev.Time.Sub(start), plan[id].Sub(start))
			}
		}
		// The next refresh is planned from the new tokens (once the status
		// projection has told the scheduler of the refresh).
		var next, natural time.Time
		for ok := false; !ok || !next.After(plan[id]); {
			if e.ctx.Err() != nil {
				t.Fatalf("%s: the next refresh was not planned", id)
			}
			runtime.Gosched()
			next, natural, ok = lifecycle.PlannedRefresh(e.svc, id)
		}
		if next.Before(plan[id].Add(4*time.Second)) || next.After(natural) {
			t.Fatalf("%s: next refresh at +%v", id, next.Sub(start))
		}
	}
	stop()
}
