package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// The tests of the refresh lease: a refresher that holds new tokens keeps
// storing and recording them through failures longer than a JetStream
// leader election, extending its lease; a refresher that vanished is
// recovered without its (possibly replaced) refresh token ever being
// presented again.

// count returns how many of the connection's events after skip have type t.
func (e *env) count(id string, skip int, t domain.EventType) int {
	e.t.Helper()
	n := 0
	for _, typ := range e.typesSince(id, skip) {
		if typ == t {
			n++
		}
	}
	return n
}

// expectOnlyExtensions checks that the events after skip are first, any
// number (at least min) of refresh.lease_extended, then rest.
func (e *env) expectOnlyExtensions(id string, skip int, first domain.EventType, min int, rest ...domain.EventType) {
	e.t.Helper()
	got := e.typesSince(id, skip)
	ext := e.count(id, skip, domain.EventRefreshLeaseExtended)
	want := []domain.EventType{first}
	for range ext {
		want = append(want, domain.EventRefreshLeaseExtended)
	}
	want = append(want, rest...)
	if ext < min || !slices.Equal(got, want) {
		e.t.Fatalf("events %v; want %s, at least %d refresh.lease_extended, %v", got, first, min, rest)
	}
}

// The vault refuses writes for far longer than the old retry budget
// (0.6 s; here 20 tries, over 30 s): the refresher keeps the tokens it
// got, extends its lease while it retries, and stores and records them
// when the vault is back. One token request; the old refresh token was
// presented once.
func TestRefreshStoresThroughALongVaultOutage(t *testing.T) {
	e, id, n := activeEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	e.vault.FailPuts(20, errors.New("vault: no leader"))
	t0 := e.clock.Now()
	if err := drive(e, func() error { return e.svc.Refresh(e.ctx, id, domain.TriggerManual) }); err != nil {
		t.Fatal(err)
	}
	if took := e.clock.Now().Sub(t0); took < 30*time.Second {
		t.Fatalf("the outage lasted %v, want it longer than the lease", took)
	}
	e.expectOnlyExtensions(id, n, domain.EventRefreshStarted, 1, domain.EventRefreshSucceeded)
	t.Logf("vault outage of %v (clock): %d lease extensions", e.clock.Now().Sub(t0), e.count(id, n, domain.EventRefreshLeaseExtended))
	stored, _ := e.vault.Get(e.ctx, id)
	if ok := last[domain.RefreshSucceeded](e, id); ok.Tokens.RefreshTokenFP != domain.Fingerprint(stored.RefreshToken) || stored.RefreshToken == old.RefreshToken {
		t.Fatalf("refresh.succeeded %+v does not describe the stored tokens", ok)
	}
	if e.tep.Requests(memory.RequestRefresh) != 1 || !slices.Equal(e.tep.Presented(memory.RequestRefresh), []string{domain.Fingerprint(old.RefreshToken)}) {
		t.Fatalf("token requests %d, presented %v", e.tep.Requests(memory.RequestRefresh), e.tep.Presented(memory.RequestRefresh))
	}
	if e.vault.Puts() != 1+21 {
		t.Fatalf("%d puts, want the callback's and 21", e.vault.Puts())
	}
	// Every extension moved the lease beyond the previous one.
	var prev time.Time
	for _, ev := range e.history(id)[n:] {
		switch p := ev.Payload.(type) {
		case domain.RefreshStarted:
			prev = p.LeaseUntil
		case domain.RefreshLeaseExtended:
			if !p.LeaseUntil.After(prev) || p.LeaseUntil.Sub(ev.Time) != 30*time.Second {
				t.Fatalf("extension %+v at %v after lease %v", p, ev.Time, prev)
			}
			prev = p.LeaseUntil
		}
	}
	e.expectOpen(e.instance, id)
	if e.tep.LiveGrants() != 1 {
		t.Fatal("grant killed")
	}
}

// hungVault is a vault whose writes hang until their context ends while
// hang is positive (each hung write counts it down): a KV put stuck in a
// leader election.
type hungVault struct {
	*memory.Vault
	hang atomic.Int32
}

func (v *hungVault) Put(ctx context.Context, id string, t domain.Tokens) error {
	if v.hang.Add(-1) >= 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	return v.Vault.Put(ctx, id, t)
}

