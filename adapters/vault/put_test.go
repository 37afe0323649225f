package vault

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
)

// Put publishes on the bucket's subject itself (not through kv.Put): the
// bucket then holds the value as the key's only revision, as kv.Put leaves
// it, and reads it back; a bucket that is gone is an error wrapping
// jetstream.ErrNoStreamResponse once the caller's deadline ends, as
// kv.Put's was.
func TestPutWritesTheKeyAsKVPutDoes(t *testing.T) {
	js := startJetStream(t)
	v, err := Open(context.Background(), js, Config{Key: newKey(t), Bucket: "put_direct"})
	if err != nil {
		t.Fatal(err)
	}
	if v.puts == nil {
		t.Fatal("Put goes through kv.Put on a JetStream with the default API prefix")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.NewString()
	for _, rt := range []string{"rt1", "rt2"} {
		if err := v.Put(ctx, id, domain.Tokens{AccessToken: "at", RefreshToken: rt}); err != nil {
			t.Fatal(err)
		}
	}
	entry, err := v.kv.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := v.kv.History(ctx, id)
	if err != nil || len(hist) != 1 || hist[0].Revision() != entry.Revision() || entry.Operation() != jetstream.KeyValuePut {
		t.Fatalf("history %d entries (%v), want the latest revision only", len(hist), err)
	}
	if got, err := v.Get(ctx, id); err != nil || got.RefreshToken != "rt2" {
		t.Fatalf("read back %q, %v", got.RefreshToken, err)
	}
	if err := js.DeleteKeyValue(ctx, "put_direct"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if err := v.Put(short, id, domain.Tokens{AccessToken: "at", RefreshToken: "rt3"}); !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put to a deleted bucket: %v", err)
	}
}
