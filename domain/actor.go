package domain

// Actor says who must act to make an unusable connection usable again.
type Actor string

// The actors. The set is closed.
const (
	// ActorNone: nobody (the connection is usable, or deleted).
	ActorNone Actor = ""
	// ActorUser: the person who connected must reconnect (authorise again).
	ActorUser Actor = "user"
	// ActorOperator: the operator of tokenline must fix the client
	// registration or install the client's new secret
	// (PUT /v1/providers/{name}/client-secret); reconnecting does not help
	// until then.
	ActorOperator Actor = "operator"
)

// ActionBy maps a reason to who must act on it. The token endpoint's
// invalid_client, unauthorized_client and unsupported_grant_type are about
// tokenline's client (its secret, its registration, the grants it may
// use), not about the user's grant: the operator must act. Every other
// reason of an unauthenticated connection is the user's to fix by
// reconnecting; ReasonNone and ReasonConnectionDeleted need nobody.
func ActionBy(r Reason) Actor {
	switch r {
	case ReasonNone, ReasonConnectionDeleted:
		return ActorNone
	case ReasonInvalidClient, ReasonUnauthorizedClient, ReasonUnsupportedGrantType:
		return ActorOperator
	}
	return ActorUser
}

// OperatorText says, for a reason the operator must act on, what to do.
// It is empty for other reasons.
func OperatorText(r Reason) string {
	switch r {
	case ReasonInvalidClient:
		return "The provider no longer accepts tokenline's client credentials. Install the client's new secret with PUT /v1/providers/{name}/client-secret (or check the client id), then ask the user to reconnect."
	case ReasonUnauthorizedClient:
		return "The provider does not allow tokenline's client to use this grant. Check the client registration at the provider (allowed grant types, redirect URI), then ask the user to reconnect."
	case ReasonUnsupportedGrantType:
		return "The provider does not support the grant type tokenline's client uses. Check the client registration and the provider's configuration, then ask the user to reconnect."
	}
	return ""
}

// RetryLater reports whether the refusal is cured by waiting: the
// connection is healthy, and a refresh is due or in flight, or this
// instance has not loaded the current token yet. Callers wait for it
// (GET /v1/connections/{id}/token?wait=, the RoundTripper) or retry later
// (HTTP 503 refresh_in_progress); nobody needs to act.
func (e *GateError) RetryLater() bool {
	switch e.Detail {
	case DetailRefreshing, DetailTokenExpired, DetailTokenNotLoaded:
		return true
	}
	return false
}

// ActionBy says who must act on a refusal that waiting does not cure: the
// user (reconnect) or the operator (client secret or registration), by
// ActionBy of the reason; a connection waiting for its authorisation to be
// completed needs the user. ActorNone for a refusal that time cures or an
// unknown connection.
func (e *GateError) ActionBy() Actor {
	switch e.Detail {
	case DetailUnauthenticated:
		if a := ActionBy(e.Reason); a != ActorNone {
			return a
		}
		return ActorUser
	case DetailReauthorising:
		return ActorUser
	}
	return ActorNone
}