// Vault writes that hang: each try has its own deadline (StoreTimeout),
// not the lease, so the refresher tries again and gets through.
func TestRefreshStoresThroughAHungVault(t *testing.T) {
	e, id, _ := activeEnv(t)
	v := &hungVault{Vault: e.vault}
	cfg := e.config()
	cfg.Vault, cfg.StoreTimeout = v, 20*time.Millisecond
	in := e.newInstance(cfg)
	n := e.events(id)
	v.hang.Store(3)
	if err := drive(e, func() error { return in.svc.Refresh(e.ctx, id, domain.TriggerManual) }); err != nil {
		t.Fatal(err)
	}
	e.expectOnlyExtensions(id, n, domain.EventRefreshStarted, 0, domain.EventRefreshSucceeded)
	if e.tep.Requests(memory.RequestRefresh) != 1 || v.hang.Load() >= 0 {
		t.Fatalf("%d token requests; %d hung writes left", e.tep.Requests(memory.RequestRefresh), v.hang.Load())
	}
	e.expectOpen(e.instance, id)
}

// failAppendsAfter makes the next n appends fail once an event of type P
// was appended.
func failAppendsAfter[P domain.Payload](e *env, n int, err error) {
	var once atomic.Bool
	e.store.OnAppend(func(ev domain.Event) {
		if _, ok := ev.Payload.(P); ok && once.CompareAndSwap(false, true) {
			e.store.FailAppends(n, err)
		}
	})
}

// The stream refuses appends for a while after the tokens were stored (a
// leader election of the stream): the outcome is appended when it is
// back, and the lease is extended meanwhile as soon as that is possible.
func TestRefreshOutcomeThroughAnEventStoreOutage(t *testing.T) {
	e, id, n := activeEnv(t)
	failAppendsAfter[domain.RefreshStarted](e, 25, errors.New("nats: no response from stream"))
	if err := drive(e, func() error { return e.svc.Refresh(e.ctx, id, domain.TriggerManual) }); err != nil {
		t.Fatal(err)
	}
	e.expectOnlyExtensions(id, n, domain.EventRefreshStarted, 0, domain.EventRefreshSucceeded)
	if e.tep.Requests(memory.RequestRefresh) != 1 || e.vault.Puts() != 2 {
		t.Fatalf("%d token requests, %d puts", e.tep.Requests(memory.RequestRefresh), e.vault.Puts())
	}
	e.expectOpen(e.instance, id)

	// A terminal outcome too; the tokens are destroyed once it is recorded.
	e2, id2, n2 := activeEnv(t)
	e2.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	failAppendsAfter[domain.RefreshStarted](e2, 10, errors.New("nats: no response from stream"))
	var te *lifecycle.TerminalError
	if err := drive(e2, func() error { return e2.svc.Refresh(e2.ctx, id2, domain.TriggerManual) }); !errors.As(err, &te) || te.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("%v", err)
	}
	e2.expectOnlyExtensions(id2, n2, domain.EventRefreshStarted, 0, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	expectClosed(t, e2.instance, id2, domain.ReasonInvalidGrant)
}

// unansweredStore is an event store whose appends of the chosen events
// land but report an error, once each (a publish whose acknowledgement
// was lost in a leader election).
type unansweredStore struct {
	*memory.EventStore
	drop func(domain.Event) bool
}

func (s *unansweredStore) Append(ctx context.Context, id string, seq uint64, ev domain.Event) (domain.Event, error) {
	e, err := s.EventStore.Append(ctx, id, seq, ev)
	if err == nil && s.drop(e) {
		return domain.Event{}, errors.New("nats: timeout")
	}
	return e, err
}

