package projections

import (
	"fmt"

	"github.com/tokenline/tokenline/domain"
)

// What one event does to the fields the gate and the timeline care about,
// read from the payload alone. Every transition in domain.Transitions either
// has one destination whatever the source state (connection.deleted: any →
// unauthenticated) or is a self-loop (connection.updated, tokens.invalidated,
// non-terminal access.rejected). destinations is derived from the table at
// start-up, so the gate never encodes a transition of its own; a table that
// broke this property would panic here (and fail every test).
var destinations = func() map[string]domain.State {
	dsts := map[string]map[domain.State]bool{}
	allSelf := map[string]bool{}
	for _, d := range domain.Transitions {
		if dsts[d.Name] == nil {
			dsts[d.Name], allSelf[d.Name] = map[domain.State]bool{}, true
		}
		for _, src := range d.Src {
			dsts[d.Name][domain.State(d.Dst)] = true
			if src != d.Dst {
				allSelf[d.Name] = false
			}
		}
	}
	out := map[string]domain.State{}
	for name, set := range dsts {
		switch {
		case allSelf[name]:
			// keeps the state: not in the map
		case len(set) == 1:
			for st := range set {
				out[name] = st
			}
		default:
			panic(fmt.Sprintf("projections: transition %s has several destinations", name))
		}
	}
	return out
}()

// destinationOf returns the state an event leads to, and false when the event
// keeps the state (a self-loop).
func destinationOf(p domain.Payload) (domain.State, bool) {
	if _, ok := p.(domain.ConnectionCreated); ok {
		return domain.StateUnauthenticated, true
	}
	st, ok := destinations[domain.TransitionName(p)]
	return st, ok
}

// reasonOf returns the reason an event sets, and false when it leaves the
// reason as it was. It mirrors the assignments of domain.Connection.Apply
// (checked by TestFoldMatchesDomain).
func reasonOf(p domain.Payload) (domain.Reason, bool) {
	switch d := p.(type) {
	case domain.ConnectionCreated:
		return domain.ReasonNeverAuthorised, true
	case domain.AuthorisationCompleted:
		return domain.ReasonNone, true
	case domain.AuthorisationFailed:
		return d.Reason, true
	case domain.RefreshFailed:
		if d.Terminal {
			return d.Reason, true
		}
	case domain.AccessRejected:
		if d.Terminal {
			return d.Reason, true
		}
	case domain.ConnectionDeleted:
		return domain.ReasonConnectionDeleted, true
	}
	return domain.ReasonNone, false
}

// failureOf returns the provider's error code and HTTP status an event
// records (failures and rejections), or zero values.
func failureOf(p domain.Payload) (errorCode string, httpStatus int) {
	switch d := p.(type) {
	case domain.AuthorisationFailed:
		return d.ErrorCode, 0
	case domain.RefreshFailed:
		return d.ErrorCode, d.HTTPStatus
	case domain.AccessRejected:
		return d.ErrorCode, d.HTTPStatus
	}
	return "", 0
}

// tokensOf returns the access-token description an event sets: the new
// tokens of authorisation.completed and refresh.succeeded, nothing after
// tokens.invalidated. ok is false when the event leaves the tokens alone.
func tokensOf(p domain.Payload) (fp string, expires int64, ok bool) {
	switch d := p.(type) {
	case domain.AuthorisationCompleted:
		return d.Tokens.AccessTokenFP, unixNanos(d.Tokens), true
	case domain.RefreshSucceeded:
		return d.Tokens.AccessTokenFP, unixNanos(d.Tokens), true
	case domain.TokensInvalidated, domain.ConnectionDeleted:
		return "", 0, true
	}
	return "", 0, false
}

// noExpiry marks an access token without a known expiry.
const noExpiry = int64(1<<63 - 1)

func unixNanos(t domain.TokenInfo) int64 {
	if t.AccessTokenExpiresAt.IsZero() {
		return noExpiry
	}
	return t.AccessTokenExpiresAt.UnixNano()
}

// liteConn is the part of a connection the timeline follows: state and
// reason, folded in stream order with the transition table.
type liteConn struct {
	State   domain.State
	Reason  domain.Reason
	Deleted bool
}

// apply folds e into c in stream order. It refuses what domain.Connection.Apply
// refuses as to existence and transitions, and returns the state before.
func (c *liteConn) apply(e domain.Event) (from domain.State, err error) {
	from = c.State
	if _, ok := e.Payload.(domain.ConnectionCreated); ok {
		if c.State != "" {
			return from, domain.ErrExists
		}
	} else {
		if c.State == "" {
			return from, domain.ErrNotFound
		}
		// As domain.Connection.Apply: a deleted connection accepts one more
		// event, the record that its tokens were destroyed.
		if _, inv := e.Payload.(domain.TokensInvalidated); c.Deleted && !inv {
			return from, domain.ErrDeleted
		}
		if _, err := domain.Next(c.State, domain.TransitionName(e.Payload)); err != nil {
			return from, err
		}
	}
	if st, ok := destinationOf(e.Payload); ok {
		c.State = st
	}
	if r, ok := reasonOf(e.Payload); ok {
		c.Reason = r
	}
	if _, ok := e.Payload.(domain.ConnectionDeleted); ok {
		c.Deleted = true
	}
	return from, nil
}
