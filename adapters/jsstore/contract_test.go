package jsstore_test

import (
	"log/slog"
	"testing"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
)

// TestEventStoreContract runs the domain.EventStore contract against a real
// nats-server: each pair of handles is two stores (two instances, each with
// its own connection and aggregate cache) on one stream.
func TestEventStoreContract(t *testing.T) {
	srv := natstest.Start(t, "")
	porttest.EventStore(t, func(t *testing.T) (domain.EventStore, domain.EventStore) {
		open := func() *jsstore.Store {
			st, err := jsstore.Open(t.Context(), srv.Connect(t), jsstore.Config{Actor: porttest.Actor, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		return open(), open()
	})
}
