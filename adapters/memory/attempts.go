package memory

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"

	"github.com/tokenline/tokenline/domain"
)

// attemptKeyRE is the key shape adapters/vault.Attempts accepts: a hex
// SHA-256 digest (of the state value).
var attemptKeyRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// Attempts implements domain.Attempts in memory with the semantics of
// adapters/vault.Attempts: keys must be lowercase hex SHA-256 digests (Put
// refuses others, Take reports them as unknown), Put replaces, and Take
// hands an attempt out once across goroutines. Entries never expire. It is
// safe for concurrent use.
type Attempts struct {
	mu       sync.Mutex
	attempts map[string]domain.Attempt
	failPuts failures
	failTake failures
}

var _ domain.Attempts = (*Attempts)(nil)

// NewAttempts returns an empty attempt store.
func NewAttempts() *Attempts { return &Attempts{attempts: map[string]domain.Attempt{}} }

// Put implements domain.Attempts.
func (a *Attempts) Put(ctx context.Context, key string, at domain.Attempt) error {
	if !attemptKeyRE.MatchString(key) {
		return errors.New("memory: attempts: key must be a hex SHA-256 digest")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: attempts: put: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.failPuts.take(); err != nil {
		return fmt.Errorf("memory: attempts: put: %w", err)
	}
	at.ExpiresAt = at.ExpiresAt.Round(0) // as after a round trip through the KV
	a.attempts[key] = at
	return nil
}

// Take implements domain.Attempts: of concurrent Takes of one key exactly
// one gets the attempt; the others, and every later one, get an error
// wrapping domain.ErrNoAttempt.
func (a *Attempts) Take(ctx context.Context, key string) (domain.Attempt, error) {
	if !attemptKeyRE.MatchString(key) {
		return domain.Attempt{}, domain.ErrNoAttempt
	}
	if err := ctx.Err(); err != nil {
		return domain.Attempt{}, fmt.Errorf("memory: attempts: take: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.failTake.take(); err != nil {
		return domain.Attempt{}, fmt.Errorf("memory: attempts: take: %w", err)
	}
	at, ok := a.attempts[key]
	if !ok {
		return domain.Attempt{}, domain.ErrNoAttempt
	}
	delete(a.attempts, key)
	return at, nil
}

// FailPuts makes the next n Puts fail with an error wrapping err.
func (a *Attempts) FailPuts(n int, err error) {
	a.failPuts.set(n, err)
}

// FailTakes makes the next n Takes fail with an error wrapping err (the
// attempt stays stored).
func (a *Attempts) FailTakes(n int, err error) {
	a.failTake.set(n, err)
}

// Len returns how many attempts are open.
func (a *Attempts) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.attempts)
}
