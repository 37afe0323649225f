package domain

import "context"

// EventStore is the append-only log of connection events (implemented on
// NATS JetStream by adapters/jetstream).
type EventStore interface {
	// Append stores events for one connection if, and only if, the stream
	// sequence of the connection's last stored event is still expectedLastSeq
	// (0: the connection has no event yet). On success it returns the events
	// with their stream sequences. If another writer got there first it
	// returns an error wrapping ErrConflict and stores nothing. Re-sending an
	// event whose id is already stored succeeds without storing it twice.
	Append(ctx context.Context, connectionID string, expectedLastSeq uint64, events ...Event) ([]Event, error)

	// Load returns the current aggregate of a connection (Version is the
	// stream sequence of its last event), or ErrNotFound. Implementations
	// serve it from a cache checked for staleness, not by scanning the stream.
	Load(ctx context.Context, connectionID string) (Connection, error)

	// History returns every event of one connection in stream order.
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
}
