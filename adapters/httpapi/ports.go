package httpapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/projections"
)

// The HTTP layer declares what it needs from the rest of tokenline as small
// interfaces; cmd/tokenline wires the concrete types. Each is satisfied today
// by:
//
//	ConnectionService  *lifecycle.Service
//	StatusReader       StatusFromProjection (on *projections.Status), or StoreReader
//	AuditReader        StoreReader (on *jsstore.Store: package projections' audit and replay)
//	Readiness          NATSReady(nc), ReadinessFunc around the projection runner

// ConnectionService is the command side: everything that changes a
// connection goes through it. *lifecycle.Service implements it.
type ConnectionService interface {
	// Create makes a new connection (unauthenticated, never_authorised) and
	// returns it. An unknown provider is an error wrapping
	// lifecycle.ErrNoProvider; invalid scopes or configuration wrap
	// domain.ErrInvalidCommand.
	Create(ctx context.Context, provider string, scopes []string, config map[string]string) (domain.Connection, error)
	// Update replaces the configuration and/or the scopes (nil: unchanged)
	// without touching state or tokens, and returns the connection.
	Update(ctx context.Context, id string, scopes []string, config map[string]string) (domain.Connection, error)
	// Delete closes the gate, revokes the tokens at the provider (best
	// effort), destroys them and deletes the connection; history stays.
	// A deleted connection gives domain.ErrDeleted.
	Delete(ctx context.Context, id string) error
	// StartAuthorisation opens an (re)authorisation attempt and returns the
	// provider's authorize URL (with a one-time state and PKCE challenge).
	StartAuthorisation(ctx context.Context, id string) (string, error)
	// HandleCallback completes the attempt named by state. Errors:
	// lifecycle.ErrStateMissing, ErrStateUnknown, ErrStateExpired and
	// ErrStateMismatch change nothing; lifecycle.ErrDenied means the attempt
	// ended without a grant (the connection is unauthenticated, and the
	// result names it).
	HandleCallback(ctx context.Context, state, code, errCode, errDesc string) (lifecycle.CallbackResult, error)
	// Token returns the access token and its expiry if the gate is open, or
	// an error wrapping *domain.GateError.
	Token(ctx context.Context, id string) (string, time.Time, error)
	// TokenWait is Token that waits up to wait while a refresh is due or
	// in flight ((*domain.GateError).RetryLater) instead of refusing.
	TokenWait(ctx context.Context, id string, wait time.Duration) (string, time.Time, error)
	// ReportRejection records that an API call with the connection's token
	// was rejected (401/403) and returns the connection afterwards.
	ReportRejection(ctx context.Context, id string, r lifecycle.Rejection) (domain.Connection, error)
	// HasProvider reports whether a provider of that name is configured.
	HasProvider(name string) bool
	// SetClientSecret installs a provider's rotated client secret.
	SetClientSecret(provider, secret string) error
}

var _ ConnectionService = (*lifecycle.Service)(nil)

// StatusReader is the read side for current state.
type StatusReader interface {
	// Connection returns the current aggregate of one connection (deleted
	// ones included, with Deleted set), or an error wrapping
	// domain.ErrNotFound. It should read its own writes: the API answers
	// GET right after POST from it.
	Connection(ctx context.Context, id string) (domain.Connection, error)
	// Connections returns every connection that was not deleted, in a
	// stable order (oldest first).
	Connections(ctx context.Context) ([]domain.Connection, error)
}

// AuditReader is the read side for history: the audit log and the incident
// replay of package projections, whose functions (on a *jsstore.Store) the
// methods mirror.
type AuditReader interface {
	// AuditEvents calls fn with every event matching q (with the time it
	// was stored), in stream order: projections.AuditEvents. A connection
	// without events gives none, not an error.
	AuditEvents(ctx context.Context, q projections.AuditQuery, fn func(e domain.Event, stored time.Time) error) error
	// StateAt returns a connection as it was at the instant at, with the
	// events that led there: projections.StateAt. The error wraps
	// domain.ErrNotFound if the connection did not exist then.
	StateAt(ctx context.Context, connectionID string, at time.Time) (domain.Connection, []domain.Event, error)
	// Timeline reports every event of every connection in [from, to) with
	// the transition it made, and counts the state changes:
	// projections.Timeline.
	Timeline(ctx context.Context, from, to time.Time, opts ...projections.TimelineOption) (projections.TimelineReport, error)
}

// Readiness is one dependency that must be ready before the instance takes
// traffic (GET /readyz).
type Readiness interface {
	// Ready returns nil when ready, or an error saying why not. The message
	// is served on /readyz: it must not hold secrets.
	Ready(ctx context.Context) error
}

// ReadinessFunc adapts a function to Readiness.
type ReadinessFunc func(ctx context.Context) error

// Ready implements Readiness.
func (f ReadinessFunc) Ready(ctx context.Context) error { return f(ctx) }

// Check is a named readiness check.
type Check struct {
	// Name prefixes the reason on /readyz ("nats", "projections").
	Name  string
	Probe Readiness
	// Degrades marks a check whose failure leaves the instance ready: it is
	// listed under "degraded" on /readyz (a provider whose discovery is
	// pending: the other providers' connections, and the tokens already
	// held, still work).
	Degrades bool
}

// NATSReady reports whether nc is connected.
func NATSReady(nc *nats.Conn) Readiness {
	return ReadinessFunc(func(context.Context) error {
		if nc == nil {
			return errors.New("no connection")
		}
		if st := nc.Status(); st != nats.CONNECTED {
			return errors.New("not connected (" + st.String() + ")")
		}
		return nil
	})
}

// ProjectionsReady is ready once ready() is true (the projection runner
// caught up at start) and, if lag is set, the projections are at most maxLag
// stream messages behind. With the projections.Runner:
//
//	ProjectionsReady(runner.Ready, runner.Lag, 1000)
func ProjectionsReady(ready func() bool, lag func(ctx context.Context) (uint64, error), maxLag uint64) Readiness {
	return ReadinessFunc(func(ctx context.Context) error {
		if ready != nil && !ready() {
			return errors.New("catching up with the stream")
		}
		if lag == nil {
			return nil
		}
		n, err := lag(ctx)
		if err != nil {
			return errors.New("cannot read the stream position")
		}
		if n > maxLag {
			return fmt.Errorf("%d events behind the stream (at most %d allowed)", n, maxLag)
		}
		return nil
	})
}
