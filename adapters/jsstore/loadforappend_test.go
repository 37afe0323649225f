package jsstore_test

import (
	"errors"
	"log/slog"
	"net/url"
	"testing"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/projections"
)

// LoadForAppend trusts the cache until an append against it fails: then
// the entry is in doubt and the next LoadForAppend reads the stream. A
// failed append never advances the cache (an entry is never ahead of the
// stream).
func TestLoadForAppendTrustsTheCacheUntilAConflict(t *testing.T) {
	srv := natstest.Start(t, "")
	a, b := open(t, srv.Connect(t)), open(t, srv.Connect(t)) // two instances
	ctx := ctxT(t)
	id := uuid.NewString()
	first := decideAppend(t, a, id, domain.Create{Provider: "sandbox", Scopes: []string{"users:read"}})

	c, cached, err := a.LoadForAppend(ctx, id)
	if err != nil || !cached || c.Version != first.Seq {
		t.Fatalf("a's own append: %+v cached %v %v, want version %d from the cache", c, cached, err, first.Seq)
	}
	c, cached, err = b.LoadForAppend(ctx, id)
	if err != nil || cached || c.Version != first.Seq {
		t.Fatalf("b has not seen the connection: %+v cached %v %v, want version %d from the stream", c, cached, err, first.Seq)
	}
	second, err := b.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "b"}}))
	if err != nil {
		t.Fatal(err)
	}

	// a's cache is stale and LoadForAppend says so (cached), without a request.
	c, cached, err = a.LoadForAppend(ctx, id)
	if err != nil || !cached || c.Version != first.Seq {
		t.Fatalf("a: %+v cached %v %v, want its stale cache at %d", c, cached, err, first.Seq)
	}
	if _, err := a.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "a"}})); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("append against a's stale cache: %v, want ErrConflict", err)
	}
	// The conflict put the entry in doubt: the stream is read, and the
	// refused event is nowhere.
	c, cached, err = a.LoadForAppend(ctx, id)
	if err != nil || cached || c.Version != second.Seq || c.Config["by"] != "b" || c.Events != 2 {
		t.Fatalf("a after the conflict: %+v cached %v %v, want version %d read from the stream with b's config", c, cached, err, second.Seq)
	}
	third, err := a.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "a"}}))
	if err != nil {
		t.Fatal(err)
	}
	c, cached, err = a.LoadForAppend(ctx, id)
	if err != nil || !cached || c.Version != third.Seq || c.Config["by"] != "a" {
		t.Fatalf("a after its own append: %+v cached %v %v", c, cached, err)
	}
	if fresh, err := a.Load(ctx, id); err != nil || fresh.Version != c.Version || fresh.Events != 3 {
		t.Fatalf("Load reads the stream: %+v %v, want version %d", fresh, err, c.Version)
	}
	expectHistory(t, a, id, 3)
}

// Saw, fed by the status projection that follows the stream, puts an
// entry behind the stream in doubt: the next LoadForAppend reads the
// stream instead of conflicting. An entry at or past the version stays.
func TestSawPutsAStaleEntryInDoubt(t *testing.T) {
	srv := natstest.Start(t, "")
	a, b := open(t, srv.Connect(t)), open(t, srv.Connect(t))
	ctx := ctxT(t)
	id := uuid.NewString()
	first := decideAppend(t, a, id, domain.Create{Provider: "sandbox", Scopes: []string{"users:read"}})
	a.Saw(id, first.Seq)
	if _, cached, err := a.LoadForAppend(ctx, id); err != nil || !cached {
		t.Fatalf("current entry: cached %v %v, want it trusted", cached, err)
	}
	second, err := b.Append(ctx, id, first.Seq, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "b"}}))
	if err != nil {
		t.Fatal(err)
	}
	a.Saw(id, second.Seq)
	c, cached, err := a.LoadForAppend(ctx, id)
	if err != nil || cached || c.Version != second.Seq {
		t.Fatalf("after Saw(%d): %+v cached %v %v, want it read from the stream", second.Seq, c, cached, err)
	}
	if _, cached, _ := a.LoadForAppend(ctx, id); !cached {
		t.Fatal("the entry read from the stream is not trusted again")
	}
}

