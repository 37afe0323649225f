package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors. Adapters wrap them; callers test with errors.Is.
var (
	// ErrConflict: another writer appended to the connection after the
	// expected sequence (optimistic concurrency). Reload and decide again.
	ErrConflict = errors.New("tokenline: conflicting append (connection changed concurrently)")
	// ErrNotFound: no such connection.
	ErrNotFound = errors.New("tokenline: connection not found")
	// ErrExists: a connection with this id already exists.
	ErrExists = errors.New("tokenline: connection already exists")
	// ErrDeleted: the connection was deleted; its history is kept but it
	// accepts no further command.
	ErrDeleted = errors.New("tokenline: connection deleted")
	// ErrInvalidTransition: the event is not allowed in the current state.
	// The concrete error is a *TransitionError.
	ErrInvalidTransition = errors.New("tokenline: transition not allowed")
	// ErrInvalidCommand: the command's own fields are invalid.
	ErrInvalidCommand = errors.New("tokenline: invalid command")
	// ErrUnauthenticated: the connection may not be used for API calls now
	// (the gate is closed). The concrete error is a *GateError.
	ErrUnauthenticated = errors.New("tokenline: connection is not authenticated")
	// ErrNoTokens: the vault holds no tokens for the connection.
	ErrNoTokens = errors.New("tokenline: no tokens stored for connection")
)

// TransitionError reports an event that the FSM refuses in a state.
type TransitionError struct {
	From  State
	Event string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("tokenline: event %q not allowed in state %q", e.Event, e.From)
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// GateError is returned when an API call is refused because the connection
// is not usable. It never carries a token.
type GateError struct {
	ConnectionID string
	State        State
	Reason       Reason
	// Detail is one of the Detail* words below.
	Detail string
}

// The details a *GateError carries: why a connection may not be used now.
// They are a public contract (the API's 409 body, the gate-denial metric).
const (
	// DetailUnauthenticated: no usable grant (Reason says why).
	DetailUnauthenticated = "unauthenticated"
	// DetailTokenExpired: active, but the access token is (about to be)
	// expired and its refresh has not landed yet.
	DetailTokenExpired = "token_expired"
	// DetailRefreshing: a refresh is in flight.
	DetailRefreshing = "refreshing"
	// DetailReauthorising: waiting for the user to complete authorisation.
	DetailReauthorising = "reauthorising"
	// DetailUnknownConnection: no such connection (yet) on this instance.
	DetailUnknownConnection = "unknown_connection"
	// DetailTokenNotLoaded: active, but this instance does not hold the
	// current access token yet (another instance refreshed it): the caller
	// loads it from the vault.
	DetailTokenNotLoaded = "token_not_loaded"
)

// GateDetails lists every detail word in a stable order.
var GateDetails = []string{DetailUnauthenticated, DetailTokenExpired, DetailUnknownConnection, DetailRefreshing, DetailReauthorising, DetailTokenNotLoaded}

func (e *GateError) Error() string {
	if e.Reason != ReasonNone {
		return fmt.Sprintf("tokenline: connection %s is %s (%s): %s", e.ConnectionID, e.State, e.Reason, e.Detail)
	}
	return fmt.Sprintf("tokenline: connection %s is %s: %s", e.ConnectionID, e.State, e.Detail)
}

// Unwrap makes errors.Is(err, ErrUnauthenticated) true.
func (e *GateError) Unwrap() error { return ErrUnauthenticated }
