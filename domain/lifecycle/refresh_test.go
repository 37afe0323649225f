package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

func TestRefreshNotDue(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.Refresh(e.ctx, unknownID, domain.TriggerManual); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	created := e.create()
	if err := e.svc.Refresh(e.ctx, created, domain.TriggerManual); !errors.Is(err, lifecycle.ErrNotDue) {
		t.Fatalf("never authorised: %v", err)
	}
	id := e.active()
	n := e.events(id)
	e.clock.Advance(11 * time.Minute) // due about 12 minutes into a 15-minute token
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerSchedule); !errors.Is(err, lifecycle.ErrNotDue) {
		t.Fatalf("scheduled before due: %v", err)
	}
	if e.events(id) != n || e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatal("a refresh that was not due did something")
	}
	e.clock.Advance(90 * time.Second)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerSchedule); err != nil {
		t.Fatalf("scheduled when due: %v", err)
	}
}

// The refresh.started append is the lock: losing it sends no token request.
func TestRefreshLosesTheLock(t *testing.T) {
	e, id, n := activeEnv(t)
	e.store.RaceNextAppend(func() { e.appendRaw(id, domain.ConnectionUpdated{Config: map[string]string{"a": "b"}}) })
	e.store.ResetCounters()
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("%v", err)
	}
	// The vault is read before the lock is taken; the loser sends nothing.
	if e.tep.Requests(memory.RequestRefresh) != 0 || e.vault.Gets() != 1 {
		t.Fatalf("the loser read the vault %d times or sent a token request", e.vault.Gets())
	}
	if l, a := e.store.Loads(), e.store.Appends(); l != 1 || a != 2 { // its own and the racer's
		t.Fatalf("%d loads, %d appends", l, a)
	}
	e.expectTypes(id, n, domain.EventConnectionUpdated)
}

