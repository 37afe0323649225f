package domain

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Connection is the aggregate: everything known about one OAuth grant,
// rebuilt from its events. It holds no token, only fingerprints and expiry.
type Connection struct {
	ID       string
	Provider string
	Scopes   []string
	Config   map[string]string

	State  State
	Reason Reason
	// Since is when the connection entered its current state.
	Since time.Time
	// Version is the stream sequence of the last applied event (0: none).
	Version uint64
	// Events is how many events have been applied.
	Events  int
	Created time.Time
	Deleted bool
	// TokensHeld is false once the stored tokens were invalidated.
	TokensHeld bool
	// LastRefreshOK: the latest refresh (LastRefreshAt) succeeded.
	LastRefreshOK bool
	// RefreshTokenKept: the latest successful refresh kept the refresh
	// token (refresh.succeeded with rotated false: the provider does not
	// rotate), so presenting it again cannot be a reuse.
	RefreshTokenKept bool
	// RecoveringFromRejection is set when the latest successful refresh was
	// made because an API call was rejected: if its token is rejected too, the
	// connection is unauthenticated (access_token_rejected).
	RecoveringFromRejection bool
	// (The flags are kept together: scattered, each took 8 bytes with its
	// padding; a projection entry holding a Connection is a 512-byte size
	// class with room for a compact config beside it.)

	// Tokens describes the stored tokens (fingerprints and expiry).
	Tokens TokenInfo

	// Open authorisation attempt (StateReauthorising).
	AttemptID        string
	AttemptExpiresAt time.Time

	// Refresh bookkeeping.
	LeaseUntil time.Time // StateRefreshing: the lease deadline
	// LeaseID names the lease: the id of the refresh.started event that
	// took it (extensions keep it). A refresher tells its own lease from
	// a later one by it.
	LeaseID           string
	RefreshTrigger    string    // trigger of the refresh in flight
	TransientFailures int       // consecutive transient refresh failures: the provider's, counted toward the retry bound
	ProviderWaits     int       // consecutive provider_unavailable failures (not reached or discovered yet): lengthen the backoff only
	RetryAt           time.Time // earliest next refresh after a transient failure
	LastRefreshAt     time.Time
	LastErrorCode     string

	// Head is the connection's hash-chain head: the last event that
	// extended the chain (its stream sequence and hash; Chained once a
	// chained event was applied). ChainBreaks counts the events refused
	// because they do not extend it (ErrChainBroken): forged, altered or
	// reordered. Apply never counts: the readers that refuse events do.
	Head        ChainHead
	ChainBreaks int
}

// ChainHead is the head of a connection's hash chain.
type ChainHead struct {
	Seq     uint64
	Hash    [32]byte
	Chained bool
}

// ErrChainBroken refuses an event whose prev hash is not the connection's
// chain head, or an unchained event after the chain began.
var ErrChainBroken = errors.New("event does not extend the connection's hash chain")

// extends reports whether e extends the chain: its prev hash is the head
// (chained), or neither it nor the connection is chained yet.
func (c *Connection) extends(e Event) error {
	if e.Link.Chained && e.Link.Prev != c.Head.Hash || !e.Link.Chained && c.Head.Chained {
		return fmt.Errorf("%w (%s at seq %d)", ErrChainBroken, e.Type(), e.Seq)
	}
	return nil
}

// Exists reports whether the connection was created. Events counts a
// connection.created applied before it was stored (Seq 0) or without a time.
func (c *Connection) Exists() bool { return c.Events > 0 || c.Version > 0 || !c.Created.IsZero() }

