package vault

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// An older token set written into the bucket again (copied from an earlier
// revision, a backup, another instance's memory) is refused: it was sealed
// long before the server stored it. A set stored as it was sealed reads.
func TestValueStoredLongAfterSealingIsRefused(t *testing.T) {
	v, js := newVault(t)
	ctx := t.Context()
	mustPut(t, v, connA, sample)
	if _, err := v.Get(ctx, connA); err != nil {
		t.Fatalf("fresh value: %v", err)
	}
	// The same tokens sealed MaxSealAge+1m ago, stored now.
	v.now = func() time.Time { return time.Now().Add(-MaxSealAge - time.Minute) }
	mustPut(t, v, connA, sample)
	_, err := v.Get(ctx, connA)
	if !errors.Is(err, ErrReplayed) {
		t.Fatalf("Get of a value sealed %v before it was stored: %v, want ErrReplayed", MaxSealAge+time.Minute, err)
	}
	if errors.Is(err, domain.ErrNoTokens) {
		t.Fatal("a replayed value must not look like an empty vault")
	}
	// A value sealed just within the bound still reads (a write retried
	// through a leader election, clocks a little apart).
	v.now = func() time.Time { return time.Now().Add(-MaxSealAge + time.Minute) }
	mustPut(t, v, connA, sample)
	if _, err := v.Get(ctx, connA); err != nil {
		t.Fatalf("value sealed within MaxSealAge: %v", err)
	}
	_ = js
}

// A value is bound to its bucket: an attempt sealed for the attempts
// bucket under the same key does not open as tokens.
func TestValueBoundToItsBucket(t *testing.T) {
	v, js := newVault(t)
	ctx := t.Context()
	plain, _ := json.Marshal(record{AccessToken: "a", RefreshToken: "r"})
	sealed := v.seal(DefaultAttemptsBucket, connA, plain)
	if _, err := rawKV(t, js).Put(ctx, connA, sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get(ctx, connA); !errors.Is(err, ErrUndecryptable) {
		t.Fatalf("value sealed for another bucket: %v, want ErrUndecryptable", err)
	}
}

// Values written before format 2 (associated data: the key only) still
// read, so an upgrade loses no tokens.
func TestFormat1ValuesStillRead(t *testing.T) {
	v, js := newVault(t)
	ctx := t.Context()
	plain, _ := json.Marshal(record{AccessToken: "at-v1", RefreshToken: "rt-v1"})
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plain)+tagSize)
	out[0] = formatV1
	copy(out[1:], "0123456789ab")
	out = v.aead.Seal(out, out[1:1+nonceSize], plain, []byte(connA))
	if _, err := rawKV(t, js).Put(ctx, connA, out); err != nil {
		t.Fatal(err)
	}
	got, err := v.Get(ctx, connA)
	if err != nil || got.AccessToken != "at-v1" || got.RefreshToken != "rt-v1" {
		t.Fatalf("format 1 value: %v (tokens match: %v)", err, got.AccessToken == "at-v1")
	}
}