func TestRefreshSucceedsWithRotation(t *testing.T) {
	e, id, n := activeEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	oldTok := e.expectOpen(e.instance, id)
	e.clock.Advance(5 * time.Minute)
	e.store.ResetCounters()
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	if l, a := e.store.Loads(), e.store.Appends(); l != 1 || a != 2 {
		t.Errorf("%d loads, %d appends; want 1 and 2", l, a)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	rs := find[domain.RefreshStarted](e, id)
	if rs.Trigger != domain.TriggerManual || rs.RefreshTokenFP != domain.Fingerprint(old.RefreshToken) || rs.Attempt != 1 ||
		!rs.LeaseUntil.Equal(e.clock.Now().Add(30*time.Second)) {
		t.Fatalf("refresh.started %+v", rs)
	}
	toks, _ := e.vault.Get(e.ctx, id)
	if toks.RefreshToken == old.RefreshToken || toks.AccessToken == old.AccessToken {
		t.Fatal("the vault holds the old tokens")
	}
	ok := last[domain.RefreshSucceeded](e, id)
	if !ok.Rotated || ok.Tokens.RefreshTokenFP != domain.Fingerprint(toks.RefreshToken) || ok.Tokens.AccessTokenFP != domain.Fingerprint(toks.AccessToken) ||
		!ok.Tokens.AccessTokenExpiresAt.Equal(e.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	if tok := e.expectOpen(e.instance, id); tok == oldTok {
		t.Fatal("the gate hands out the old token")
	}
	if c := e.load(id); c.State != domain.StateActive || c.TransientFailures != 0 || !c.LastRefreshOK {
		t.Fatalf("%+v", c)
	}
}

func TestRefreshSucceedsWithoutRotation(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	old, _ := e.vault.Get(e.ctx, id)
	e.tep.SetIssueRefreshTokens(false)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	toks, _ := e.vault.Get(e.ctx, id)
	if toks.RefreshToken != old.RefreshToken || toks.AccessToken == old.AccessToken {
		t.Fatal("vault")
	}
	if ok := last[domain.RefreshSucceeded](e, id); ok.Rotated || ok.Tokens.RefreshTokenFP != domain.Fingerprint(old.RefreshToken) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	e.expectOpen(e.instance, id)
	// The same refresh token works again.
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
}

// An earlier refresher stored rotated tokens and died before its event: the
// vault is ahead of the stream. The next refresh adopts the stored tokens
// instead of presenting the replaced refresh token.
func TestRefreshAdoptsTokensStoredByAnInterruptedRefresh(t *testing.T) {
	e, id, n := activeEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	rotated, _, err := e.tep.Refresh(e.ctx, old.RefreshToken, old.Scopes) // the dead refresher's request
	if err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Put(e.ctx, id, rotated); err != nil {
		t.Fatal(err)
	}
	requests := e.tep.Requests(memory.RequestRefresh)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	if e.tep.Requests(memory.RequestRefresh) != requests {
		t.Fatal("a token request was sent (with the replaced refresh token?)")
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	ok := last[domain.RefreshSucceeded](e, id)
	if !ok.Rotated || ok.Tokens.RefreshTokenFP != domain.Fingerprint(rotated.RefreshToken) || ok.Tokens.AccessTokenFP != domain.Fingerprint(rotated.AccessToken) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	if tok := e.expectOpen(e.instance, id); tok != rotated.AccessToken {
		t.Fatal("gate")
	}
	if e.tep.LiveGrants() != 1 {
		t.Fatal("the grant was killed (replaced refresh token presented)")
	}
}

func TestRefreshVaultReadFailureIsTransient(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	e.vault.FailGets(1, errors.New("vault unreachable"))
	err := e.svc.Refresh(e.ctx, id, domain.TriggerManual)
	var f *domain.Failure
	if !errors.As(err, &f) || f.Terminal || f.Code != "vault_read_failed" {
		t.Fatalf("%v", err)
	}
	rf := last[domain.RefreshFailed](e, id)
	if rf.Terminal || rf.ErrorCode != "vault_read_failed" || rf.Attempt != 1 || rf.RetryAt.Before(e.clock.Now().Add(500*time.Millisecond)) {
		t.Fatalf("refresh.failed %+v", rf)
	}
	if c := e.load(id); c.State != domain.StateActive || c.TransientFailures != 1 || !c.TokensHeld || e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatalf("%+v", c)
	}
	e.expectOpen(e.instance, id) // the current token is still good
}

func TestRefreshWithoutStoredTokensIsTerminal(t *testing.T) {
	e, id, n := activeEnv(t)
	_ = e.vault.Delete(e.ctx, id)
	err := e.svc.Refresh(e.ctx, id, domain.TriggerManual)
	var te *lifecycle.TerminalError
	if !errors.As(err, &te) || te.Reason != domain.ReasonInvalidGrant || te.ConnectionID != id || te.Failure.Detail != "no refresh token stored" ||
		!errors.Is(err, domain.ErrUnauthenticated) || err.Error() == "" {
		t.Fatalf("%v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	if rf := find[domain.RefreshFailed](e, id); !rf.Terminal || rf.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("refresh.failed %+v", rf)
	}
	if ti := last[domain.TokensInvalidated](e, id); ti.ProviderRevoked {
		t.Fatal("revoked tokens it did not have")
	}
	expectClosed(t, e.instance, id, domain.ReasonInvalidGrant)
}

// A transient 503 with Retry-After: the retry time honours it, the attempt
// is counted, and the scheduled trigger waits for it.
func TestRefreshTransientFailureHonoursRetryAfter(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	tok := e.expectOpen(e.instance, id)
	e.tep.FailNext(memory.RequestRefresh, memory.Unavailable(2*time.Minute))
	err := e.svc.Refresh(e.ctx, id, domain.TriggerManual)
	var f *domain.Failure
	if !errors.As(err, &f) || f.Terminal || f.Status != 503 {
		t.Fatalf("%v", err)
	}
	retryAt := e.clock.Now().Add(2 * time.Minute)
	rf := last[domain.RefreshFailed](e, id)
	if rf.Terminal || rf.Class != "transient" || rf.HTTPStatus != 503 || rf.Attempt != 1 || !rf.RetryAt.Equal(retryAt) {
		t.Fatalf("refresh.failed %+v, want retry at %v", rf, retryAt)
	}
	if c := e.load(id); c.State != domain.StateActive || c.TransientFailures != 1 || !c.RetryAt.Equal(retryAt) {
		t.Fatalf("%+v", c)
	}
	if got := e.expectOpen(e.instance, id); got != tok {
		t.Fatal("gate")
	}
	e.clock.Advance(2*time.Minute - time.Millisecond)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerSchedule); !errors.Is(err, lifecycle.ErrNotDue) {
		t.Fatalf("before retry_at: %v", err)
	}
	e.clock.Advance(time.Millisecond)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerSchedule); err != nil {
		t.Fatalf("at retry_at: %v", err)
	}
	if rs := find[domain.RefreshStarted](e, id); rs.Attempt != 2 {
		t.Fatalf("refresh.started %+v", rs)
	}
	if ok := last[domain.RefreshSucceeded](e, id); ok.Attempt != 2 {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	if c := e.load(id); c.TransientFailures != 0 || !c.RetryAt.IsZero() {
		t.Fatalf("%+v", c)
	}
}

func TestRefreshRetriesExhausted(t *testing.T) {
	e, id, n := activeEnv(t, withConfig(func(c *lifecycle.Config) { c.MaxAttempts = 2 }))
	e.tep.FailNext(memory.RequestRefresh, memory.NetworkFailure(), memory.TimeoutFailure())
	var f *domain.Failure
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &f) {
		t.Fatalf("first: %v", err)
	}
	var te *lifecycle.TerminalError
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &te) || te.Reason != domain.ReasonRefreshRetriesExhausted {
		t.Fatalf("second: %v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	rf := find[domain.RefreshFailed](e, id)
	if !rf.Terminal || rf.Class != "transient" || rf.ErrorCode != "timeout" || rf.Attempt != 2 || rf.Reason != domain.ReasonRefreshRetriesExhausted {
		t.Fatalf("refresh.failed %+v", rf)
	}
	expectClosed(t, e.instance, id, domain.ReasonRefreshRetriesExhausted)
	if e.vault.Has(id) || e.tep.LiveGrants() != 0 {
		t.Fatal("tokens not destroyed")
	}
}

// Terminal answers give the reason of their error code.
func TestRefreshTerminalReasons(t *testing.T) {
	for _, tc := range []struct {
		f      *domain.Failure
		reason domain.Reason
	}{
		{memory.InvalidClient(), domain.ReasonInvalidClient},
		{memory.HTTPFailure(400, "invalid_scope", 0), domain.ReasonInvalidScope},
		{memory.HTTPFailure(403, "", 0), domain.ReasonTokenEndpointRejected},
	} {
		e := newEnv(t)
		id := e.active()
		e.tep.FailNext(memory.RequestRefresh, tc.f)
		var te *lifecycle.TerminalError
		if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &te) || te.Reason != tc.reason {
			t.Fatalf("%s: %v", tc.f.Code, err)
		}
		expectClosed(t, e.instance, id, tc.reason)
	}
}

// startHeld starts a refresh whose token request the provider holds, and
// returns the hold and the refresh's result.
func (e *env) startHeld(id string) (*memory.Hold, <-chan error) {
	e.t.Helper()
	hold := e.tep.Hold(memory.RequestRefresh)
	done := make(chan error, 1)
	go func() { done <- e.svc.Refresh(e.ctx, id, domain.TriggerManual) }()
	if err := hold.WaitHeld(e.ctx, 1); err != nil {
		e.t.Fatal(err)
	}
	return hold, done
}

func (e *env) result(done <-chan error) error {
	e.t.Helper()
	select {
	case err := <-done:
		return err
	case <-e.ctx.Done():
		e.t.Fatal("the refresh did not end")
		return nil
	}
}

// An event appended while the token request is in flight (a self-loop:
// connection.updated) makes the outcome's append conflict; the outcome is
// decided again on the new version and appended.
func TestRefreshOutcomeAfterASelfLoopEvent(t *testing.T) {
	e, id, n := activeEnv(t)
	hold, done := e.startHeld(id)
	if _, err := e.svc.Update(e.ctx, id, []string{"read", "write"}, nil); err != nil {
		t.Fatal(err)
	}
	e.store.ResetCounters()
	hold.Release()
	if err := e.result(done); err != nil {
		t.Fatal(err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventConnectionUpdated, domain.EventRefreshSucceeded)
	if l, a, c := e.store.Loads(), e.store.Appends(), e.store.Conflicts(); l != 1 || a != 2 || c != 1 {
		t.Fatalf("%d loads, %d appends, %d conflicts; want 1, 2, 1", l, a, c)
	}
	if c := e.load(id); c.State != domain.StateActive || len(c.Scopes) != 2 {
		t.Fatalf("%+v", c)
	}
	e.expectOpen(e.instance, id)
}

// Same for a terminal outcome: the gate is closed before each append.
func TestRefreshTerminalOutcomeAfterASelfLoopEvent(t *testing.T) {
	e, id, n := activeEnv(t)
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	hold, done := e.startHeld(id)
	if _, err := e.svc.Update(e.ctx, id, nil, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	hold.Release()
	var te *lifecycle.TerminalError
	if err := e.result(done); !errors.As(err, &te) || te.Reason != domain.ReasonInvalidGrant {
		t.Fatal(err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventConnectionUpdated, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	expectClosed(t, e.instance, id, domain.ReasonInvalidGrant)
}

// expireLease lets the refresh lease (30 seconds) run out without an
// extension (the holder is stuck at the provider) and appends what another
// instance's scheduler appends for it: for a provider that rotates,
// rotated_tokens_lost; for one that kept the refresh token on the last
// refresh (kept), a transient lease_expired.
func (e *env) expireLease(id string, kept bool) {
	e.t.Helper()
	e.clock.Advance(61 * time.Second)
	c := e.load(id)
	if kept {
		e.appendRaw(id, domain.RefreshFailed{Class: "transient", ErrorCode: "lease_expired", Attempt: c.TransientFailures + 1, RetryAt: e.clock.Now()})
		return
	}
	e.appendRaw(id, domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "lease_expired", Attempt: c.TransientFailures + 1, Reason: domain.ReasonRotatedTokensLost})
}

// keepingProvider makes the env's provider stop rotating and records one
// refresh that kept the refresh token, so that the connection knows its
// provider keeps refresh tokens (RefreshTokenKept).
func (e *env) keepingProvider(id string) {
	e.t.Helper()
	e.tep.SetIssueRefreshTokens(false)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		e.t.Fatal(err)
	}
	if !e.load(id).RefreshTokenKept {
		e.t.Fatal("RefreshTokenKept not set")
	}
}

// The lease was recovered by another instance while the token request was
// in flight (the holder could not extend it): the refresher finds the
// lease lost, does not store or record the rotated tokens and revokes
// them, so no grant outlives the record that it was lost.
func TestRefreshLeaseRecoveredMeanwhile(t *testing.T) {
	e, id, n := activeEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	hold, done := e.startHeld(id)
	e.expireLease(id, false)
	hold.Release()
	if err := e.result(done); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("%v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed)
	if stored, _ := e.vault.Get(e.ctx, id); stored.RefreshToken != old.RefreshToken {
		t.Fatal("the unrecorded tokens were stored")
	}
	if e.tep.LiveGrants() != 0 {
		t.Fatal("the unrecorded rotated tokens were not revoked")
	}
	if slices.Contains(e.tep.Presented(memory.RequestRevoke), domain.Fingerprint(old.RefreshToken)) {
		t.Fatal("the replaced refresh token was presented for revocation")
	}
}

// The lease was recovered (transient: the provider keeps refresh tokens)
// and another instance holds a new one: the connection is refreshing
// again, but not under this refresher's lease, so its outcome is not
// appended, and the kept refresh token is not revoked.
func TestRefreshLeaseRecoveredAndTakenByAnotherRefresher(t *testing.T) {
	e, id, _ := activeEnv(t)
	e.keepingProvider(id)
	n := e.events(id)
	hold, done := e.startHeld(id)
	e.expireLease(id, true)
	e.appendRaw(id, domain.RefreshStarted{Attempt: 2, LeaseUntil: e.clock.Now().Add(30 * time.Second), Trigger: domain.TriggerSchedule})
	hold.Release()
	if err := e.result(done); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("%v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventRefreshStarted)
	if c := e.load(id); c.State != domain.StateRefreshing || !e.vault.Has(id) || e.tep.LiveGrants() != 1 {
		t.Fatal("state, vault or grant")
	}
}

// A terminal failure whose lease was recovered meanwhile is not recorded:
// the connection's state is what the recovering instance decided.
func TestRefreshFailureAfterTheLeaseWasRecovered(t *testing.T) {
	e, id, _ := activeEnv(t)
	e.keepingProvider(id)
	n := e.events(id)
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	hold, done := e.startHeld(id)
	e.expireLease(id, true)
	hold.Release()
	err := e.result(done)
	var te *lifecycle.TerminalError
	if !errors.Is(err, domain.ErrConflict) || errors.As(err, &te) {
		t.Fatalf("%v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed)
	if c := e.load(id); c.State != domain.StateActive || !e.vault.Has(id) {
		t.Fatal("acted on a lease it no longer held")
	}
	e.expectOpen(e.instance, id)
}

// A delete while the token request is in flight waits for the refresh to
// record its outcome, then destroys the tokens it stored: each token is
// revoked once, tokens.invalidated before connection.deleted.
func TestDeleteWaitsForARefreshInFlight(t *testing.T) {
	e, id, n := activeEnv(t)
	hold, done := e.startHeld(id)
	deleted := make(chan error, 1)
	go func() { deleted <- e.svc.Delete(e.ctx, id) }()
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil { // Delete waits on the clock
		t.Fatal(err)
	}
	if got := e.events(id); got != n+1 {
		t.Fatalf("Delete did not wait for the refresh: %v", e.typesSince(id, n))
	}
	hold.Release()
	if err := e.result(done); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-e.ctx.Done():
		t.Fatal("Delete did not end")
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if e.vault.Has(id) || e.tep.LiveGrants() != 0 || e.tep.Requests(memory.RequestRevoke) != 2 {
		t.Fatalf("vault %v, live grants %d, revocations %d (want the refreshed tokens revoked once)", e.vault.Has(id), e.tep.LiveGrants(), e.tep.Requests(memory.RequestRevoke))
	}
	expectClosed(t, e.instance, id, domain.ReasonConnectionDeleted)
}

// A caller that gave up before the lock was taken: nothing is appended,
// nothing sent.
func TestRefreshCancelledBeforeTheLock(t *testing.T) {
	e, id, n := activeEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := e.svc.Refresh(ctx, id, domain.TriggerManual); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
	if e.tep.Requests(memory.RequestRefresh) != 0 || e.events(id) != n {
		t.Fatal("a lock was taken or a token request sent")
	}
}

// refresh.started is appended immediately before the token request: a
// caller that gives up once the lock is taken does not stop the request
// (a lease left to run out would be recovered as rotated_tokens_lost).
func TestRefreshCancelledAfterTheLock(t *testing.T) {
	e, id, n := activeEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	e.store.OnAppend(func(ev domain.Event) {
		if _, ok := ev.Payload.(domain.RefreshStarted); ok {
			cancel()
		}
	})
	if err := e.svc.Refresh(ctx, id, domain.TriggerManual); err != nil {
		t.Fatalf("%v", err)
	}
	if e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("no token request was sent")
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	e.expectOpen(e.instance, id)
}

// Once the token request is sent, a cancelled caller does not strand the
// rotated tokens: the refresh finishes.
func TestRefreshFinishesAfterTheCallerGaveUp(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	ctx, cancel := context.WithCancel(e.ctx)
	hold := e.tep.Hold(memory.RequestRefresh)
	done := make(chan error, 1)
	go func() { done <- e.svc.Refresh(ctx, id, domain.TriggerManual) }()
	if err := hold.WaitHeld(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	hold.Release()
	if err := e.result(done); err != nil {
		t.Fatal(err)
	}
	if last[domain.RefreshSucceeded](e, id).Tokens.AccessTokenFP == "" {
		t.Fatal("not recorded")
	}
	e.expectOpen(e.instance, id)
}
