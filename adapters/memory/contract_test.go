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

func TestTokenVaultContract(t *testing.T) {
	porttest.TokenVault(t, func(t *testing.T) (domain.TokenVault, domain.TokenVault) {
		v := memory.NewVault()
		return v, v
	})
}

func TestAttemptsContract(t *testing.T) {
	porttest.Attempts(t, func(t *testing.T) (domain.Attempts, domain.Attempts) {
		a := memory.NewAttempts()
		return a, a
	})
}