// The lock and the outcome land but their acknowledgements are lost: the
// refresher sends the same events again, the store reports them stored,
// and the refresh goes on (no second lock, no second token request, one
// outcome).
func TestRefreshThroughLostAcknowledgements(t *testing.T) {
	e, id, n := activeEnv(t)
	dropped := map[domain.EventType]bool{}
	cfg := e.config()
	cfg.Store = &unansweredStore{EventStore: e.store, drop: func(ev domain.Event) bool {
		if dropped[ev.Type()] || (ev.Type() != domain.EventRefreshStarted && ev.Type() != domain.EventRefreshSucceeded) {
			return false
		}
		dropped[ev.Type()] = true
		return true
	}}
	in := e.newInstance(cfg)
	if err := drive(e, func() error { return in.svc.Refresh(e.ctx, id, domain.TriggerManual) }); err != nil {
		t.Fatal(err)
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if !dropped[domain.EventRefreshStarted] || !dropped[domain.EventRefreshSucceeded] || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatalf("dropped %v, %d token requests", dropped, e.tep.Requests(memory.RequestRefresh))
	}
	e.expectOpen(e.instance, id)
}

// vanish appends refresh.started as a refresher of another instance does
// just before it sends the token request, and returns the lease. With
// sent, the refresher's request reaches the provider (which rotates); the
// refresher then dies with the new tokens.
func (e *env) vanish(id string, sent bool) time.Time {
	e.t.Helper()
	c := e.load(id)
	lease := e.clock.Now().Add(30 * time.Second)
	e.appendRaw(id, domain.RefreshStarted{Attempt: c.TransientFailures + 1, LeaseUntil: lease, Trigger: domain.TriggerSchedule, RefreshTokenFP: c.Tokens.RefreshTokenFP})
	if sent {
		toks, err := e.vault.Get(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, _, err := e.tep.Refresh(e.ctx, toks.RefreshToken, toks.Scopes); err != nil {
			e.t.Fatal(err)
		}
	}
	return lease
}

// A refresher vanished after refresh.started (killed; its request may or
// may not have been sent): the scheduler leaves the lease alone until its
// end plus the grace, then records rotated_tokens_lost, closes the gate
// and destroys the stored tokens, and the old refresh token is never
// presented again: not to refresh, not to revoke.
func TestRecoverAVanishedRefresher(t *testing.T) {
	for _, sent := range []bool{true, false} {
		name := "request sent"
		if !sent {
			name = "died before sending"
		}
		t.Run(name, func(t *testing.T) {
			e, id, n := activeEnv(t)
			old, _ := e.vault.Get(e.ctx, id)
			oldFP := domain.Fingerprint(old.RefreshToken)
			lease := e.vanish(id, sent)
			stop := e.run()
			e.tick(30 * time.Second) // the lease ends
			e.tick(29 * time.Second) // within the grace (30 s)
			if got := e.events(id); got != n+1 {
				t.Fatalf("recovered within the grace: %v", e.typesSince(id, n))
			}
			e.tick(2 * time.Second)
			e.waitFor(id, "the invalidation", hasType(domain.EventTokensInvalidated))
			stop()
			e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated)
			rf := find[domain.RefreshFailed](e, id)
			if !rf.Terminal || rf.Reason != domain.ReasonRotatedTokensLost || rf.ErrorCode != "lease_expired" {
				t.Fatalf("recovery %+v (lease until %v)", rf, lease)
			}
			if ti := last[domain.TokensInvalidated](e, id); ti.ProviderRevoked || ti.RefreshTokenFP != oldFP {
				t.Fatalf("tokens.invalidated %+v", ti)
			}
			expectClosed(t, e.instance, id, domain.ReasonRotatedTokensLost)
			if e.vault.Has(id) {
				t.Fatal("the old tokens are still in the vault")
			}
			wantRefresh := []string(nil)
			if sent {
				wantRefresh = []string{oldFP} // the vanished refresher's request only
			}
			if got := e.tep.Presented(memory.RequestRefresh); !slices.Equal(got, wantRefresh) {
				t.Fatalf("refresh tokens presented %v, want %v", got, wantRefresh)
			}
			if slices.Contains(e.tep.Presented(memory.RequestRevoke), oldFP) {
				t.Fatal("the old refresh token was presented for revocation")
			}
			// The old access token was revoked (best effort); without a
			// sent request the grant is revoked with it.
			if e.tep.AccessTokenValid(old.AccessToken) {
				t.Fatal("the old access token is still valid")
			}
		})
	}
}

