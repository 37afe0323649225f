package porttest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// OpenTokenVault returns two handles on one token vault (two instances on
// one bucket, same key). They may be the same value.
type OpenTokenVault func(t *testing.T) (a, b domain.TokenVault)

// TokenVault runs the contract of domain.TokenVault (and of adapters/vault's
// documented rules: Put replaces the whole set, refuses a set without
// tokens, keeps Expiry in UTC; connection ids must be usable as keys).
func TokenVault(t *testing.T, open OpenTokenVault) {
	run(t, open, []subtest[OpenTokenVault]{
		{"RoundTrip", tvRoundTrip},
		{"PutReplacesEverything", tvReplace},
		{"DeleteAndErrNoTokens", tvDelete},
		{"TakeOnce", tvTake},
		{"ConnectionsIsolated", tvIsolation},
		{"RefusesEmptySet", tvEmpty},
		{"InvalidIDs", tvInvalid},
		{"NoAliasing", tvNoAliasing},
		{"SharedBetweenInstances", tvShared},
		{"ConcurrentPutsNeverMixPairs", tvConcurrent},
	})
}

func tokens(n int) domain.Tokens {
	return domain.Tokens{
		AccessToken:  fmt.Sprintf("access-%d-%s", n, NewConnectionID()),
		RefreshToken: fmt.Sprintf("refresh-%d-%s", n, NewConnectionID()),
		TokenType:    "bearer",
		Expiry:       time.Date(2030, 1, 2, 3, 4, 5, 6789, time.FixedZone("X", 3600)),
		Scopes:       []string{"users:read", "accounts:read"},
	}
}

func sameTokens(a, b domain.Tokens) bool {
	return a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken && a.TokenType == b.TokenType &&
		a.Expiry.Equal(b.Expiry) && slices.Equal(a.Scopes, b.Scopes)
}