// twoInstances is two lifecycles, each on its own store (own NATS
// connection and aggregate cache) on one stream, sharing a vault, an
// attempts store and a token endpoint as two tokenline processes do.
func twoInstances(t *testing.T) (a, b *lifecycle.Service, sa, sb *jsstore.Store, tep *memory.TokenEndpoint) {
	t.Helper()
	srv := natstest.Start(t, "")
	vault, attempts := memory.NewVault(), memory.NewAttempts()
	tep = memory.NewTokenEndpoint(memory.TokenEndpointConfig{})
	newSvc := func(name string) (*lifecycle.Service, *jsstore.Store) {
		st, err := jsstore.Open(ctxT(t), srv.Connect(t), jsstore.Config{Actor: "instance/" + name, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := lifecycle.New(lifecycle.Config{Store: st, Vault: vault, Gate: projections.NewGate(projections.GateOptions{}), Attempts: attempts,
			Providers: map[string]domain.TokenEndpoint{"memory": tep}, Instance: name, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return svc, st
	}
	a, sa = newSvc("a")
	b, sb = newSvc("b")
	return a, b, sa, sb, tep
}

func authoriseOn(t *testing.T, svc *lifecycle.Service, tep *memory.TokenEndpoint, id string) {
	t.Helper()
	u, err := svc.StartAuthorisation(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	code, err := tep.Approve(u)
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	if _, err := svc.HandleCallback(ctxT(t), pu.Query().Get("state"), code, "", ""); err != nil {
		t.Fatal(err)
	}
}

// Instance a decides against its cached aggregate, which instance b made
// stale: the append conflicts, a reloads from the stream, decides again
// and gets the right result, for a command that still applies (the update
// lands after b's), one that no longer does (b deleted the connection), a
// refresh refused by the stale cache (b authorised the connection: a's
// cache still says unauthenticated) and a refresh whose lock conflicts
// (b refreshed: a's cache has the old tokens), and a rejection report
// refused by the stale cache (b authorised). No refresh token is ever
// presented twice.
func TestStaleCacheConflictsReloadsAndDecidesAgain(t *testing.T) {
	a, b, sa, sb, tep := twoInstances(t)
	ctx := ctxT(t)

	c, err := a.Create(ctx, "memory", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := c.ID
	if _, err := b.Update(ctx, id, nil, map[string]string{"n": "b"}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Update(ctx, id, nil, map[string]string{"n": "a"})
	if err != nil || got.Config["n"] != "a" || got.Events != 3 {
		t.Fatalf("a's update on a stale cache: %+v %v, want it after b's (3 events)", got, err)
	}

	// Refused by the stale cache (unauthenticated), then decided on the stream.
	authoriseOn(t, b, tep, id)
	if err := a.Refresh(ctx, id, domain.TriggerManual); err != nil {
		t.Fatalf("a's refresh after b authorised: %v", err)
	}
	// The lock conflicts on a's cache (b refreshed since), then succeeds.
	if _, _, err := sa.LoadForAppend(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	before, _ := sb.Load(ctx, id)
	if stale, cached, _ := sa.LoadForAppend(ctx, id); !cached || stale.Version >= before.Version {
		t.Fatalf("a's cache is not stale (version %d cached %v, stream %d): the test tests nothing", stale.Version, cached, before.Version)
	}
	if err := a.Refresh(ctx, id, domain.TriggerManual); err != nil {
		t.Fatalf("a's refresh on a stale cache: %v", err)
	}
	after, err := sb.Load(ctx, id)
	if err != nil || after.State != domain.StateActive || after.Version <= before.Version || after.Tokens.RefreshTokenFP == before.Tokens.RefreshTokenFP {
		t.Fatalf("after a's refresh: %+v %v", after, err)
	}
	seen := map[string]bool{}
	for _, rt := range tep.Presented(memory.RequestRefresh) {
		if seen[rt] {
			t.Fatal("a refresh token was presented twice")
		}
		seen[rt] = true
	}
	if len(seen) != 3 {
		t.Fatalf("%d refresh requests, want 3", len(seen))
	}

	// A rejection report refused by a's stale cache (unauthenticated: b
	// authorised since) is decided again on the stream, and recorded.
	c2, err := a.Create(ctx, "memory", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	authoriseOn(t, b, tep, c2.ID)
	if got, err := a.ReportRejection(ctx, c2.ID, lifecycle.Rejection{Status: 403, WWWAuthenticate: `Bearer error="insufficient_scope", scope="admin:write"`}); err != nil || got.State != domain.StateActive || got.Events != 4 {
		t.Fatalf("a's rejection report on a stale cache: %+v %v, want it recorded after b's authorisation", got, err)
	}

	// b deletes; a's cache still has the connection: its update conflicts,
	// and decided again on the stream it is refused.
	if _, _, err := sa.LoadForAppend(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, id, nil, map[string]string{"n": "late"}); !errors.Is(err, domain.ErrDeleted) {
		t.Fatalf("a's update of a connection b deleted: %v, want ErrDeleted", err)
	}
	h, err := sa.History(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if u, ok := e.Payload.(domain.ConnectionUpdated); ok && u.Config["n"] == "late" {
			t.Fatal("the refused update was stored")
		}
	}
}
