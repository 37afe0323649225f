package vault_test

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/domain"
)

// jetStream starts a real nats-server on 127.0.0.1 and returns a function
// that opens a new client connection (one per instance) to it.
func jetStream(t *testing.T) func(t *testing.T) jetstream.JetStream {
	srv := natstest.Start(t, "")
	return func(t *testing.T) jetstream.JetStream {
		js, err := jetstream.New(srv.Connect(t))
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
}

func key(t *testing.T) []byte {
	k := make([]byte, vault.KeySize)
	rand.Read(k)
	return k
}

// TestTokenVaultContract runs the domain.TokenVault contract against the
// KV vault: two instances, each with its own connection, on one bucket and
// one key.
func TestTokenVaultContract(t *testing.T) {
	connect, k := jetStream(t), key(t)
	porttest.TokenVault(t, func(t *testing.T) (domain.TokenVault, domain.TokenVault) {
		open := func() *vault.Vault {
			v, err := vault.Open(t.Context(), connect(t), vault.Config{Key: k})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		return open(), open()
	})
}

// TestAttemptsContract runs the domain.Attempts contract against the KV
// attempt store: two instances on one bucket and one key.
func TestAttemptsContract(t *testing.T) {
	connect, k := jetStream(t), key(t)
	porttest.Attempts(t, func(t *testing.T) (domain.Attempts, domain.Attempts) {
		open := func() *vault.Attempts {
			a, err := vault.OpenAttempts(t.Context(), connect(t), k, time.Hour, 1)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		return open(), open()
	})
}