// The vanished refresher had stored the rotated tokens before it died:
// the vault is ahead of the events, and the recovery adopts them
// (refresh.succeeded) without a token request.
func TestRecoverAdoptsAVaultAhead(t *testing.T) {
	e, id, n := activeEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	e.vanish(id, false)
	rotated, _, err := e.tep.Refresh(e.ctx, old.RefreshToken, old.Scopes) // the vanished refresher's request
	if err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Put(e.ctx, id, rotated); err != nil {
		t.Fatal(err)
	}
	stop := e.run()
	e.tick(61 * time.Second)
	e.waitFor(id, "the adoption", hasType(domain.EventRefreshSucceeded))
	stop()
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if ok := last[domain.RefreshSucceeded](e, id); !ok.Rotated || ok.Tokens.RefreshTokenFP != domain.Fingerprint(rotated.RefreshToken) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	if tok := e.expectOpen(e.instance, id); tok != rotated.AccessToken {
		t.Fatal("gate")
	}
	if got := e.tep.Presented(memory.RequestRefresh); len(got) != 1 || e.tep.LiveGrants() != 1 {
		t.Fatalf("presented %v; %d live grants", got, e.tep.LiveGrants())
	}
}

// A provider that kept the refresh token on the last refresh does not
// rotate: presenting it again is harmless, so a vanished refresher's lease
// is recovered as a transient failure and the refresh retried.
func TestRecoverWithAProviderThatKeepsRefreshTokens(t *testing.T) {
	e, id, _ := activeEnv(t)
	e.keepingProvider(id)
	n := e.events(id)
	e.vanish(id, true)
	stop := e.run()
	e.tick(61 * time.Second)
	e.waitFor(id, "the recovery", func(h []domain.Event) bool { return len(h) > n+1 })
	// retry_at is the recovery time: due at the next tick, or a second
	// after the recovery job ended if that tick came while it was running.
	for range 10 {
		e.tick(time.Second)
		if e.count(id, n, domain.EventRefreshSucceeded) > 0 {
			break
		}
	}
	e.waitFor(id, "the refresh after recovery", func(h []domain.Event) bool { return len(h) >= n+4 })
	stop()
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if rf := find[domain.RefreshFailed](e, id); rf.Terminal || rf.ErrorCode != "lease_expired" {
		t.Fatalf("recovery %+v", rf)
	}
	e.expectOpen(e.instance, id)
}

// A live refresher that cannot store its tokens for minutes keeps
// extending its lease, and another instance's scheduler, running all the
// while, never recovers it.
func TestLiveRefresherIsNeverRecovered(t *testing.T) {
	e, id, n := activeEnv(t)
	other := e.newInstance(e.config())
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ran := make(chan struct{})
	go func() { other.svc.Run(ctx); close(ran) }()
	e.vault.FailPuts(1<<30, errors.New("vault: no leader"))
	done := make(chan error, 1)
	go func() { done <- e.svc.Refresh(e.ctx, id, domain.TriggerManual) }()
	// Both the refresher (between tries) and the scheduler wait on the
	// clock: move it 250 ms at a time for three minutes.
	for range 720 {
		if err := e.clock.BlockUntil(e.ctx, 2); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(250 * time.Millisecond)
	}
	if got := e.count(id, n, domain.EventRefreshFailed); got != 0 {
		t.Fatalf("a live refresher was recovered: %v", e.typesSince(id, n))
	}
	if ext := e.count(id, n, domain.EventRefreshLeaseExtended); ext < 10 {
		t.Fatalf("%d extensions in three minutes", ext)
	}
	e.vault.FailPuts(0, nil)
	// Go on until the refresher finished (it then no longer waits on the
	// clock).
	finished := make(chan error, 1)
	wctx, wcancel := context.WithCancel(e.ctx)
	go func() { finished <- <-done; wcancel() }()
	for range 200 {
		if e.clock.BlockUntil(wctx, 2) != nil {
			break
		}
		e.clock.Advance(250 * time.Millisecond)
	}
	var err error
	select {
	case err = <-finished:
	case <-e.ctx.Done():
		t.Fatalf("the refresher did not finish: %v", e.typesSince(id, n))
	}
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-ran
	e.expectOnlyExtensions(id, n, domain.EventRefreshStarted, 10, domain.EventRefreshSucceeded)
	if e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("a second token request")
	}
	e.expectOpen(e.instance, id)
}
