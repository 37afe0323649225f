package memory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
)

func TestVaultFailureInjection(t *testing.T) {
	v := memory.NewVault()
	id := porttest.NewConnectionID()
	want := domain.Tokens{AccessToken: "at", RefreshToken: "rt"}
	if err := v.Put(t.Context(), id, want); err != nil {
		t.Fatal(err)
	}
	outage := errors.New("kv down")
	v.FailPuts(1, outage)
	if err := v.Put(t.Context(), id, domain.Tokens{AccessToken: "other"}); !errors.Is(err, outage) {
		t.Fatalf("put: %v", err)
	}
	v.FailGets(1, outage)
	if _, err := v.Get(t.Context(), id); !errors.Is(err, outage) {
		t.Fatalf("get: %v", err)
	}
	v.FailDeletes(1, outage)
	if err := v.Delete(t.Context(), id); !errors.Is(err, outage) {
		t.Fatalf("delete: %v", err)
	}
	got, err := v.Get(t.Context(), id)
	if err != nil || got.AccessToken != "at" || !v.Has(id) || v.Len() != 1 {
		t.Fatalf("failed calls changed the vault: %v", err)
	}
	if v.Puts() != 2 || v.Gets() != 2 || v.Deletes() != 1 {
		t.Fatalf("counters: puts %d gets %d deletes %d", v.Puts(), v.Gets(), v.Deletes())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := v.Get(ctx, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("get with a canceled context: %v", err)
	}
}

func TestAttemptsFailureInjection(t *testing.T) {
	a := memory.NewAttempts()
	key := porttest.AttemptKey("state-1")
	outage := errors.New("kv down")
	a.FailPuts(1, outage)
	if err := a.Put(t.Context(), key, domain.Attempt{AttemptID: "a1"}); !errors.Is(err, outage) || a.Len() != 0 {
		t.Fatalf("put: %v (len %d)", err, a.Len())
	}
	if err := a.Put(t.Context(), key, domain.Attempt{AttemptID: "a1"}); err != nil {
		t.Fatal(err)
	}
	a.FailTakes(1, outage)
	if _, err := a.Take(t.Context(), key); !errors.Is(err, outage) {
		t.Fatalf("take: %v", err)
	}
	if got, err := a.Take(t.Context(), key); err != nil || got.AttemptID != "a1" {
		t.Fatalf("take after the outage: %v", err)
	}
}
