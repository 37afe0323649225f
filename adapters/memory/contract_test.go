package memory_test

import (
	"testing"
	"time"

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

func TestTokenEndpointContract(t *testing.T) {
	porttest.TokenEndpoint(t, func(t *testing.T) porttest.TokenEndpointHarness {
		clock := memory.NewClock(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC))
		e := memory.NewTokenEndpoint(memory.TokenEndpointConfig{Scopes: []string{"users:read", "accounts:read"}, Clock: clock})
		return porttest.TokenEndpointHarness{
			Endpoint: e,
			Approve: func(t *testing.T, authURL string) string {
				code, err := e.Approve(authURL)
				if err != nil {
					t.Fatal(err)
				}
				return code
			},
			Scopes:       []string{"users:read"},
			ClientSecret: memory.DefaultClientSecret,
			Now:          clock.Now,
		}
	})
}
