package memory

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tokenline/tokenline/domain"
)

// connectionIDRE is the key shape adapters/vault accepts: one NATS subject
// token of letters, digits, '-' and '_' (tokenline issues UUIDs).
var connectionIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Vault implements domain.TokenVault in memory with the semantics of
// adapters/vault: Put replaces the whole token set, a set without either
// token is refused, Expiry is kept in UTC, connection ids are checked like
// KV keys. It never aliases a caller's slice. It is safe for concurrent use.
type Vault struct {
	mu     sync.Mutex
	tokens map[string]domain.Tokens

	failPuts    failures
	failGets    failures
	failDeletes failures

	puts, gets, deletes atomic.Int64
}

var _ domain.TokenVault = (*Vault)(nil)

// NewVault returns an empty vault.
func NewVault() *Vault { return &Vault{tokens: map[string]domain.Tokens{}} }

func copyTokens(t domain.Tokens) domain.Tokens {
	t.Expiry = t.Expiry.UTC()
	if len(t.Scopes) == 0 {
		t.Scopes = nil // the KV record omits empty scopes
	} else {
		t.Scopes = slices.Clone(t.Scopes)
	}
	return t
}

func checkID(op, id string) error {
	if connectionIDRE.MatchString(id) {
		return nil
	}
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return fmt.Errorf("memory: vault: %s: invalid connection id %q", op, id)
}

// Put implements domain.TokenVault: t replaces the connection's tokens
// entirely. A set with neither an access nor a refresh token is refused.
func (v *Vault) Put(ctx context.Context, connectionID string, t domain.Tokens) error {
	v.puts.Add(1)
	if err := checkID("put", connectionID); err != nil {
		return err
	}
	if t.AccessToken == "" && t.RefreshToken == "" {
		return fmt.Errorf("memory: vault: put tokens of connection %s: neither an access nor a refresh token given", connectionID)
	}
	if err := v.fail(ctx, &v.failPuts); err != nil {
		return fmt.Errorf("memory: vault: put tokens of connection %s: %w", connectionID, err)
	}
	v.mu.Lock()
	v.tokens[connectionID] = copyTokens(t)
	v.mu.Unlock()
	return nil
}

// Get implements domain.TokenVault: it returns a copy of the connection's
// tokens or an error wrapping domain.ErrNoTokens.
func (v *Vault) Get(ctx context.Context, connectionID string) (domain.Tokens, error) {
	v.gets.Add(1)
	if err := checkID("get", connectionID); err != nil {
		return domain.Tokens{}, err
	}
	if err := v.fail(ctx, &v.failGets); err != nil {
		return domain.Tokens{}, fmt.Errorf("memory: vault: get tokens of connection %s: %w", connectionID, err)
	}
	v.mu.Lock()
	t, ok := v.tokens[connectionID]
	v.mu.Unlock()
	if !ok {
		return domain.Tokens{}, fmt.Errorf("%w %s", domain.ErrNoTokens, connectionID)
	}
	return copyTokens(t), nil
}

// Take implements domain.TokenVault: get and delete in one step. It fails
// as Delete does (FailDeletes), keeping the tokens.
func (v *Vault) Take(ctx context.Context, connectionID string) (domain.Tokens, error) {
	v.deletes.Add(1)
	if err := checkID("take", connectionID); err != nil {
		return domain.Tokens{}, err
	}
	if err := v.fail(ctx, &v.failDeletes); err != nil {
		return domain.Tokens{}, fmt.Errorf("memory: vault: take tokens of connection %s: %w", connectionID, err)
	}
	v.mu.Lock()
	t, ok := v.tokens[connectionID]
	delete(v.tokens, connectionID)
	v.mu.Unlock()
	if !ok {
		return domain.Tokens{}, fmt.Errorf("%w %s", domain.ErrNoTokens, connectionID)
	}
	return copyTokens(t), nil
}

// Delete implements domain.TokenVault; deleting nothing is not an error.
func (v *Vault) Delete(ctx context.Context, connectionID string) error {
	v.deletes.Add(1)
	if err := checkID("delete", connectionID); err != nil {
		return err
	}
	if err := v.fail(ctx, &v.failDeletes); err != nil {
		return fmt.Errorf("memory: vault: delete tokens of connection %s: %w", connectionID, err)
	}
	v.mu.Lock()
	delete(v.tokens, connectionID)
	v.mu.Unlock()
	return nil
}

func (v *Vault) fail(ctx context.Context, f *failures) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.take()
}

// FailPuts makes the next n Puts fail with an error wrapping err, keeping
// the stored tokens (a vault outage).
func (v *Vault) FailPuts(n int, err error) {
	v.failPuts.set(n, err)
}

// FailGets makes the next n Gets fail with an error wrapping err.
func (v *Vault) FailGets(n int, err error) {
	v.failGets.set(n, err)
}

// FailDeletes makes the next n Deletes fail with an error wrapping err,
// keeping the stored tokens.
func (v *Vault) FailDeletes(n int, err error) {
	v.failDeletes.set(n, err)
}

// Has reports whether tokens are stored for the connection.
func (v *Vault) Has(connectionID string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.tokens[connectionID]
	return ok
}

// Len returns how many connections have tokens stored.
func (v *Vault) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.tokens)
}

// Puts returns how many times Put was called (successful or not).
func (v *Vault) Puts() int { return int(v.puts.Load()) }

// Gets returns how many times Get was called (successful or not).
func (v *Vault) Gets() int { return int(v.gets.Load()) }

// Deletes returns how many times Delete was called (successful or not).
func (v *Vault) Deletes() int { return int(v.deletes.Load()) }
