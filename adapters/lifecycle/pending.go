package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/domain"
)

// Pending is an open authorisation attempt. Verifier is the PKCE verifier:
// secret, never logged or put in an event.
type Pending struct {
	ConnectionID string
	AttemptID    string
	Verifier     string
	ExpiresAt    time.Time
}

// PendingStore keeps open attempts keyed by the SHA-256 of their state value
// (the state itself is never stored).
type PendingStore interface {
	// Put records an attempt.
	Put(ctx context.Context, key string, p Pending) error
	// Take returns and removes an attempt, once: a second Take of the same
	// key returns ErrStateUnknown. Expired attempts are still returned (the
	// caller reports them as expired).
	Take(ctx context.Context, key string) (Pending, error)
}

// MemoryPending is a PendingStore in process memory: callbacks must reach
// the instance that started the attempt. Expired entries are dropped after
// a grace period.
type MemoryPending struct {
	mu sync.Mutex
	m  map[string]Pending
}

// NewMemoryPending returns an empty MemoryPending.
func NewMemoryPending() *MemoryPending { return &MemoryPending{m: map[string]Pending{}} }

// Put implements PendingStore.
func (m *MemoryPending) Put(_ context.Context, key string, p Pending) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for k, v := range m.m { // bounded garbage collection of long-expired attempts
		if now.Sub(v.ExpiresAt) > time.Hour {
			delete(m.m, k)
		}
	}
	m.m[key] = p
	return nil
}

// Take implements PendingStore.
func (m *MemoryPending) Take(_ context.Context, key string) (Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.m[key]
	if !ok {
		return Pending{}, ErrStateUnknown
	}
	delete(m.m, key)
	return p, nil
}

// Len returns how many attempts are open (for diagnostics and tests).
func (m *MemoryPending) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// Each calls f for every open attempt (for tests that check no secret
// leaks). f must not call back into m.
func (m *MemoryPending) Each(f func(Pending)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.m {
		f(p)
	}
}

// VaultPending keeps attempts in the vault's attempts bucket (sealed, shared
// by every instance, single use across instances): the production choice.
type VaultPending struct{ A *vault.Attempts }

// Put implements PendingStore.
func (v VaultPending) Put(ctx context.Context, key string, p Pending) error {
	return v.A.Put(ctx, key, domain.Attempt{ConnectionID: p.ConnectionID, AttemptID: p.AttemptID, Verifier: p.Verifier, ExpiresAt: p.ExpiresAt})
}

// Take implements PendingStore.
func (v VaultPending) Take(ctx context.Context, key string) (Pending, error) {
	a, err := v.A.Take(ctx, key)
	if errors.Is(err, vault.ErrNoAttempt) {
		return Pending{}, ErrStateUnknown
	}
	if err != nil {
		return Pending{}, err
	}
	return Pending{ConnectionID: a.ConnectionID, AttemptID: a.AttemptID, Verifier: a.Verifier, ExpiresAt: a.ExpiresAt}, nil
}