// Apply folds one event into the aggregate. It is pure: no I/O, no callbacks,
// no clock. It returns an error, and leaves c unchanged, if the event does
// not extend the connection's hash chain (ErrChainBroken: its prev hash is
// not Head) or is not allowed by the transition table in the current state.
// The chain is thus over the events Apply accepted; an accepted event
// becomes the head.
func (c *Connection) Apply(e Event) error {
	if err := c.extends(e); err != nil {
		return err
	}
	if _, ok := e.Payload.(ConnectionCreated); !ok {
		if !c.Exists() {
			return fmt.Errorf("%w: %s before connection.created", ErrNotFound, e.Type())
		}
		// A deleted connection accepts one more kind of event: the record
		// that its stored tokens were destroyed.
		if _, inv := e.Payload.(TokensInvalidated); c.Deleted && !(inv && c.TokensHeld) {
			return ErrDeleted
		}
	}
	next := c.State
	if trans := TransitionName(e.Payload); e.Type() != EventConnectionCreated {
		var err error
		if next, err = Next(c.State, trans); err != nil {
			return err
		}
	} else if c.Exists() {
		return ErrExists
	}
	prev := *c // restored if the payload turns out to be unknown
	if next != c.State {
		c.Since = e.Time
	}
	c.State = next
	switch d := e.Payload.(type) {
	case ConnectionCreated:
		c.ID = e.ConnectionID
		c.Provider = d.Provider
		c.Scopes = slices.Clone(d.Scopes)
		c.Config = maps.Clone(d.Config)
		c.State, c.Reason, c.Since, c.Created = StateUnauthenticated, ReasonNeverAuthorised, e.Time, e.Time
	case AuthorisationStarted:
		c.AttemptID, c.AttemptExpiresAt = d.AttemptID, d.ExpiresAt
	case AuthorisationCompleted:
		c.Reason = ReasonNone
		c.AttemptID, c.AttemptExpiresAt = "", time.Time{}
		c.Tokens, c.TokensHeld = d.Tokens, true
		c.TransientFailures, c.ProviderWaits, c.RetryAt = 0, 0, time.Time{} // the last refresh (and its error) stays history
		c.RecoveringFromRejection = false
	case AuthorisationFailed:
		c.Reason = d.Reason
		c.AttemptID, c.AttemptExpiresAt = "", time.Time{}
	case RefreshStarted:
		c.LeaseUntil, c.RefreshTrigger, c.LeaseID = d.LeaseUntil, d.Trigger, e.ID
	case RefreshLeaseExtended:
		c.LeaseUntil = d.LeaseUntil
	case RefreshSucceeded:
		c.LeaseUntil, c.LeaseID = time.Time{}, ""
		c.RecoveringFromRejection = c.RefreshTrigger == TriggerAccessRejected
		c.RefreshTrigger = ""
		tok := d.Tokens
		tok.RefreshTokenFP = cmp.Or(tok.RefreshTokenFP, c.Tokens.RefreshTokenFP)
		if len(tok.Scopes) == 0 {
			tok.Scopes = c.Tokens.Scopes
		}
		c.Tokens, c.TokensHeld = tok, true
		c.TransientFailures, c.ProviderWaits, c.RetryAt = 0, 0, time.Time{}
		c.LastRefreshAt, c.LastRefreshOK, c.LastErrorCode = e.Time, true, ""
		c.RefreshTokenKept = !d.Rotated
	case RefreshFailed:
		c.LeaseUntil, c.RefreshTrigger, c.LeaseID = time.Time{}, "", ""
		c.LastRefreshAt, c.LastRefreshOK, c.LastErrorCode = e.Time, false, d.ErrorCode
		switch {
		case d.Terminal:
			c.Reason = d.Reason
			c.TransientFailures, c.ProviderWaits, c.RetryAt = 0, 0, time.Time{}
		case d.ErrorCode == CodeProviderUnavailable:
			c.ProviderWaits++
			c.RetryAt = d.RetryAt
		default:
			c.TransientFailures++
			c.RetryAt = d.RetryAt
		}
	case AccessRejected:
		if d.Terminal {
			c.Reason = d.Reason
			c.RecoveringFromRejection = false
		}
	case TokensInvalidated:
		c.TokensHeld = false
		c.Tokens = TokenInfo{}
		if prev.State == StateActive || prev.State == StateRefreshing {
			// Destroyed ahead of connection.deleted: no longer usable.
			c.Reason = cmp.Or(d.Reason, ReasonConnectionDeleted)
			c.LeaseUntil, c.LeaseID, c.RefreshTrigger = time.Time{}, "", ""
			c.TransientFailures, c.RetryAt = 0, time.Time{}
		}
	case ConnectionUpdated:
		if d.Scopes != nil {
			c.Scopes = slices.Clone(d.Scopes)
		}
		if d.Config != nil {
			c.Config = maps.Clone(d.Config)
		}
	case ConnectionDeleted:
		c.Deleted = true
		c.Reason = ReasonConnectionDeleted
		c.AttemptID, c.AttemptExpiresAt, c.LeaseUntil, c.LeaseID = "", time.Time{}, time.Time{}, ""
	default:
		*c = prev
		return fmt.Errorf("tokenline: unknown payload %T", e.Payload)
	}
	if e.Seq > 0 {
		c.Version = e.Seq
	}
	c.Events++
	c.Head = ChainHead{Seq: e.Seq, Hash: e.Link.Hash, Chained: c.Head.Chained || e.Link.Chained}
	return nil
}

// Replay rebuilds a connection from its history.
func Replay(history []Event) (Connection, error) {
	var c Connection
	for _, e := range history {
		if err := c.Apply(e); err != nil {
			return c, fmt.Errorf("tokenline: replay event %s (seq %d): %w", e.ID, e.Seq, err)
		}
	}
	return c, nil
}

// Clone returns a deep copy (slices and maps are not shared).
func (c Connection) Clone() Connection {
	c.Scopes = slices.Clone(c.Scopes)
	c.Config = maps.Clone(c.Config)
	c.Tokens.Scopes = slices.Clone(c.Tokens.Scopes)
	return c
}

// NeedsReauthorisation reports whether only the user can restore access.
func (c *Connection) NeedsReauthorisation() bool {
	return !c.Deleted && (c.State == StateUnauthenticated || c.State == StateReauthorising)
}