func mustGet(t *testing.T, v domain.TokenVault, id string) domain.Tokens {
	t.Helper()
	got, err := v.Get(ctxT(t), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return got
}

func mustPut(t *testing.T, v domain.TokenVault, id string, tok domain.Tokens) {
	t.Helper()
	if err := v.Put(ctxT(t), id, tok); err != nil {
		t.Fatalf("put %s: %v", id, err)
	}
}

// expectTokens fails the test with msg unless v holds want for id.
func expectTokens(t *testing.T, v domain.TokenVault, id string, want domain.Tokens, msg string) {
	t.Helper()
	if !sameTokens(mustGet(t, v, id), want) {
		t.Fatal(msg)
	}
}

// expectNoTokens checks that v holds no tokens for id (ErrNoTokens).
func expectNoTokens(t *testing.T, v domain.TokenVault, id, what string) {
	t.Helper()
	if _, err := v.Get(ctxT(t), id); !errors.Is(err, domain.ErrNoTokens) {
		t.Fatalf("%s: %v, want ErrNoTokens", what, err)
	}
}

func tvRoundTrip(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	id := NewConnectionID()
	want := tokens(1)
	mustPut(t, v, id, want)
	got := mustGet(t, v, id)
	if !sameTokens(got, want) {
		t.Fatal("Get returned other tokens than Put stored")
	}
	if got.Expiry.Location() != time.UTC {
		t.Fatalf("expiry in %v, want UTC", got.Expiry.Location())
	}
	// Get is repeatable.
	expectTokens(t, v, id, want, "second Get differs")
}

func tvReplace(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	id := NewConnectionID()
	mustPut(t, v, id, tokens(1))
	// Only an access token now: the refresh token, type, expiry and scopes
	// of the first set must not survive.
	second := domain.Tokens{AccessToken: "access-only-" + NewConnectionID()}
	mustPut(t, v, id, second)
	got := mustGet(t, v, id)
	if got.AccessToken != second.AccessToken || got.RefreshToken != "" || got.TokenType != "" || !got.Expiry.IsZero() || len(got.Scopes) != 0 {
		t.Fatal("Put merged with the previous set instead of replacing it")
	}
	third := tokens(3)
	mustPut(t, v, id, third)
	expectTokens(t, v, id, third, "third set not stored")
}

func tvDelete(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	id := NewConnectionID()
	expectNoTokens(t, v, id, "get of a never-written connection")
	if err := v.Delete(ctxT(t), id); err != nil {
		t.Fatalf("delete of nothing: %v", err)
	}
	mustPut(t, v, id, tokens(1))
	if err := v.Delete(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	expectNoTokens(t, v, id, "get after delete")
	if err := v.Delete(ctxT(t), id); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	// Tokens may be stored again after a delete.
	again := tokens(2)
	mustPut(t, v, id, again)
	expectTokens(t, v, id, again, "put after delete not stored")
}

// Take returns the tokens and destroys them; of concurrent Takes from two
// instances exactly one gets them.
func tvTake(t *testing.T, open OpenTokenVault) {
	a, b := open(t)
	id := NewConnectionID()
	if _, err := a.Take(ctxT(t), id); !errors.Is(err, domain.ErrNoTokens) {
		t.Fatalf("take of nothing: %v, want ErrNoTokens", err)
	}
	want := tokens(1)
	mustPut(t, a, id, want)
	got, err := b.Take(ctxT(t), id)
	if err != nil || !sameTokens(got, want) {
		t.Fatalf("take: %v (tokens match: %v)", err, sameTokens(got, want))
	}
	expectNoTokens(t, a, id, "get after take")
	if _, err := a.Take(ctxT(t), id); !errors.Is(err, domain.ErrNoTokens) {
		t.Fatalf("second take: %v, want ErrNoTokens", err)
	}
	for round := range 10 {
		mustPut(t, a, id, tokens(round))
		errs := make(chan error, 2)
		for _, v := range []domain.TokenVault{a, b} {
			go func() { _, err := v.Take(ctxT(t), id); errs <- err }()
		}
		won := 0
		for range 2 {
			switch err := <-errs; {
			case err == nil:
				won++
			case !errors.Is(err, domain.ErrNoTokens):
				t.Fatalf("round %d: take: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d takes got the tokens, want 1", round, won)
		}
	}
}

func tvIsolation(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	a, b := NewConnectionID(), NewConnectionID()
	ta, tb := tokens(1), tokens(2)
	mustPut(t, v, a, ta)
	mustPut(t, v, b, tb)
	if !sameTokens(mustGet(t, v, a), ta) || !sameTokens(mustGet(t, v, b), tb) {
		t.Fatal("connections see each other's tokens")
	}
	if err := v.Delete(ctxT(t), a); err != nil {
		t.Fatal(err)
	}
	expectTokens(t, v, b, tb, "deleting a removed b's tokens")
}

func tvEmpty(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	id := NewConnectionID()
	mustPut(t, v, id, tokens(1))
	if err := v.Put(ctxT(t), id, domain.Tokens{TokenType: "bearer", Scopes: []string{"users:read"}}); err == nil {
		t.Fatal("put of a set without tokens succeeded")
	}
	if got := mustGet(t, v, id); got.AccessToken == "" {
		t.Fatal("a refused put changed the stored set")
	}
	// A refresh token alone is a set.
	mustPut(t, v, id, domain.Tokens{RefreshToken: "refresh-only"})
}

func tvInvalid(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	for _, id := range []string{"", "a.b", "*", ">", "a b", "a/b", strings.Repeat("x", 129)} {
		if err := v.Put(ctxT(t), id, tokens(1)); err == nil {
			t.Fatalf("put with id %q succeeded", id)
		}
		if _, err := v.Get(ctxT(t), id); err == nil {
			t.Fatalf("get with id %q succeeded", id)
		}
		if err := v.Delete(ctxT(t), id); err == nil {
			t.Fatalf("delete with id %q succeeded", id)
		}
	}
}

func tvNoAliasing(t *testing.T, open OpenTokenVault) {
	v, _ := open(t)
	id := NewConnectionID()
	tok := tokens(1)
	mustPut(t, v, id, tok)
	tok.Scopes[0] = "changed:write"
	got := mustGet(t, v, id)
	if got.Scopes[0] != "users:read" {
		t.Fatal("the vault aliases the caller's scopes")
	}
	got.Scopes[0] = "mutated:write"
	if mustGet(t, v, id).Scopes[0] != "users:read" {
		t.Fatal("Get returns the vault's own scopes slice")
	}
}

func tvShared(t *testing.T, open OpenTokenVault) {
	a, b := open(t)
	id := NewConnectionID()
	want := tokens(1)
	mustPut(t, a, id, want)
	expectTokens(t, b, id, want, "b does not see a's tokens")
	next := tokens(2)
	mustPut(t, b, id, next)
	expectTokens(t, a, id, next, "a does not see b's replacement")
	if err := b.Delete(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	expectNoTokens(t, a, id, "a after b's delete")
}

func tvConcurrent(t *testing.T, open OpenTokenVault) {
	const writers, puts = 6, 5
	a, b := open(t)
	id := NewConnectionID()
	together(writers, func(w int) {
		v, own := either(w, a, b), NewConnectionID()
		for i := 0; i < puts; i++ {
			n := w*puts + i
			// Access and refresh token carry the same number: a Get
			// must never see one set's access with another's refresh.
			tok := domain.Tokens{AccessToken: fmt.Sprintf("at-%d", n), RefreshToken: fmt.Sprintf("rt-%d", n)}
			if err := v.Put(ctxT(t), id, tok); err != nil {
				t.Errorf("put: %v", err)
				return
			}
			got, err := v.Get(ctxT(t), id)
			if err != nil || strings.TrimPrefix(got.AccessToken, "at-") != strings.TrimPrefix(got.RefreshToken, "rt-") {
				t.Errorf("get: mixed pair or error %v", err)
				return
			}
			// Each writer's own connection is never disturbed.
			mine := domain.Tokens{AccessToken: fmt.Sprintf("own-%d", n)}
			if err := v.Put(ctxT(t), own, mine); err != nil {
				t.Errorf("put own: %v", err)
				return
			}
			if got, err := v.Get(ctxT(t), own); err != nil || got.AccessToken != mine.AccessToken {
				t.Errorf("own connection disturbed: %v", err)
				return
			}
		}
	})
}
