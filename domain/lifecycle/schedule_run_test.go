package lifecycle_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// run starts the scheduler of the env's instance and returns a function that
// stops it and waits for it to return.
func (e *env) run() (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { e.svc.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-e.ctx.Done():
			e.t.Fatal("Run did not return after its context was cancelled")
		}
	}
	e.t.Cleanup(stop)
	return stop
}

// tick waits until the scheduler waits on its tick, then moves the clock
// by d (firing the tick).
func (e *env) tick(d time.Duration) {
	e.t.Helper()
	if d < 250*time.Millisecond {
		e.t.Fatalf("tick of %v: the scheduler's After(Tick) fires only 250ms after it was called", d)
	}
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
		e.t.Fatalf("scheduler not waiting on the clock: %v", err)
	}
	e.clock.Advance(d)
}

// The path: a scheduled refresh (Run on the fake clock) that gets a
// terminal invalid_grant loads the aggregate once and appends three events:
// the refresh.started lock, the terminal refresh.failed, tokens.invalidated.
func TestScheduledRefreshInvalidGrantLoadsOnceAppendsThrice(t *testing.T) {
	e, id, n := activeEnv(t)
	tokens, _ := e.vault.Get(e.ctx, id)
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	closedFirst := refusedWhileAppending[domain.RefreshFailed](e, id, domain.ReasonInvalidGrant)
	e.store.ResetCounters()

	stop := e.run()
	e.tick(time.Minute) // not due yet: 15-minute tokens are refreshed about 3 minutes ahead
	e.tick(time.Second)
	if got := e.events(id); got != n || e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatalf("refreshed before due: %d events, %d requests", got-n, e.tep.Requests(memory.RequestRefresh))
	}
	e.tick(12*time.Minute + 30*time.Second)
	e.waitFor(id, "tokens.invalidated", hasType(domain.EventTokensInvalidated))
	stop()

	if l, a := e.store.Loads(), e.store.Appends(); l != 1 || a != 3 {
		t.Errorf("invalid_grant path: %d loads and %d appends, want 1 and 3", l, a)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	h := e.history(id)[n:]
	if rs := h[0].Payload.(domain.RefreshStarted); rs.Trigger != domain.TriggerSchedule || rs.Attempt != 1 {
		t.Errorf("refresh.started %+v", rs)
	}
	rf := h[1].Payload.(domain.RefreshFailed)
	if !rf.Terminal || rf.Class != "terminal" || rf.Reason != domain.ReasonInvalidGrant || rf.ErrorCode != "invalid_grant" || rf.HTTPStatus != 400 {
		t.Errorf("refresh.failed %+v", rf)
	}
	if ti := h[2].Payload.(domain.TokensInvalidated); ti.Reason != domain.ReasonInvalidGrant || !ti.ProviderRevoked ||
		ti.RefreshTokenFP != domain.Fingerprint(tokens.RefreshToken) || ti.AccessTokenFP != domain.Fingerprint(tokens.AccessToken) {
		t.Errorf("tokens.invalidated %+v", ti)
	}
	c := e.load(id)
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonInvalidGrant || c.TokensHeld {
		t.Errorf("connection %s (%s) tokens held %v", c.State, c.Reason, c.TokensHeld)
	}
	expectClosed(t, e.instance, id, domain.ReasonInvalidGrant)
	if !closedFirst.Load() {
		t.Error("the gate was not closed before refresh.failed was appended")
	}
	if e.vault.Has(id) {
		t.Error("tokens left in the vault")
	}
	if r := e.tep.Requests(memory.RequestRevoke); r != 2 {
		t.Errorf("%d revocation requests, want 2 (refresh and access token)", r)
	}
	if e.tep.LiveGrants() != 0 {
		t.Error("the grant is still live at the provider")
	}
}

// A due refresh through the scheduler succeeds and the next one is planned
// from the new tokens.
func TestScheduledRefreshSucceedsAndIsPlannedAgain(t *testing.T) {
	e, id, n := activeEnv(t)
	stop := e.run()
	e.tick(13 * time.Minute)
	e.waitFor(id, "refresh.succeeded", hasType(domain.EventRefreshSucceeded))
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	e.applied(id)
	tok := e.expectOpen(e.instance, id)
	if tk, exp, err := e.svc.Token(e.ctx, id); err != nil || tk != tok || !exp.Equal(e.load(id).Tokens.AccessTokenExpiresAt) {
		t.Fatalf("Token: %q %v %v", tk, exp, err)
	}
	e.tick(5 * time.Minute) // not due again: the new token lives 15 minutes from now
	e.tick(time.Second)
	if got := e.events(id); got != n+2 {
		t.Fatalf("refreshed again too soon: %v", e.typesSince(id, n))
	}
	e.tick(8 * time.Minute)
	e.waitFor(id, "a second refresh", func(h []domain.Event) bool { return len(h) == n+4 })
	stop()
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
}

