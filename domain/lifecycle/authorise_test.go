package lifecycle_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

const unknownID = "8a7f0a4e-0d2b-4b8e-9d59-5cbd3d0a0b11"

func TestStartAuthorisation(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.StartAuthorisation(e.ctx, unknownID); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown connection: %v", err)
	}
	c, err := e.svc.Create(e.ctx, provider, []string{"read", "write"}, map[string]string{"authorize.prompt": "consent"})
	if err != nil {
		t.Fatal(err)
	}
	authURL, err := e.svc.StartAuthorisation(e.ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(authURL)
	q := u.Query()
	if q.Get("scope") != "read write" || q.Get("prompt") != "consent" || q.Get("code_challenge_method") != "S256" || len(q.Get("state")) != 43 {
		t.Fatalf("authorize URL %s", authURL)
	}
	if e.attempts.Len() != 1 {
		t.Fatalf("%d attempts stored", e.attempts.Len())
	}
	as := last[domain.AuthorisationStarted](e, c.ID)
	if as.AttemptID == "" || !as.ExpiresAt.Equal(e.clock.Now().Add(10*time.Minute)) || !slices.Equal(as.Scopes, []string{"read", "write"}) {
		t.Fatalf("authorisation.started %+v", as)
	}
	if strings.Contains(authURL, as.AttemptID) {
		t.Fatal("the attempt id is in the URL")
	}
	expectGate(t, e.instance, c.ID, domain.DetailReauthorising, domain.ReasonNeverAuthorised)
	if e.load(c.ID).State != domain.StateReauthorising {
		t.Fatal("not reauthorising")
	}
}

func TestStartAuthorisationFailures(t *testing.T) {
	e := newEnv(t)
	id := e.create()
	putErr := errors.New("kv unreachable")
	e.attempts.FailPuts(1, putErr)
	if _, err := e.svc.StartAuthorisation(e.ctx, id); !errors.Is(err, putErr) {
		t.Fatalf("attempts put failure: %v", err)
	}
	appendErr := errors.New("stream unreachable")
	e.store.FailAppends(1, appendErr)
	if _, err := e.svc.StartAuthorisation(e.ctx, id); !errors.Is(err, appendErr) {
		t.Fatalf("append failure: %v", err)
	}
	e.expectTypes(id, 0, domain.EventConnectionCreated)
}

// A terminal failure whose invalidation was interrupted (the vault delete
// failed) is finished before a new attempt, so that it cannot delete the
// new grant's tokens later.
func TestStartAuthorisationFinishesAnInterruptedInvalidation(t *testing.T) {
	e, id, n := activeEnv(t)
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	e.vault.FailDeletes(1, errors.New("vault unreachable"))
	var te *lifecycle.TerminalError
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &te) || te.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("Refresh: %v", err)
	}
	if c := e.load(id); !c.TokensHeld || !e.vault.Has(id) {
		t.Fatal("the invalidation was not interrupted")
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed)

	delErr := errors.New("vault still unreachable")
	e.vault.FailDeletes(1, delErr)
	if _, err := e.svc.StartAuthorisation(e.ctx, id); !errors.Is(err, delErr) {
		t.Fatalf("StartAuthorisation with the vault down: %v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed)

	state, code := e.start(id)
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated, domain.EventAuthorisationStarted)
	if ti := find[domain.TokensInvalidated](e, id); ti.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if _, err := e.svc.HandleCallback(e.ctx, state, code, "", ""); err != nil {
		t.Fatal(err)
	}
	e.expectOpen(e.instance, id)
}

// callback opens an attempt on a new connection and returns it.
func (e *env) callback() (id, state, code string) {
	e.t.Helper()
	id = e.create("read")
	state, code = e.start(id)
	return id, state, code
}

