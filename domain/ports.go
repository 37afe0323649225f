package domain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// The ports: what the use cases (domain/lifecycle) need from the outside
// world, declared here next to the types they speak in. Every port has a
// production implementation under adapters/ (JetStream, KV, x/oauth2, the
// projections' gate) and an in-memory one (adapters/memory); one contract
// test suite per port (adapters/porttest) runs against both.

// EventStore is the append-only log of connection events (implemented on
// NATS JetStream by adapters/jsstore).
type EventStore interface {
	// Append stores one event for one connection if, and only if, the
	// stream sequence of the connection's last stored event is still
	// expectedLastSeq (0: the connection has no event yet). On success it
	// returns the event with its stream sequence (Seq) and with ID,
	// ConnectionID, Time and Actor filled in where they were empty. If
	// another writer got there first it returns an error wrapping
	// ErrConflict and stores nothing. Re-sending an event whose id is
	// already the connection's last succeeds without storing it twice.
	Append(ctx context.Context, connectionID string, expectedLastSeq uint64, e Event) (Event, error)

	// Load returns the current aggregate of a connection (Version is the
	// stream sequence of its last event), or an error wrapping ErrNotFound.
	// The aggregate may be stale (another writer appended since): Append's
	// optimistic concurrency detects that, and the caller loads again.
	Load(ctx context.Context, connectionID string) (Connection, error)

	// History returns every event of one connection in stream order (an
	// empty slice for an unknown connection).
	History(ctx context.Context, connectionID string) ([]Event, error)
}

// TokenVault keeps secret tokens outside the event log, encrypted at rest.
type TokenVault interface {
	// Put replaces the connection's tokens (access and refresh together).
	Put(ctx context.Context, connectionID string, t Tokens) error
	// Get returns the connection's tokens or an error wrapping ErrNoTokens.
	Get(ctx context.Context, connectionID string) (Tokens, error)
	// Delete destroys the connection's tokens; deleting nothing is not an error.
	Delete(ctx context.Context, connectionID string) error
	// Take returns the connection's tokens and destroys them, once across
	// every instance: of concurrent Takes one gets them and the others an
	// error wrapping ErrNoTokens. Tokens Put meanwhile are not destroyed
	// unseen: Take returns the ones it destroyed. Whoever takes tokens is
	// the one to revoke them.
	Take(ctx context.Context, connectionID string) (Tokens, error)
}

// Attempt is an open authorisation attempt. Verifier is the PKCE verifier:
// secret, sealed at rest, never logged or put in an event (String and the
// fmt verbs redact it).
type Attempt struct {
	ConnectionID string
	AttemptID    string
	Verifier     string
	ExpiresAt    time.Time
}

func (a Attempt) String() string {
	return fmt.Sprintf("domain.Attempt{ConnectionID:%s AttemptID:%s Verifier:%s ExpiresAt:%s}",
		a.ConnectionID, a.AttemptID, redacted, a.ExpiresAt.Format(time.RFC3339))
}

// GoString redacts the verifier from %#v.
func (a Attempt) GoString() string { return a.String() }

// LogValue redacts the verifier from slog.
func (a Attempt) LogValue() slog.Value {
	return slog.GroupValue(slog.String("connection_id", a.ConnectionID), slog.String("attempt_id", a.AttemptID))
}

// Format redacts the verifier for every fmt verb.
func (a Attempt) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, a.String()) }

// ErrNoAttempt: no open attempt has that key (never issued, already taken,
// or long expired).
var ErrNoAttempt = errors.New("tokenline: unknown or already used authorisation attempt")

// Attempts keeps open authorisation attempts keyed by the SHA-256 of their
// state value (the state itself is never stored), so that the provider's
// callback may reach any instance.
type Attempts interface {
	// Put records an attempt under key.
	Put(ctx context.Context, key string, a Attempt) error
	// Take returns and removes an attempt, once across every instance: a
	// second Take of the same key returns an error wrapping ErrNoAttempt.
	// An expired attempt that is still kept is returned (the caller reports
	// it as expired).
	Take(ctx context.Context, key string) (Attempt, error)
}

// TokenEndpoint is one OAuth 2.0 provider as the use cases see it: the
// authorization URL, the token endpoint (code exchange and refresh) and
// revocation. Exchange and Refresh fail with a *Failure (errors.As), which
// says whether the failure is terminal.
type TokenEndpoint interface {
	// AuthCodeURL returns the authorization request URL: the scopes, the
	// state, a PKCE S256 challenge derived from verifier, and the extra
	// parameters (which never override the ones it sets itself).
	AuthCodeURL(state, verifier string, scopes []string, extra map[string]string) string
	// Exchange trades an authorization code (with its PKCE verifier) for
	// tokens. Tokens.Scopes falls back to scopes when the response omits them.
	Exchange(ctx context.Context, code, verifier string, scopes []string) (Tokens, error)
	// Refresh presents a refresh token. rotated reports whether the provider
	// issued a new refresh token; a response without one keeps the old one
	// in the returned Tokens (RFC 6749 §6).
	Refresh(ctx context.Context, refreshToken string, scopes []string) (t Tokens, rotated bool, err error)
	// Revoke revokes a token at the provider (RFC 7009); hint is
	// "refresh_token" or "access_token". It returns an error wrapping
	// ErrNoRevocation when the provider has no revocation endpoint.
	Revoke(ctx context.Context, token, hint string) error
	// SetClientSecret installs a rotated client secret for later requests.
	SetClientSecret(secret string)
}

// ErrNoRevocation: the provider has no revocation endpoint.
var ErrNoRevocation = errors.New("tokenline: provider has no revocation endpoint")

// GateWriter is the part of the API-call gate the use cases write to and
// read from. The gate's state follows the events (projections); the use
// cases only hand it the access tokens (which never travel in events) and
// close it ahead of a terminal event.
type GateWriter interface {
	// CloseAfter closes the gate for a connection at once, before a
	// terminal event is appended; version is the aggregate version the
	// decision was made against (only a newer event re-opens the entry).
	CloseAfter(connectionID string, reason Reason, version uint64)
	// Reopen undoes a CloseAfter that no event has superseded (the terminal
	// event could not be appended).
	Reopen(connectionID string)
	// SetToken hands the gate the access token whose fingerprint is fp.
	SetToken(connectionID, fp, accessToken string) error
	// Check returns the access token if the connection may be used now, or
	// a *GateError.
	Check(connectionID string) (string, error)
}

// Clock is the time source of the use cases; tests set it.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After waits for d like time.After.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
