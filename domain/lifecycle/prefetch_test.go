package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// prefetchingVault is the memory vault with adapters/vault's Prefetch: the
// read is made when Prefetch is called, and handed out by the function it
// returns. It records how many appends the store had taken then.
type prefetchingVault struct {
	*memory.Vault
	store          *memory.EventStore
	prefetches     atomic.Int32
	appendsAtFetch atomic.Int32
	waits          atomic.Int32
}

func (v *prefetchingVault) Prefetch(ctx context.Context, id string) func() (domain.Tokens, error) {
	v.prefetches.Add(1)
	v.appendsAtFetch.Store(int32(v.store.Appends()))
	t, err := v.Get(ctx, id)
	return func() (domain.Tokens, error) { v.waits.Add(1); return t, err }
}

func prefetchEnv(t *testing.T) (*env, *prefetchingVault, string, int) {
	t.Helper()
	var pv *prefetchingVault
	e, id, n := activeEnv(t, withConfig(func(c *lifecycle.Config) {
		pv = &prefetchingVault{Vault: c.Vault.(*memory.Vault), store: c.Store.(*memory.EventStore)}
		c.Vault = pv
	}))
	e.store.ResetCounters()
	return e, pv, id, n
}

// A vault that can prefetch is read through Prefetch, once, before the
// lock is appended, and waited for once; the refresh presents the refresh
// token it read and stores the rotated one.
func TestRefreshReadsAPrefetchingVaultBeforeTheLock(t *testing.T) {
	e, pv, id, n := prefetchEnv(t)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	if pv.prefetches.Load() != 1 || pv.waits.Load() != 1 || pv.appendsAtFetch.Load() != 0 {
		t.Fatalf("%d prefetches (after %d appends), %d waits; want 1 before the lock, 1", pv.prefetches.Load(), pv.appendsAtFetch.Load(), pv.waits.Load())
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	now, _ := e.vault.Get(e.ctx, id)
	if ok := last[domain.RefreshSucceeded](e, id); !ok.Rotated || ok.Tokens.RefreshTokenFP != domain.Fingerprint(now.RefreshToken) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
	if e.tep.LiveGrants() != 1 || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("the grant was killed (a refresh token other than the vault's presented?)")
	}
}

// Losing the lock: the prefetched read is waited for and unused, and no
// token request is sent.
func TestRefreshLosesTheLockWithAPrefetchingVault(t *testing.T) {
	e, pv, id, n := prefetchEnv(t)
	e.store.RaceNextAppend(func() { e.appendRaw(id, domain.ConnectionUpdated{Config: map[string]string{"a": "b"}}) })
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("%v", err)
	}
	if e.tep.Requests(memory.RequestRefresh) != 0 || pv.prefetches.Load() != 1 || pv.waits.Load() != 1 {
		t.Fatalf("%d token requests, %d prefetches, %d waits", e.tep.Requests(memory.RequestRefresh), pv.prefetches.Load(), pv.waits.Load())
	}
	e.expectTypes(id, n, domain.EventConnectionUpdated)
}

// A prefetched vault that is ahead of the events (an interrupted refresh
// stored rotated tokens) is adopted without a token request, as a read by
// Get is.
func TestRefreshAdoptsAPrefetchedVaultAheadOfTheEvents(t *testing.T) {
	e, pv, id, n := prefetchEnv(t)
	old, _ := e.vault.Get(e.ctx, id)
	rotated, _, err := e.tep.Refresh(e.ctx, old.RefreshToken, old.Scopes)
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
	if e.tep.Requests(memory.RequestRefresh) != requests || pv.prefetches.Load() != 1 {
		t.Fatal("a token request was sent (with the replaced refresh token?)")
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if ok := last[domain.RefreshSucceeded](e, id); ok.Tokens.RefreshTokenFP != domain.Fingerprint(rotated.RefreshToken) {
		t.Fatalf("refresh.succeeded %+v", ok)
	}
}

// sendingStore is the memory event store with adapters/jsstore's
// AppendThen: sent is called once the append is made (its request would be
// on its way), unless refuse is set, which fails the append before that.
type sendingStore struct {
	*memory.EventStore
	refuse error
}

func (s *sendingStore) AppendThen(ctx context.Context, id string, version uint64, e domain.Event, sent func()) (domain.Event, error) {
	if s.refuse != nil {
		return domain.Event{}, s.refuse
	}
	out, err := s.Append(ctx, id, version, e)
	sent()
	return out, err
}

func sendingEnv(t *testing.T) (*env, *prefetchingVault, *sendingStore, string, int) {
	t.Helper()
	var pv *prefetchingVault
	var ss *sendingStore
	e, id, n := activeEnv(t, withConfig(func(c *lifecycle.Config) {
		ss = &sendingStore{EventStore: c.Store.(*memory.EventStore)}
		pv = &prefetchingVault{Vault: c.Vault.(*memory.Vault), store: ss.EventStore}
		c.Vault, c.Store = pv, ss
	}))
	e.store.ResetCounters()
	return e, pv, ss, id, n
}

// With a store that reports when an append's request is on its way, the
// vault is read from there: behind the lock's request, once, and used.
// A lock refused before its request went out reads nothing.
func TestRefreshReadsTheVaultBehindTheLocksRequest(t *testing.T) {
	e, pv, _, id, n := sendingEnv(t)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	if pv.prefetches.Load() != 1 || pv.waits.Load() != 1 || pv.appendsAtFetch.Load() != 1 {
		t.Fatalf("%d prefetches (after %d appends), %d waits; want 1 behind the lock, 1", pv.prefetches.Load(), pv.appendsAtFetch.Load(), pv.waits.Load())
	}
	e.expectTypes(id, n, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if e.tep.LiveGrants() != 1 || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("the grant was killed (a refresh token other than the vault's presented?)")
	}

	e, pv, ss, id, _ := sendingEnv(t)
	ss.refuse = fmt.Errorf("refused: %w", domain.ErrInvalidCommand)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("%v", err)
	}
	if pv.prefetches.Load() != 0 || e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatalf("%d prefetches, %d token requests after a lock that was never sent", pv.prefetches.Load(), e.tep.Requests(memory.RequestRefresh))
	}
}
