package jsstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// BenchmarkLoad measures Load of one connection among many interleaved ones:
// "cached" is the steady state (one direct get of the subject's last message
// to check staleness), "cold" a store that has never seen the connection
// (the subject's events fetched by direct get, next-by-subject), against a
// raw ordered consumer filtered on the subject reading the same history.
//
//	go test -run '^$' -bench Load ./adapters/jsstore/
func BenchmarkLoad(b *testing.B) {
	srv := natstest.StartOn(b, b.TempDir(), -1)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	st, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	// 2000 connections, 20 events each, interleaved.
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := st.Append(ctx, ids[i], 0, domain.Event{Payload: domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}}); err != nil {
			b.Fatal(err)
		}
	}
	seqs := map[string]uint64{}
	for round := 0; round < 19; round++ {
		for _, id := range ids {
			out, err := st.Append(ctx, id, seqs[id], domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"r": fmt.Sprint(round)}}})
			if err != nil {
				c, _ := st.Load(ctx, id)
				out, err = st.Append(ctx, id, c.Version, domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"r": fmt.Sprint(round)}}})
				if err != nil {
					b.Fatal(err)
				}
			}
			seqs[id] = out.Seq
		}
	}
	target := ids[len(ids)/2]
	b.Run("cached", func(b *testing.B) {
		if _, err := st.Load(ctx, target); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := st.Load(ctx, target); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		// A store that caches one aggregate, loading two connections of the
		// same shape in turn: every Load is cold.
		cold, err := jsstore.Open(ctx, nc, jsstore.Config{CacheSize: 1})
		if err != nil {
			b.Fatal(err)
		}
		pair, i := [2]string{target, ids[len(ids)/2+1]}, 0
		for b.Loop() {
			c, err := cold.Load(ctx, pair[i%2])
			if err != nil || c.Events != 20 {
				b.Fatalf("%v %d", err, c.Events)
			}
			i++
		}
	})
	b.Run("raw-filtered-consumer", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if _, err := st.Read(ctx, events.Range{ConnectionID: target}, func(*events.Record) error { n++; return nil }); err != nil || n != 20 {
				b.Fatalf("%v %d", err, n)
			}
		}
	})
}