func TestHandleCallbackSuccess(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	as := last[domain.AuthorisationStarted](e, id)
	e.store.ResetCounters()
	res, err := e.svc.HandleCallback(e.ctx, state, code, "", "")
	if err != nil || res.ConnectionID != id || res.State != domain.StateActive {
		t.Fatalf("HandleCallback: %+v %v", res, err)
	}
	if l, a := e.store.Loads(), e.store.Appends(); l != 1 || a != 1 {
		t.Errorf("%d loads and %d appends, want 1 and 1", l, a)
	}
	toks, err := e.vault.Get(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ac := last[domain.AuthorisationCompleted](e, id)
	if ac.AttemptID != as.AttemptID || ac.Tokens.AccessTokenFP != domain.Fingerprint(toks.AccessToken) ||
		ac.Tokens.RefreshTokenFP != domain.Fingerprint(toks.RefreshToken) || !ac.Tokens.AccessTokenExpiresAt.Equal(e.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("authorisation.completed %+v", ac)
	}
	if c := e.load(id); c.State != domain.StateActive || c.Reason != domain.ReasonNone || !c.TokensHeld {
		t.Fatalf("%+v", c)
	}
	tok := e.expectOpen(e.instance, id)
	if !e.tep.AccessTokenValid(tok) {
		t.Fatal("the gate's token is not the provider's")
	}
	if e.attempts.Len() != 0 {
		t.Fatal("the attempt was not taken")
	}
	// The state is single use.
	e.callbackFails("reused state", state, code, lifecycle.ErrStateUnknown)
	if e.events(id) != 3 {
		t.Fatal("the reused state changed something")
	}
}

func TestHandleCallbackRefusesBadStates(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	n := e.events(id)
	e.callbackFails("missing", "", code, lifecycle.ErrStateMissing)
	e.callbackFails("unknown", "not-a-state-we-issued", code, lifecycle.ErrStateUnknown)
	takeErr := errors.New("kv unreachable")
	e.attempts.FailTakes(1, takeErr)
	e.callbackFails("take failure", state, code, takeErr)
	// A second attempt replaces the first: the first state no longer matches.
	state2, code2 := e.start(id)
	res, err := e.svc.HandleCallback(e.ctx, state, code, "", "")
	if !errors.Is(err, lifecycle.ErrStateMismatch) || res.ConnectionID != id {
		t.Fatalf("superseded attempt: %+v %v", res, err)
	}
	loadErr := errors.New("stream unreachable")
	e.store.FailLoads(1, loadErr)
	e.callbackFails("load failure", state2, code2, loadErr)
	e.expectTypes(id, n, domain.EventAuthorisationStarted)
	if c := e.load(id); c.State != domain.StateReauthorising {
		t.Fatalf("%s", c.State)
	}
	if e.tep.Requests(memory.RequestExchange) != 0 {
		t.Fatal("a code was exchanged")
	}
}

func TestHandleCallbackExpiredState(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	e.clock.Advance(10*time.Minute - time.Millisecond)
	state2, code2 := e.start(id) // still in time: a new attempt
	e.clock.Advance(10 * time.Minute)
	for _, s := range []string{state, state2} {
		if _, err := e.svc.HandleCallback(e.ctx, s, code, "", ""); !errors.Is(err, lifecycle.ErrStateExpired) {
			t.Fatalf("expired: %v", err)
		}
	}
	e.callbackFails("expired attempts are taken too", state2, code2, lifecycle.ErrStateUnknown)
	if e.tep.Requests(memory.RequestExchange) != 0 || e.load(id).State != domain.StateReauthorising {
		t.Fatal("an expired state was used")
	}
}

func TestHandleCallbackStateExpiresExactlyAtTTL(t *testing.T) {
	e := newEnv(t)
	_, state, code := e.callback()
	e.clock.Advance(10 * time.Minute)
	e.callbackFails("at the TTL", state, code, lifecycle.ErrStateExpired)
}

func TestHandleCallbackProviderError(t *testing.T) {
	e := newEnv(t)
	id, state, _ := e.callback()
	res, err := e.svc.HandleCallback(e.ctx, state, "", "access_denied", strings.Repeat("d", 300))
	if !errors.Is(err, lifecycle.ErrDenied) || res.State != domain.StateUnauthenticated || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("denied: %+v %v", res, err)
	}
	af := last[domain.AuthorisationFailed](e, id)
	if af.Reason != domain.ReasonAuthorisationDenied || af.ErrorCode != "access_denied" || len(af.Description) != 200 {
		t.Fatalf("authorisation.failed %+v", af)
	}
	expectClosed(t, e.instance, id, domain.ReasonAuthorisationDenied)
	if e.tep.Requests(memory.RequestExchange) != 0 || e.vault.Has(id) {
		t.Fatal("exchanged after a provider error")
	}

	// A hostile error code is not recorded as sent.
	id2, state2, _ := e.callback()
	if _, err := e.svc.HandleCallback(e.ctx, state2, "", "bad\ncode", ""); !errors.Is(err, lifecycle.ErrDenied) {
		t.Fatal(err)
	}
	if af := last[domain.AuthorisationFailed](e, id2); af.ErrorCode != "invalid_error_code" {
		t.Fatalf("authorisation.failed %+v", af)
	}

	// Recording the failure can fail.
	_, state3, _ := e.callback()
	appendErr := errors.New("stream unreachable")
	e.store.FailAppends(1, appendErr)
	if _, err := e.svc.HandleCallback(e.ctx, state3, "", "access_denied", ""); !errors.Is(err, appendErr) || errors.Is(err, lifecycle.ErrDenied) {
		t.Fatalf("append failure: %v", err)
	}
}

