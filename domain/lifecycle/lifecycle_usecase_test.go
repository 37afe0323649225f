package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

func TestNewRequiresThePorts(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	if _, err := lifecycle.New(cfg); err == nil {
		t.Fatal("New without gate and providers")
	}
	cfg.Gate = e.gate
	cfg.Providers = map[string]domain.TokenEndpoint{provider: e.tep}
	cfg.Clock, cfg.Logger, cfg.Instance = nil, nil, ""
	svc, err := lifecycle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !svc.HasProvider(provider) || svc.HasProvider("other") {
		t.Fatal("HasProvider")
	}
	c, err := svc.Create(e.ctx, provider, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := e.history(c.ID)
	if a := h[0].Actor; !strings.HasPrefix(a, "instance/") || len(a) != len("instance/")+8 {
		t.Fatalf("actor %q, want a generated instance name", a)
	}
}

func TestCreate(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Create(e.ctx, "nope", nil, nil); !errors.Is(err, lifecycle.ErrNoProvider) {
		t.Fatalf("unknown provider: %v", err)
	}
	if _, err := e.svc.Create(e.ctx, provider, []string{"bad scope"}, nil); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("invalid scope: %v", err)
	}
	if _, err := e.svc.Create(e.ctx, provider, nil, map[string]string{"authorize.state": "x"}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("reserved authorize parameter: %v", err)
	}
	if n := len(e.store.Events()); n != 0 {
		t.Fatalf("%d events stored by refused creations", n)
	}
	c, err := e.svc.Create(e.ctx, provider, []string{"read", "write"}, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonNeverAuthorised || c.Version == 0 || c.ID == "" {
		t.Fatalf("created %+v", c)
	}
	e.expectTypes(c.ID, 0, domain.EventConnectionCreated)
	cc := last[domain.ConnectionCreated](e, c.ID)
	if cc.Provider != provider || !slices.Equal(cc.Scopes, []string{"read", "write"}) || cc.Config["k"] != "v" {
		t.Fatalf("connection.created %+v", cc)
	}
	if h := e.history(c.ID); h[0].Actor != "instance/test" {
		t.Fatalf("actor %q", h[0].Actor)
	}
	expectGate(t, e.instance, c.ID, domain.DetailUnauthenticated, domain.ReasonNeverAuthorised)
}

// expectGate checks the gate's refusal.
func expectGate(t *testing.T, in instance, id, detail string, reason domain.Reason) {
	t.Helper()
	_, err := in.svc.Check(context.Background(), id)
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != detail || ge.Reason != reason {
		t.Fatalf("gate: %v, want %s (%s)", err, detail, reason)
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	tok := e.expectOpen(e.instance, id)
	c, err := e.svc.Update(e.ctx, id, []string{"read", "admin"}, map[string]string{"tenant": "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateActive || !c.TokensHeld || !slices.Equal(c.Scopes, []string{"read", "admin"}) || c.Config["tenant"] != "t1" {
		t.Fatalf("updated %+v", c)
	}
	if got := e.expectOpen(e.instance, id); got != tok {
		t.Fatal("an update changed the token")
	}
	cu := last[domain.ConnectionUpdated](e, id)
	if !slices.Equal(cu.Scopes, []string{"read", "admin"}) || cu.Config["tenant"] != "t1" {
		t.Fatalf("connection.updated %+v", cu)
	}
	n := e.events(id)
	if _, err := e.svc.Update(e.ctx, id, nil, nil); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("empty update: %v", err)
	}
	if _, err := e.svc.Update(e.ctx, id, []string{"a\"b"}, nil); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("invalid scope: %v", err)
	}
	if _, err := e.svc.Update(e.ctx, "8a7f0a4e-0d2b-4b8e-9d59-5cbd3d0a0b11", nil, map[string]string{"a": "b"}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown connection: %v", err)
	}
	loadErr := errors.New("stream unreachable")
	e.store.FailLoads(1, loadErr)
	if _, err := e.svc.Update(e.ctx, id, nil, map[string]string{"a": "b"}); !errors.Is(err, loadErr) {
		t.Fatalf("load failure: %v", err)
	}
	appendErr := errors.New("stream full")
	e.store.FailAppends(1, appendErr)
	if _, err := e.svc.Update(e.ctx, id, nil, map[string]string{"a": "b"}); !errors.Is(err, appendErr) {
		t.Fatalf("append failure: %v", err)
	}
	if got := e.events(id); got != n {
		t.Fatalf("refused updates stored %d events", got-n)
	}
}

// An append that loses the race is decided again on the reloaded
// connection; after four lost races the conflict is returned.
func TestTransactRetriesConflicts(t *testing.T) {
	e := newEnv(t)
	id := e.create()
	n := e.events(id)
	e.store.RaceNextAppend(func() { e.appendRaw(id, domain.ConnectionUpdated{Config: map[string]string{"by": "other"}}) })
	c, err := e.svc.Update(e.ctx, id, nil, map[string]string{"by": "me"})
	if err != nil || c.Config["by"] != "me" {
		t.Fatalf("after one conflict: %v %v", c.Config, err)
	}
	e.expectTypes(id, n, domain.EventConnectionUpdated, domain.EventConnectionUpdated)
	if e.store.Conflicts() != 1 {
		t.Fatalf("%d conflicts", e.store.Conflicts())
	}

	// Another writer wins every time.
	var racing atomic.Bool
	e.store.BeforeAppend(func(cid string, _ uint64, ev domain.Event) {
		if ev.Actor == "instance/test" && racing.CompareAndSwap(false, true) {
			e.appendRaw(cid, domain.ConnectionUpdated{Config: map[string]string{"by": "other"}})
			racing.Store(false)
		}
	})
	e.store.ResetCounters()
	if _, err := e.svc.Update(e.ctx, id, nil, map[string]string{"by": "me"}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("after four conflicts: %v", err)
	}
	if l, c := e.store.Loads(), e.store.Conflicts(); l != 4 || c != 4 {
		t.Fatalf("%d loads and %d conflicts, want 4 and 4", l, c)
	}
}

func TestDeleteWithTokens(t *testing.T) {
	e, id, n := activeEnv(t)
	toks, _ := e.vault.Get(e.ctx, id)
	e.store.ResetCounters()
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if l, a := e.store.Loads(), e.store.Appends(); l != 1 || a != 2 {
		t.Errorf("delete: %d loads, %d appends; want 1 and 2", l, a)
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	ti := find[domain.TokensInvalidated](e, id)
	if ti.Reason != domain.ReasonConnectionDeleted || !ti.ProviderRevoked || ti.RefreshTokenFP != domain.Fingerprint(toks.RefreshToken) {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if e.vault.Has(id) {
		t.Fatal("tokens left in the vault")
	}
	if e.tep.Requests(memory.RequestRevoke) != 2 || e.tep.LiveGrants() != 0 || e.tep.AccessTokenValid(toks.AccessToken) {
		t.Fatal("the grant was not revoked at the provider")
	}
	c := e.load(id)
	if !c.Deleted || c.TokensHeld || c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonConnectionDeleted {
		t.Fatalf("deleted connection %+v", c)
	}
	expectClosed(t, e.instance, id, domain.ReasonConnectionDeleted)
	if err := e.svc.Delete(e.ctx, id); !errors.Is(err, domain.ErrDeleted) {
		t.Fatalf("second delete: %v", err)
	}
	for name, f := range map[string]func() error{
		"update":    func() error { _, err := e.svc.Update(e.ctx, id, nil, map[string]string{"a": "b"}); return err },
		"authorise": func() error { _, err := e.svc.StartAuthorisation(e.ctx, id); return err },
		"refresh":   func() error { return e.svc.Refresh(e.ctx, id, domain.TriggerManual) },
	} {
		if err := f(); err == nil {
			t.Errorf("%s of a deleted connection succeeded", name)
		}
	}
	if got := e.events(id); got != n+2 {
		t.Fatalf("events after the delete: %v", e.typesSince(id, n+2))
	}
}

func TestDeleteWithoutTokens(t *testing.T) {
	e := newEnv(t)
	id := e.create()
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	e.expectTypes(id, 1, domain.EventConnectionDeleted)
	if e.tep.Requests(memory.RequestRevoke) != 0 {
		t.Fatal("revoked tokens that were never issued")
	}
	expectClosed(t, e.instance, id, domain.ReasonConnectionDeleted)
	if err := e.svc.Delete(e.ctx, "8a7f0a4e-0d2b-4b8e-9d59-5cbd3d0a0b11"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}

// The gate is closed before the tokens are destroyed, and stays closed when
// recording it fails (the tokens were revoked); deleting again finishes the
// delete, tokens.invalidated first.
func TestDeleteClosesTheGateFirstAndKeepsItClosedWhenTheAppendFails(t *testing.T) {
	e, id, n := activeEnv(t)
	e.expectOpen(e.instance, id)
	seen := refusedWhileAppending[domain.TokensInvalidated](e, id, domain.ReasonConnectionDeleted)
	appendErr := errors.New("stream unreachable")
	e.store.FailAppends(1, appendErr)
	if err := e.svc.Delete(e.ctx, id); !errors.Is(err, appendErr) {
		t.Fatalf("Delete: %v", err)
	}
	expectClosed(t, e.instance, id, domain.ReasonConnectionDeleted)
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if !seen.Load() {
		t.Fatal("the gate was open while tokens.invalidated was appended")
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if r := e.tep.Requests(memory.RequestRevoke); r != 2 {
		t.Fatalf("%d revocation requests, want 2 (refresh and access token, once)", r)
	}
}

// A delete that failed to take the tokens out of the vault revokes
// nothing; deleting again does it all, each token revoked once.
func TestDeleteRetriedAfterAVaultFailureRevokesOnce(t *testing.T) {
	e, id, n := activeEnv(t)
	e.vault.FailDeletes(1, errors.New("vault unreachable"))
	if err := e.svc.Delete(e.ctx, id); err == nil {
		t.Fatal("Delete hid the vault failure")
	}
	if e.events(id) != n || e.tep.Requests(memory.RequestRevoke) != 0 {
		t.Fatalf("after the failed delete: %v, %d revocations", e.typesSince(id, n), e.tep.Requests(memory.RequestRevoke))
	}
	expectClosed(t, e.instance, id, domain.ReasonConnectionDeleted)
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if e.vault.Has(id) || e.tep.Requests(memory.RequestRevoke) != 2 || e.tep.LiveGrants() != 0 {
		t.Fatalf("vault %v, %d revocations, %d live grants", e.vault.Has(id), e.tep.Requests(memory.RequestRevoke), e.tep.LiveGrants())
	}
}

// Concurrent deletes of one connection on one instance: exactly one
// succeeds, the others get ErrDeleted; each token is revoked once.
func TestConcurrentDeletesSucceedOnce(t *testing.T) {
	e, id, n := activeEnv(t)
	const k = 8
	errs := make(chan error, k)
	for range k {
		go func() { errs <- e.svc.Delete(e.ctx, id) }()
	}
	ok := 0
	for range k {
		switch err := <-errs; {
		case err == nil:
			ok++
		case !errors.Is(err, domain.ErrDeleted):
			t.Fatalf("Delete: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d deletes succeeded, want 1", ok)
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if r := e.tep.Requests(memory.RequestRevoke); r != 2 {
		t.Fatalf("%d revocation requests, want 2", r)
	}
}

// Invalidation is best effort at the provider: a failing revocation, or a
// provider without a revocation endpoint, still destroys the tokens and
// records provider_revoked false.
func TestInvalidationWhenRevocationFails(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	e.tep.FailNext(memory.RequestRevoke, memory.Unavailable(0))
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if ti := find[domain.TokensInvalidated](e, id); ti.ProviderRevoked {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if e.vault.Has(id) || e.tep.LiveGrants() != 1 || e.tep.Requests(memory.RequestRevoke) != 1 {
		t.Fatalf("vault %v, live grants %d, revocations %d", e.vault.Has(id), e.tep.LiveGrants(), e.tep.Requests(memory.RequestRevoke))
	}
}

func TestInvalidationWithoutRevocationEndpoint(t *testing.T) {
	e := newEnv(t, noRevocation())
	id := e.active()
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if ti := find[domain.TokensInvalidated](e, id); ti.ProviderRevoked {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if e.vault.Has(id) || e.tep.Requests(memory.RequestRevoke) != 0 {
		t.Fatal("tokens kept or a revocation request sent")
	}
}

// Another instance recorded the invalidation first: the conflict is not an
// error and nothing is recorded twice.
func TestInvalidationAlreadyRecordedByAnotherInstance(t *testing.T) {
	e, id, n := activeEnv(t)
	var once atomic.Bool
	e.store.BeforeAppend(func(cid string, _ uint64, ev domain.Event) {
		if _, ok := ev.Payload.(domain.TokensInvalidated); ok && ev.Actor == "instance/test" && once.CompareAndSwap(false, true) {
			e.appendRaw(cid, domain.TokensInvalidated{Reason: domain.ReasonConnectionDeleted})
		}
	})
	if err := e.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if h := e.history(id); h[len(h)-2].Actor != "instance/other" || h[len(h)-1].Actor != "instance/test" {
		t.Fatal("the invalidation was recorded twice or by the wrong writer")
	}
}

// A provider removed from the configuration: the use cases that need it
// refuse with ErrNoProvider; invalidation still destroys the tokens.
func TestProviderNoLongerConfigured(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	cfg := e.config()
	cfg.Providers = map[string]domain.TokenEndpoint{"other": memory.NewTokenEndpoint(memory.TokenEndpointConfig{})}
	other := e.newInstance(cfg)
	if err := other.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, lifecycle.ErrNoProvider) {
		t.Fatalf("Refresh: %v", err)
	}
	if err := other.svc.SetClientSecret(provider, "s"); !errors.Is(err, lifecycle.ErrNoProvider) {
		t.Fatalf("SetClientSecret: %v", err)
	}
	if err := other.svc.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if ti := find[domain.TokensInvalidated](e, id); ti.ProviderRevoked || e.vault.Has(id) {
		t.Fatalf("tokens.invalidated %+v", ti)
	}
	if _, err := other.svc.StartAuthorisation(e.ctx, e.create()); !errors.Is(err, lifecycle.ErrNoProvider) {
		t.Fatalf("StartAuthorisation: %v", err)
	}
}

func TestSetClientSecret(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	if err := e.svc.SetClientSecret("nope", "s"); !errors.Is(err, lifecycle.ErrNoProvider) {
		t.Fatalf("unknown provider: %v", err)
	}
	for _, bad := range []string{"", strings.Repeat("x", 1025)} {
		if err := e.svc.SetClientSecret(provider, bad); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("secret of %d bytes: %v", len(bad), err)
		}
	}
	e.tep.RotateClientSecret("rotated")
	if err := e.svc.SetClientSecret(provider, "rotated"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatalf("refresh with the installed secret: %v", err)
	}
	if last[domain.RefreshSucceeded](e, id).Attempt != 1 {
		t.Fatal("refresh.succeeded")
	}
}
