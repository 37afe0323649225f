package domain

import (
	"cmp"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// EventType is the public name of an event. The CloudEvents `type` attribute
// is "tokenline." + the name. The names are a public contract.
type EventType string

// The event vocabulary.
const (
	EventConnectionCreated      EventType = "connection.created"
	EventAuthorisationStarted   EventType = "authorisation.started"
	EventAuthorisationCompleted EventType = "authorisation.completed"
	EventAuthorisationFailed    EventType = "authorisation.failed"
	EventRefreshStarted         EventType = "refresh.started"
	EventRefreshSucceeded       EventType = "refresh.succeeded"
	EventRefreshFailed          EventType = "refresh.failed"
	EventRefreshLeaseExtended   EventType = "refresh.lease_extended"
	EventAccessRejected         EventType = "access.rejected"
	EventTokensInvalidated      EventType = "tokens.invalidated"
	EventConnectionUpdated      EventType = "connection.updated"
	EventConnectionDeleted      EventType = "connection.deleted"
)

// EventTypes lists the vocabulary in a stable order.
var EventTypes = []EventType{
	EventConnectionCreated, EventAuthorisationStarted, EventAuthorisationCompleted,
	EventAuthorisationFailed, EventRefreshStarted, EventRefreshSucceeded, EventRefreshFailed,
	EventAccessRejected, EventTokensInvalidated, EventConnectionUpdated, EventConnectionDeleted,
	EventRefreshLeaseExtended,
}

// Event is one fact about one connection. ID is a UUID (also the message id
// used for de-duplication in the stream); Seq is the stream sequence once the
// event is stored (0 before). Payload is one of the *Data types below.
// No field of any event ever holds a token, secret, PKCE verifier or state.
type Event struct {
	ID           string
	ConnectionID string
	Time         time.Time
	// Actor names who caused the event: an instance id ("instance/<id>"),
	// "api", "user", "scheduler".
	Actor   string
	Seq     uint64
	Payload Payload
	// Link places the event in its connection's hash chain (see ChainLink);
	// the event store and the decoders fill it in.
	Link ChainLink
}

// ChainLink is an event's place in its connection's hash chain: Hash is the
// SHA-256 of the event's stored bytes, Prev the hash of the event before it
// in the chain (the zero hash for the first). Chained is false for events
// written before the chain existed (they carry no prev hash): such events
// are accepted only before a connection's first chained event.
type ChainLink struct {
	Prev, Hash [32]byte
	Chained    bool
}

// Type returns the event's type name.
func (e Event) Type() EventType {
	if e.Payload == nil {
		return ""
	}
	return e.Payload.EventType()
}

// Stamp fills in what an event store fills in on append when e leaves it
// empty: a new UUID, connectionID, now() in UTC and actor. It refuses an
// event that names another connection.
func (e *Event) Stamp(connectionID string, now func() time.Time, actor string) error {
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	e.ConnectionID = cmp.Or(e.ConnectionID, connectionID)
	if e.ConnectionID != connectionID {
		return fmt.Errorf("event %s is for connection %s, not %s", e.ID, e.ConnectionID, connectionID)
	}
	if e.Time.IsZero() {
		e.Time = now().UTC()
	}
	e.Actor = cmp.Or(e.Actor, actor)
	return nil
}

// Payload is the data of one event type.
type Payload interface {
	EventType() EventType
}

// TokenInfo describes a token set without revealing it: fingerprints, expiry
// and scopes only.
type TokenInfo struct {
	AccessTokenFP        string    `json:"access_token_fp,omitempty"`
	RefreshTokenFP       string    `json:"refresh_token_fp,omitempty"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`
	Scopes               []string  `json:"scopes,omitempty"`
}

// ConnectionCreated: a new connection exists, unauthenticated (never_authorised).
type ConnectionCreated struct {
	Provider string            `json:"provider"`
	Scopes   []string          `json:"scopes"`
	Config   map[string]string `json:"config,omitempty"`
}

// AuthorisationStarted: an authorisation attempt was opened. AttemptID
// identifies the attempt; the state value and the PKCE verifier are never
// recorded.
type AuthorisationStarted struct {
	AttemptID string    `json:"attempt_id"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AuthorisationCompleted: the code was exchanged and tokens are stored.
type AuthorisationCompleted struct {
	AttemptID string    `json:"attempt_id"`
	Tokens    TokenInfo `json:"tokens"`
}

// AuthorisationFailed: the attempt ended without a grant.
type AuthorisationFailed struct {
	AttemptID   string `json:"attempt_id"`
	Reason      Reason `json:"reason"`
	ErrorCode   string `json:"error_code,omitempty"`
	Description string `json:"error_description,omitempty"`
}

// RefreshStarted: this instance holds the refresh lease until LeaseUntil.
type RefreshStarted struct {
	Attempt    int       `json:"attempt"`
	LeaseUntil time.Time `json:"lease_until"`
	// Trigger is "schedule", "access_rejected", "manual" or "recovery".
	Trigger        string `json:"trigger"`
	RefreshTokenFP string `json:"refresh_token_fp,omitempty"`
}

// RefreshSucceeded: new tokens are stored. Rotated tells whether the provider
// issued a new refresh token.
type RefreshSucceeded struct {
	Attempt int       `json:"attempt"`
	Tokens  TokenInfo `json:"tokens"`
	Rotated bool      `json:"rotated"`
}

// RefreshFailed: one refresh attempt failed. Terminal failures end in
// unauthenticated with Reason; transient ones return to active with RetryAt.
type RefreshFailed struct {
	Terminal   bool      `json:"terminal"`
	Class      string    `json:"class"` // "terminal" | "transient"
	ErrorCode  string    `json:"error_code,omitempty"`
	HTTPStatus int       `json:"http_status,omitempty"`
	Attempt    int       `json:"attempt"`
	Reason     Reason    `json:"reason,omitempty"`
	RetryAt    time.Time `json:"retry_at,omitzero"`
}

// RefreshLeaseExtended: the refresher that holds the lease is alive and
// moved the lease's end to LeaseUntil (it is still sending the token
// request, storing the tokens or recording the outcome). Another instance
// recovers a lease only some time after its end, so a holder that keeps
// extending is never recovered.
type RefreshLeaseExtended struct {
	LeaseUntil time.Time `json:"lease_until"`
}

// AccessRejected: an API call using the connection's access token was
// rejected. Terminal rejections (the token from a refresh made because of a
// rejection was rejected again) end in unauthenticated.
type AccessRejected struct {
	HTTPStatus    int    `json:"http_status"`
	ErrorCode     string `json:"error_code,omitempty"`
	Scope         string `json:"scope,omitempty"`
	AccessTokenFP string `json:"access_token_fp,omitempty"`
	Terminal      bool   `json:"terminal"`
	Reason        Reason `json:"reason,omitempty"`
}

// TokensInvalidated: stored tokens were destroyed (and revoked at the
// provider where it has an endpoint, best effort).
type TokensInvalidated struct {
	Reason          Reason `json:"reason,omitempty"`
	AccessTokenFP   string `json:"access_token_fp,omitempty"`
	RefreshTokenFP  string `json:"refresh_token_fp,omitempty"`
	ProviderRevoked bool   `json:"provider_revoked"`
}

// ConnectionUpdated: configuration (and optionally scopes) changed. Nil
// fields are unchanged; tokens and state are untouched.
//
// On the wire a field left unchanged is null; an empty list or object
// clears it.
type ConnectionUpdated struct {
	Scopes []string          `json:"scopes"`
	Config map[string]string `json:"config"`
}

// ConnectionDeleted: the connection is deleted; history is kept.
type ConnectionDeleted struct{}

func (ConnectionCreated) EventType() EventType      { return EventConnectionCreated }
func (AuthorisationStarted) EventType() EventType   { return EventAuthorisationStarted }
func (AuthorisationCompleted) EventType() EventType { return EventAuthorisationCompleted }
func (AuthorisationFailed) EventType() EventType    { return EventAuthorisationFailed }
func (RefreshStarted) EventType() EventType         { return EventRefreshStarted }
func (RefreshSucceeded) EventType() EventType       { return EventRefreshSucceeded }
func (RefreshFailed) EventType() EventType          { return EventRefreshFailed }
func (RefreshLeaseExtended) EventType() EventType   { return EventRefreshLeaseExtended }
func (AccessRejected) EventType() EventType         { return EventAccessRejected }
func (TokensInvalidated) EventType() EventType      { return EventTokensInvalidated }
func (ConnectionUpdated) EventType() EventType      { return EventConnectionUpdated }
func (ConnectionDeleted) EventType() EventType      { return EventConnectionDeleted }
