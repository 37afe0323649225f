package domain

import (
	"fmt"
	"strings"
)

// State is one of the four states of a connection.
type State string

// The four states. There are no others.
const (
	// StateActive: the connection holds a usable grant; API calls may use its
	// access token while the token has not expired.
	StateActive State = "active"
	// StateRefreshing: one instance holds the refresh lease and is exchanging
	// the refresh token. The state carries a lease deadline after which another
	// instance may recover it.
	StateRefreshing State = "refreshing"
	// StateUnauthenticated: there is no usable grant. Every entry into this
	// state carries a Reason. The user must (re)authorise.
	StateUnauthenticated State = "unauthenticated"
	// StateReauthorising: an authorisation attempt (PKCE, state) is open and
	// waits for the user to come back through the callback.
	StateReauthorising State = "reauthorising"
)

// States lists the four states in a stable order.
var States = []State{StateActive, StateRefreshing, StateUnauthenticated, StateReauthorising}

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case StateActive, StateRefreshing, StateUnauthenticated, StateReauthorising:
		return true
	}
	return false
}

// Reason says why a connection is unauthenticated. The set is closed: every
// value is listed in Reasons with a description, and nothing else is accepted.
type Reason string

// The closed set of reasons for entering StateUnauthenticated.
const (
	ReasonNone                    Reason = ""
	ReasonNeverAuthorised         Reason = "never_authorised"
	ReasonInvalidGrant            Reason = "invalid_grant"
	ReasonInvalidClient           Reason = "invalid_client"
	ReasonUnauthorizedClient      Reason = "unauthorized_client"
	ReasonUnsupportedGrantType    Reason = "unsupported_grant_type"
	ReasonInvalidScope            Reason = "invalid_scope"
	ReasonTokenEndpointRejected   Reason = "token_endpoint_rejected"
	ReasonAccessTokenRejected     Reason = "access_token_rejected"
	ReasonAuthorisationDenied     Reason = "authorisation_denied"
	ReasonAuthorisationExpired    Reason = "authorisation_expired"
	ReasonRefreshRetriesExhausted Reason = "refresh_retries_exhausted"
	ReasonRotatedTokensLost       Reason = "rotated_tokens_lost"
	ReasonRefreshNotGranted       Reason = "refresh_not_granted"
	ReasonConnectionDeleted       Reason = "connection_deleted"
)

// ReasonInfo documents one reason.
type ReasonInfo struct {
	Reason Reason
	// Meaning is a sentence for operators and the audit log.
	Meaning string
	// UserText is the plain-words explanation shown to the person who must
	// reconnect.
	UserText string
}

// Reasons is the closed, documented set of reasons, in a stable order.
var Reasons = []ReasonInfo{
	{ReasonNeverAuthorised, "The connection was created and has not been authorised yet.", "This connection has not been connected yet"},
	{ReasonInvalidGrant, "The token endpoint answered invalid_grant: the refresh token expired, was revoked, or was replaced.", "Access has expired or was revoked"},
	{ReasonInvalidClient, "The token endpoint answered invalid_client: the client credentials are no longer accepted (for example the client secret was rotated).", "The integration's credentials were changed"},
	{ReasonUnauthorizedClient, "The token endpoint answered unauthorized_client: this client may no longer use the grant.", "The integration is no longer allowed to use this access"},
	{ReasonUnsupportedGrantType, "The token endpoint answered unsupported_grant_type.", "The provider no longer accepts this kind of access"},
	{ReasonInvalidScope, "The token endpoint answered invalid_scope: the granted scopes are no longer allowed.", "The permissions granted are no longer valid"},
	{ReasonTokenEndpointRejected, "The token endpoint refused the refresh with another 4xx, an unknown error code, or an error body served with 200.", "The provider refused to renew access"},
	{ReasonAccessTokenRejected, "An API call was rejected with 401 invalid_token and a refresh could not restore access (or the grant has no refresh token to try).", "The provider rejected this connection's access"},
	{ReasonAuthorisationDenied, "The user (or the provider) refused the authorisation request.", "Authorisation was declined"},
	{ReasonAuthorisationExpired, "An authorisation attempt was abandoned and expired.", "The connection attempt expired before it was completed"},
	{ReasonRefreshRetriesExhausted, "Transient refresh failures (network, 5xx, 429) exceeded the retry bound.", "The provider could not be reached to renew access"},
	{ReasonRotatedTokensLost, "A refresher that had sent the refresh request (so the provider may have replaced the refresh token) died before it stored the new tokens; the old refresh token is never presented again.", "Access was renewed but could not be saved"},
	{ReasonRefreshNotGranted, "The access token expired and the provider had issued no refresh token to renew it (some grant one only for a scope such as offline_access, some never); no refresh was attempted. The user must reconnect; the operator may need to add the scope the provider needs for offline access to the connection's scopes first.", "Access ended because the provider did not grant offline access; reconnect (the integration may need to request the scope it needs, such as offline_access)"},
	{ReasonConnectionDeleted, "The connection was deleted; its history is kept.", "This connection was deleted"},
}

// Valid reports whether r is one of the documented reasons (ReasonNone is not).
func (r Reason) Valid() bool {
	_, ok := r.Info()
	return ok
}

// Info returns the documentation of r; ok is false for an unknown reason.
func (r Reason) Info() (ReasonInfo, bool) {
	for _, ri := range Reasons {
		if ri.Reason == r {
			return ri, true
		}
	}
	return ReasonInfo{}, false
}

// ReasonForErrorCode maps an RFC 6749 §5.2 error code returned by the token
// endpoint to the reason recorded when a refresh fails terminally. Unknown
// codes map to ReasonTokenEndpointRejected: Pleo documents no specific code, so
// anything the endpoint refuses is treated as terminal.
func ReasonForErrorCode(code string) Reason {
	switch code {
	case "invalid_grant":
		return ReasonInvalidGrant
	case "invalid_client":
		return ReasonInvalidClient
	case "unauthorized_client":
		return ReasonUnauthorizedClient
	case "unsupported_grant_type":
		return ReasonUnsupportedGrantType
	case "invalid_scope":
		return ReasonInvalidScope
	case "rotated_tokens_lost":
		return ReasonRotatedTokensLost
	}
	return ReasonTokenEndpointRejected
}

// ReasonsMarkdown renders Reasons as a Markdown table, in their stable order.
// docs/transitions.md is generated from it and a test checks the two agree.
func ReasonsMarkdown() string {
	cell := strings.NewReplacer("|", `\|`, "\n", " ").Replace
	var b strings.Builder
	b.WriteString("| reason | meaning | shown to the user |\n|---|---|---|\n")
	for _, ri := range Reasons {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", ri.Reason, cell(ri.Meaning), cell(ri.UserText))
	}
	return b.String()
}

// StateCode is a State in one byte, for read models that hold one per
// connection: 0 for none (or a state this build does not know), else 1 +
// the state's index in States.
type StateCode uint8

// CodeOf returns st's StateCode (0 for none or an unknown state).
func CodeOf(st State) StateCode {
	for i, s := range States {
		if s == st {
			return StateCode(i + 1)
		}
	}
	return 0
}

// State returns the state c stands for ("" for 0 or an unknown code).
func (c StateCode) State() State {
	if c == 0 || int(c) > len(States) {
		return ""
	}
	return States[c-1]
}