func TestHandleCallbackWithoutCode(t *testing.T) {
	e := newEnv(t)
	id, state, _ := e.callback()
	if _, err := e.svc.HandleCallback(e.ctx, state, "", "", ""); !errors.Is(err, lifecycle.ErrDenied) {
		t.Fatal(err)
	}
	af := last[domain.AuthorisationFailed](e, id)
	if af.Reason != domain.ReasonAuthorisationDenied || af.ErrorCode != "invalid_request" {
		t.Fatalf("authorisation.failed %+v", af)
	}
}

func TestHandleCallbackExchangeTerminalFailure(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	e.tep.FailNext(memory.RequestExchange, memory.InvalidClient())
	res, err := e.svc.HandleCallback(e.ctx, state, code, "", "")
	if !errors.Is(err, lifecycle.ErrDenied) || res.State != domain.StateUnauthenticated {
		t.Fatalf("%+v %v", res, err)
	}
	af := last[domain.AuthorisationFailed](e, id)
	if af.Reason != domain.ReasonInvalidClient || af.ErrorCode != "invalid_client" {
		t.Fatalf("authorisation.failed %+v", af)
	}
	if e.tep.Requests(memory.RequestExchange) != 1 || e.vault.Has(id) {
		t.Fatal("a terminal exchange failure was retried or stored tokens")
	}
	expectClosed(t, e.instance, id, domain.ReasonInvalidClient)
}

// Transient exchange failures are retried twice on the clock (100 ms, then
// 400 ms or the server's Retry-After up to 2 s).
func TestHandleCallbackExchangeRetriesTransientFailures(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	e.tep.FailNext(memory.RequestExchange, memory.Unavailable(0), memory.RateLimited(time.Second))
	t0 := e.clock.Now()
	type result struct {
		res lifecycle.CallbackResult
		err error
	}
	r := drive(e, func() result {
		res, err := e.svc.HandleCallback(e.ctx, state, code, "", "")
		return result{res, err}
	})
	if r.err != nil || r.res.State != domain.StateActive {
		t.Fatalf("%+v %v", r.res, r.err)
	}
	if waited := e.clock.Now().Sub(t0); waited != 100*time.Millisecond+time.Second {
		t.Fatalf("waited %v on the clock, want 100ms then the Retry-After of 1s", waited)
	}
	if e.tep.Requests(memory.RequestExchange) != 3 {
		t.Fatalf("%d exchanges", e.tep.Requests(memory.RequestExchange))
	}
	e.expectOpen(e.instance, id)
}

func TestHandleCallbackExchangeRetriesExhausted(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	e.tep.FailNext(memory.RequestExchange, memory.Unavailable(0), memory.Unavailable(0), memory.Unavailable(0), memory.Unavailable(0))
	err := drive(e, func() error { _, err := e.svc.HandleCallback(e.ctx, state, code, "", ""); return err })
	if !errors.Is(err, lifecycle.ErrDenied) || e.tep.Requests(memory.RequestExchange) != 3 {
		t.Fatalf("%v after %d exchanges", err, e.tep.Requests(memory.RequestExchange))
	}
	if af := last[domain.AuthorisationFailed](e, id); af.ErrorCode != "server_error_status" || af.Reason != domain.ReasonTokenEndpointRejected {
		t.Fatalf("authorisation.failed %+v", af)
	}
}

// A callback whose request ends while it waits to retry the exchange
// records nothing (the append has no context left either).
func TestHandleCallbackCancelledWhileRetrying(t *testing.T) {
	e := newEnv(t)
	id, state, code := e.callback()
	e.tep.FailNext(memory.RequestExchange, memory.Unavailable(0))
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { _, err := e.svc.HandleCallback(ctx, state, code, "", ""); done <- err }()
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%v", err)
		}
	case <-e.ctx.Done():
		t.Fatal("HandleCallback did not return")
	}
	if e.tep.Requests(memory.RequestExchange) != 1 || e.load(id).State != domain.StateReauthorising {
		t.Fatal("retried or recorded after cancellation")
	}
}

