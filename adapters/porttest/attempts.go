package porttest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// OpenAttempts returns two handles on one attempt store (two instances on
// one bucket, same key). They may be the same value.
type OpenAttempts func(t *testing.T) (a, b domain.Attempts)

// AttemptKey returns the key of a state value: its hex SHA-256.
func AttemptKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// Attempts runs the contract of domain.Attempts.
func Attempts(t *testing.T, open OpenAttempts) {
	run(t, open, []subtest[OpenAttempts]{
		{"PutTakeOnce", atPutTake},
		{"UnknownAndMalformedKeys", atUnknown},
		{"ExpiredAttemptStillReturned", atExpired},
		{"KeysIsolated", atIsolated},
		{"ConcurrentTakesOneWinner", atConcurrent},
	})
}

func attempt() domain.Attempt {
	return domain.Attempt{ConnectionID: NewConnectionID(), AttemptID: NewConnectionID(), Verifier: "verifier-" + NewConnectionID() + NewConnectionID(),
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func sameAttempt(a, b domain.Attempt) bool {
	return a.ConnectionID == b.ConnectionID && a.AttemptID == b.AttemptID && a.Verifier == b.Verifier && a.ExpiresAt.Equal(b.ExpiresAt)
}

func atPutTake(t *testing.T, open OpenAttempts) {
	a, b := open(t)
	key := AttemptKey("state-" + NewConnectionID())
	want := attempt()
	if err := a.Put(ctxT(t), key, want); err != nil {
		t.Fatal(err)
	}
	got, err := b.Take(ctxT(t), key) // the callback may reach any instance
	if err != nil || !sameAttempt(got, want) {
		t.Fatalf("take: %v (same %v)", err, sameAttempt(got, want))
	}
	for _, h := range []domain.Attempts{a, b} {
		if _, err := h.Take(ctxT(t), key); !errors.Is(err, domain.ErrNoAttempt) {
			t.Fatalf("second take: %v, want ErrNoAttempt", err)
		}
	}
}

func atUnknown(t *testing.T, open OpenAttempts) {
	a, _ := open(t)
	if _, err := a.Take(ctxT(t), AttemptKey("never-issued-"+NewConnectionID())); !errors.Is(err, domain.ErrNoAttempt) {
		t.Fatalf("unknown key: %v, want ErrNoAttempt", err)
	}
	for _, k := range []string{"", "not-a-digest", AttemptKey("x")[:63], AttemptKey("x") + "0", "A" + AttemptKey("x")[1:], "*", "a.b"} {
		if _, err := a.Take(ctxT(t), k); !errors.Is(err, domain.ErrNoAttempt) {
			t.Fatalf("malformed key %q: %v, want ErrNoAttempt", k, err)
		}
		if err := a.Put(ctxT(t), k, attempt()); err == nil {
			t.Fatalf("put under malformed key %q succeeded", k)
		}
	}
}

func atExpired(t *testing.T, open OpenAttempts) {
	a, _ := open(t)
	key := AttemptKey("state-" + NewConnectionID())
	want := attempt()
	want.ExpiresAt = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) // long past
	if err := a.Put(ctxT(t), key, want); err != nil {
		t.Fatal(err)
	}
	got, err := a.Take(ctxT(t), key)
	if err != nil || !sameAttempt(got, want) {
		t.Fatalf("take of an expired attempt: %v; the caller, not the store, reports expiry", err)
	}
}

func atIsolated(t *testing.T, open OpenAttempts) {
	a, b := open(t)
	k1, k2 := AttemptKey("one-"+NewConnectionID()), AttemptKey("two-"+NewConnectionID())
	w1, w2 := attempt(), attempt()
	if err := a.Put(ctxT(t), k1, w1); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctxT(t), k2, w2); err != nil {
		t.Fatal(err)
	}
	g2, err := a.Take(ctxT(t), k2)
	if err != nil || !sameAttempt(g2, w2) {
		t.Fatalf("take k2: %v", err)
	}
	g1, err := b.Take(ctxT(t), k1)
	if err != nil || !sameAttempt(g1, w1) {
		t.Fatalf("take k1 after k2: %v", err)
	}
}

func atConcurrent(t *testing.T, open OpenAttempts) {
	const takers, rounds = 8, 3
	a, b := open(t)
	for round := 0; round < rounds; round++ {
		key := AttemptKey("race-" + NewConnectionID())
		want := attempt()
		if err := a.Put(ctxT(t), key, want); err != nil {
			t.Fatal(err)
		}
		var (
			mu           sync.Mutex
			wins, misses int
		)
		together(takers, func(i int) {
			got, err := either(i, a, b).Take(ctxT(t), key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && sameAttempt(got, want):
				wins++
			case errors.Is(err, domain.ErrNoAttempt):
				misses++
			default:
				t.Errorf("take: %v", err)
			}
		})
		if wins != 1 || misses != takers-1 {
			t.Fatalf("round %d: %d wins, %d misses; want 1 and %d", round, wins, misses, takers-1)
		}
	}
}