// A job that changed nothing (its load failed) is queued again, no sooner
// than a second later.
func TestScheduledJobThatChangedNothingIsRetried(t *testing.T) {
	failed := make(chan struct{}, 1)
	e := newEnv(t, withConfig(func(c *lifecycle.Config) {
		c.Store = loadHook{c.Store.(*memory.EventStore), func(err error) {
			if err != nil {
				failed <- struct{}{}
			}
		}}
	}))
	id := e.active()
	n := e.events(id)
	e.store.FailLoads(1, errors.New("stream unreachable"))
	e.store.ResetCounters()
	stop := e.run()
	e.tick(13 * time.Minute)
	failedAt := e.clock.Now()
	select {
	case <-failed:
	case <-e.ctx.Done():
		t.Fatal("the refresh job did not run")
	}
	// The job re-plans itself on its own goroutine, which the runtime may
	// run only some ticks later: tick until the retry shows.
	for e.events(id) == n {
		if e.ctx.Err() != nil {
			t.Fatalf("not retried; %d loads", e.store.Loads())
		}
		e.tick(250 * time.Millisecond)
		runtime.Gosched()
	}
	e.waitFor(id, "the retried refresh", hasType(domain.EventRefreshSucceeded))
	stop()
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if l := e.store.Loads(); l != 2 {
		t.Errorf("%d loads, want 2 (the failed one and the retry)", l)
	}
	if at := e.history(id)[n].Time; at.Sub(failedAt) < time.Second {
		t.Errorf("retried %v after the failure, want at least 1s", at.Sub(failedAt))
	}
}

// applied waits until the env's status projection (and so its gate and
// scheduler) has applied the connection's last stored event: the store
// shows an event before its append hooks have run.
func (e *env) applied(id string) {
	e.t.Helper()
	h := e.history(id)
	for {
		if c, ok := e.status.Connection(id); ok && c.Version >= h[len(h)-1].Seq {
			return
		}
		if e.ctx.Err() != nil {
			e.t.Fatalf("the status projection never applied %s's last event", id)
		}
		runtime.Gosched()
	}
}

// loadHook tells after every Load.
type loadHook struct {
	*memory.EventStore
	after func(error)
}

func (s loadHook) Load(ctx context.Context, id string) (domain.Connection, error) {
	c, err := s.EventStore.Load(ctx, id)
	s.after(err)
	return c, err
}

// An authorisation attempt nobody completes expires (authorisation_expired).
func TestSchedulerExpiresAnAbandonedAuthorisation(t *testing.T) {
	e := newEnv(t)
	id := e.create()
	state, _ := e.start(id)
	stop := e.run()
	e.tick(9 * time.Minute)
	e.tick(time.Minute - time.Millisecond)               // the tick lands 1ms before the expiry
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil { // that tick is handled
		t.Fatal(err)
	}
	if c := e.load(id); c.State != domain.StateReauthorising || e.events(id) != 2 {
		t.Fatalf("expired early: %s", c.State)
	}
	e.tick(250 * time.Millisecond)

	e.waitFor(id, "authorisation.failed", hasType(domain.EventAuthorisationFailed))
	stop()
	af := last[domain.AuthorisationFailed](e, id)
	if af.Reason != domain.ReasonAuthorisationExpired || af.ErrorCode != "expired" {
		t.Fatalf("authorisation.failed %+v", af)
	}
	if c := e.load(id); c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAuthorisationExpired {
		t.Fatalf("%s (%s)", c.State, c.Reason)
	}
	e.callbackFails("callback after expiry", state, "code", lifecycle.ErrStateExpired)
}

// An invalidation interrupted after the terminal event (the vault delete
// failed) is finished by the scheduler, and the tokens are revoked once.
func TestSchedulerFinishesAnInterruptedInvalidation(t *testing.T) {
	e, id, n := activeEnv(t)
	e.vault.FailDeletes(1, errors.New("vault unreachable"))
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	var te *lifecycle.TerminalError
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &te) {
		t.Fatalf("Refresh: %v", err)
	}
	if c := e.load(id); c.State != domain.StateUnauthenticated || !c.TokensHeld || !e.vault.Has(id) {
		t.Fatalf("%s, tokens held %v", c.State, c.TokensHeld)
	}
	expectClosed(t, e.instance, id, domain.ReasonInvalidGrant)
	stop := e.run()
	e.tick(time.Second)
	e.waitFor(id, "tokens.invalidated", hasType(domain.EventTokensInvalidated))
	stop()
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	if e.vault.Has(id) || e.load(id).TokensHeld {
		t.Fatal("tokens left")
	}
	if ti := last[domain.TokensInvalidated](e, id); ti.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if r := e.tep.Requests(memory.RequestRevoke); r != 2 {
		t.Fatalf("%d revocation requests, want 2", r)
	}
}

// Run returns when its context is cancelled, also while it waits for a
// free slot (Concurrency) and a job is past its token request.
func TestRunReturnsWhenCancelled(t *testing.T) {
	e := newEnv(t, withConfig(func(c *lifecycle.Config) { c.Concurrency = 1 }))
	a, b := e.active(), e.active()
	hold := e.tep.Hold(memory.RequestRefresh)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { e.svc.Run(ctx); close(done) }()
	e.tick(13 * time.Minute) // both due; the first takes the only slot
	if err := hold.WaitHeld(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	hold.Release()
	select {
	case <-done:
	case <-e.ctx.Done():
		t.Fatal("Run did not return")
	}
	// On return no job runs: the refresh past its token request finished
	// (recorded); the job waiting for a slot never started.
	var done1, started int
	for _, id := range []string{a, b} {
		for _, ev := range e.history(id) {
			switch ev.Type() {
			case domain.EventRefreshSucceeded:
				done1++
			case domain.EventRefreshStarted:
				started++
			}
		}
	}
	if done1 != 1 || started != 1 || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatalf("%d refreshes started, %d finished, %d requests; want the one in flight only", started, done1, e.tep.Requests(memory.RequestRefresh))
	}
}