// A callback whose tokens cannot be stored (vault put), or whose
// authorisation.completed cannot be appended, fails with that error and
// leaves the connection reauthorising behind a closed gate.
func TestHandleCallbackStorageFailures(t *testing.T) {
	outage := errors.New("unreachable")
	for _, tc := range []struct {
		name       string
		fail       func(*env)
		emptyVault bool // the put failed: no tokens are stored
	}{
		{"vault put", func(e *env) { e.vault.FailPuts(1, outage) }, true},
		{"completion append", func(e *env) { e.store.FailAppends(1, outage) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id, state, code := e.callback()
			tc.fail(e)
			e.callbackFails("callback", state, code, outage)
			if c := e.load(id); c.State != domain.StateReauthorising {
				t.Fatalf("%s", c.State)
			}
			if tc.emptyVault && e.vault.Has(id) {
				t.Fatal("tokens stored although the put failed")
			}
			expectGate(t, e.instance, id, domain.DetailReauthorising, domain.ReasonNeverAuthorised)
		})
	}
}

// A callback for a connection whose provider is no longer configured.
func TestHandleCallbackUnknownProvider(t *testing.T) {
	e := newEnv(t)
	id := unknownID
	e.appendRaw(id, domain.ConnectionCreated{Provider: "gone"})
	e.appendRaw(id, domain.AuthorisationStarted{AttemptID: "a1", ExpiresAt: e.clock.Now().Add(time.Minute)})
	state := "a-state-issued-before-the-provider-was-removed"
	if err := e.attempts.Put(e.ctx, stateKey(state), domain.Attempt{ConnectionID: id, AttemptID: "a1", Verifier: "v", ExpiresAt: e.clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	e.callbackFails("callback", state, "code", lifecycle.ErrNoProvider)
}

// A connection may open at most MaxAuthorisationsPerConnection attempts
// within AuthorisationTTL (each leaves a sealed entry until it expires);
// beyond that StartAuthorisation refuses and stores nothing. Once the
// earliest attempts are older than the TTL, attempts are allowed again.
// Other connections are not affected.
func TestAuthorisationAttemptsPerConnectionAreBounded(t *testing.T) {
	e := newEnv(t)
	c, err := e.svc.Create(e.ctx, provider, []string{"read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := e.svc.StartAuthorisation(e.ctx, c.ID); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	stored := e.attempts.Len()
	_, err = e.svc.StartAuthorisation(e.ctx, c.ID)
	if !errors.Is(err, lifecycle.ErrTooManyAttempts) {
		t.Fatalf("11th attempt within the TTL: %v, want ErrTooManyAttempts", err)
	}
	if e.attempts.Len() != stored {
		t.Fatalf("a refused attempt stored an entry: %d -> %d", stored, e.attempts.Len())
	}
	other, err := e.svc.Create(e.ctx, provider, []string{"read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.StartAuthorisation(e.ctx, other.ID); err != nil {
		t.Fatalf("another connection: %v", err)
	}
	e.clock.Advance(10*time.Minute + time.Second) // the default AuthorisationTTL
	if _, err := e.svc.StartAuthorisation(e.ctx, c.ID); err != nil {
		t.Fatalf("after the TTL: %v", err)
	}
}

// An attempt that completed successfully no longer counts toward
// MaxAuthorisationsPerConnection (its entry left the attempts store at the
// callback): the limiter forgets the connection whose only attempt
// completed; an abandoned attempt before it still counts, and so does one
// that failed at the callback.
func TestCompletedAuthorisationNoLongerCounts(t *testing.T) {
	e := newEnv(t)
	id := e.active() // one attempt, completed
	if n := lifecycle.AttemptsCounted(e.svc, id); n != 0 {
		t.Fatalf("%d attempts counted after the only one completed, want 0", n)
	}
	id = e.create("read")
	e.start(id) // abandoned (superseded): its entry stays until it expires
	e.clock.Advance(time.Second)
	state, code := e.start(id)
	if n := lifecycle.AttemptsCounted(e.svc, id); n != 2 {
		t.Fatalf("%d attempts counted, want 2", n)
	}
	if res, err := e.svc.HandleCallback(e.ctx, state, code, "", ""); err != nil || res.State != domain.StateActive {
		t.Fatalf("HandleCallback: %v %v", res, err)
	}
	if n := lifecycle.AttemptsCounted(e.svc, id); n != 1 {
		t.Fatalf("%d attempts counted after the second completed, want 1 (the abandoned one)", n)
	}
	id = e.create("read")
	state, _ = e.start(id)
	if _, err := e.svc.HandleCallback(e.ctx, state, "", "access_denied", ""); !errors.Is(err, lifecycle.ErrDenied) {
		t.Fatalf("denied callback: %v", err)
	}
	if n := lifecycle.AttemptsCounted(e.svc, id); n != 1 {
		t.Fatalf("%d attempts counted after a denied one, want 1", n)
	}
}
