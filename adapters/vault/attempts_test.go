package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

func attemptKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

func TestAttemptsSingleUseAcrossInstancesAndSealed(t *testing.T) {
	js := startJetStream(t)
	key := newKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a1, err := OpenAttempts(ctx, js, key, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := OpenAttempts(ctx, js, key, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := attemptKey("state-value-1")
	at := domain.Attempt{ConnectionID: "c1", AttemptID: "a1", Verifier: "verifier-secret-0123456789", ExpiresAt: time.Now().Add(time.Minute).UTC()}
	if err := a1.Put(ctx, k, at); err != nil {
		t.Fatal(err)
	}
	raw, err := a1.kv.Get(ctx, k)
	if err != nil || bytes.Contains(raw.Value(), []byte(at.Verifier)) {
		t.Fatalf("raw value holds the verifier in plaintext (err %v)", err)
	}
	var wins, misses int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := a1
			if i%2 == 1 {
				a = a2
			}
			got, err := a.Take(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && got.Verifier == at.Verifier && got.ConnectionID == "c1":
				wins++
			case errors.Is(err, ErrNoAttempt):
				misses++
			default:
				t.Errorf("take: %+v %v", got, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || misses != 7 {
		t.Fatalf("wins %d misses %d, want 1 and 7", wins, misses)
	}
	if _, err := a1.Take(ctx, attemptKey("never-issued")); !errors.Is(err, ErrNoAttempt) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := a1.Take(ctx, "not-a-digest"); !errors.Is(err, ErrNoAttempt) {
		t.Fatalf("malformed key: %v", err)
	}
	// Another key cannot read it: the digest is the associated data.
	wrong, _ := OpenAttempts(ctx, js, newKey(t), time.Hour, 1)
	_ = a1.Put(ctx, k, at)
	if _, err := wrong.Take(ctx, k); !errors.Is(err, ErrUndecryptable) {
		t.Fatalf("other key: %v", err)
	}
}
