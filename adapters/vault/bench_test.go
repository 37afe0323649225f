package vault

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// BenchmarkGet measures one vault Get (one KV read and one AES-GCM open) on a
// single in-process server.
//
//	go test -run '^$' -bench Get ./adapters/vault/
func BenchmarkGet(b *testing.B) {
	js := startJetStream(b)
	v, err := Open(context.Background(), js, Config{Key: make([]byte, KeySize)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	id := uuid.NewString()
	if err := v.Put(ctx, id, domain.Tokens{AccessToken: "a", RefreshToken: "r", Expiry: time.Now().Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := v.Get(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
