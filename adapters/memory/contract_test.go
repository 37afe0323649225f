package memory_test

import (
	"testing"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
)

func TestEventStoreContract(t *testing.T) {
	porttest.EventStore(t, func(t *testing.T) (domain.EventStore, domain.EventStore) {
		s := memory.NewEventStore(memory.EventStoreConfig{Actor: porttest.Actor})
		return s, s
	})
}
