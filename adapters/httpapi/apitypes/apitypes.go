// Package apitypes is the wire shape of tokenline's /v1 HTTP API: the routes,
// the request and answer bodies, and ConnectionStatus, the one view of a
// connection the API serves. Both sides import it: the server
// (adapters/httpapi) encodes these types and the typed client
// (adapters/httpapi/client) decodes them, so they cannot drift apart.
// docs/openapi.yaml describes the same shapes; the httpapi tests check that
// the two agree.
//
// The package depends only on domain and the standard library.
package apitypes

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// The routes of the /v1 API, as http.ServeMux patterns (without the
// method). Path fills in their single wildcard.
const (
	RouteConnections  = "/v1/connections"
	RouteConnection   = "/v1/connections/{id}"
	RouteAuthorize    = "/v1/connections/{id}/authorize"
	RouteToken        = "/v1/connections/{id}/token"
	RouteRejections   = "/v1/connections/{id}/rejections"
	RouteEvents       = "/v1/connections/{id}/events"
	RouteState        = "/v1/connections/{id}/state"
	RouteTimeline     = "/v1/events/timeline"
	RouteClientSecret = "/v1/providers/{name}/client-secret"
	RouteLoginLinks   = "/v1/ui/login-links"
	RouteSigningKey   = "/v1/signing-key"
)

// Path returns route with its wildcard ({id} or {name}) replaced by value,
// path-escaped: a mistyped id reaches the server (which says what is wrong
// with it) and never another route.
func Path(route, value string) string {
	i := strings.IndexByte(route, '{')
	j := strings.IndexByte(route, '}')
	if i < 0 || j < i {
		return route
	}
	return route[:i] + url.PathEscape(value) + route[j+1:]
}

// ReauthorisePath is the API route that starts a connection's
// (re)authorisation (POST), relative to the server's base URL.
func ReauthorisePath(connectionID string) string {
	return Path(RouteAuthorize, connectionID)
}

// ConnectionStatus is the one view of a connection: the HTTP API serves it
// (GET /v1/connections/{id}, the list, POST, PATCH, rejections and the state
// at an instant), so the web UI and the CLI read exactly this shape. It
// never holds a token: the access token is described by its fingerprint,
// expiry and scopes only.
type ConnectionStatus struct {
	ID       string        `json:"id"`
	Provider string        `json:"provider"`
	State    domain.State  `json:"state"`
	Reason   domain.Reason `json:"reason"` // "" when there is none
	// ReasonText explains Reason in plain words for the person who must
	// reconnect (domain.Reasons); empty without a reason.
	ReasonText string `json:"reason_text"`
	// ActionBy says who must act to make an unauthenticated connection
	// usable again (domain.ActionBy): "user" (reconnect) or "operator"
	// (invalid_client, unauthorized_client, unsupported_grant_type: install
	// the client's new secret or fix its registration; reconnecting does
	// not help until then), with OperatorText saying what to do. Absent
	// when nobody needs to act.
	ActionBy     domain.Actor `json:"action_by,omitempty"`
	OperatorText string       `json:"operator_text,omitempty"`
	// Since is when the connection entered its state.
	Since     time.Time `json:"since"`
	CreatedAt time.Time `json:"created_at"`
	// Scopes are the configured scopes, requested by the next
	// authorisation; GrantedScopes those of the current grant.
	Scopes        []string          `json:"scopes"`
	GrantedScopes []string          `json:"granted_scopes,omitempty"`
	Config        map[string]string `json:"config"`

	// HasTokens is true while tokens are held for the connection; the
	// access token is then described by its fingerprint and expiry.
	HasTokens            bool      `json:"has_tokens"`
	AccessTokenFP        string    `json:"access_token_fp,omitempty"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`

	// LastRefresh is the outcome of the latest refresh attempt, if any.
	LastRefresh *RefreshInfo `json:"last_refresh,omitempty"`
	// TransientFailures counts consecutive transient refresh failures since
	// the last success; RetryAt is the earliest next attempt after one.
	TransientFailures int       `json:"transient_failures"`
	RetryAt           time.Time `json:"retry_at,omitzero"`
	// LeaseUntil is the refresh lease deadline (refreshing);
	// AuthorisationExpiresAt the deadline of the open attempt (reauthorising).
	LeaseUntil             time.Time `json:"lease_until,omitzero"`
	AuthorisationExpiresAt time.Time `json:"authorisation_expires_at,omitzero"`

	// NeedsReauthorisation is true when only the user can restore access;
	// ReauthoriseURL is then the API route that starts it (POST). StatusOf
	// gives it relative to the server's base URL (ReauthorisePath); the HTTP
	// API makes it absolute when it knows its public base URL.
	NeedsReauthorisation bool   `json:"needs_reauthorisation"`
	ReauthoriseURL       string `json:"reauthorise_url,omitempty"`
	Deleted              bool   `json:"deleted"`
	// Version is the stream sequence of the connection's last event (the
	// expected sequence of its next append); Events counts applied events.
	Version uint64 `json:"version"`
	Events  int    `json:"events"`
	// ChainBroken flags a connection one of whose stored events does not
	// extend its hash chain (forged, altered or out of order): such events
	// were refused, so nothing acted on them; ChainBreaks counts them.
	// Run `tokenline verify --connection <id>` to see which.
	ChainBroken bool `json:"chain_broken"`
	ChainBreaks int  `json:"chain_breaks"`
}

// SigningKey is the public key that verifies the signed checkpoints of the
// event stream's hash chains (docs/operations.md, "Tamper evidence").
type SigningKey struct {
	// Key is "ed25519:" and the standard base64 of the 32-byte key.
	Key       string `json:"key"`
	Algorithm string `json:"algorithm"` // "Ed25519"
	// CheckpointStream and CheckpointSubject are where the checkpoints are.
	CheckpointStream  string `json:"checkpoint_stream"`
	CheckpointSubject string `json:"checkpoint_subject"`
}

// RefreshInfo describes the latest refresh attempt.
type RefreshInfo struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	ErrorCode string    `json:"error_code,omitempty"`
}

// StatusOf describes a connection aggregate. Times are in UTC.
func StatusOf(c *domain.Connection) ConnectionStatus {
	s := ConnectionStatus{
		ID: c.ID, Provider: c.Provider, State: c.State, Reason: c.Reason,
		Since: c.Since.UTC(), CreatedAt: c.Created.UTC(),
		Scopes: slices.Clone(c.Scopes), Config: maps.Clone(c.Config),
		HasTokens:         c.TokensHeld,
		TransientFailures: c.TransientFailures, RetryAt: c.RetryAt.UTC(),
		LeaseUntil: c.LeaseUntil.UTC(), AuthorisationExpiresAt: c.AttemptExpiresAt.UTC(),
		NeedsReauthorisation: c.NeedsReauthorisation(), Deleted: c.Deleted,
		Version: c.Version, Events: c.Events,
		ChainBroken: c.ChainBreaks > 0, ChainBreaks: c.ChainBreaks,
	}
	if s.Scopes == nil {
		s.Scopes = []string{}
	}
	if s.Config == nil {
		s.Config = map[string]string{}
	}
	if info, ok := c.Reason.Info(); ok {
		s.ReasonText = info.UserText
	}
	if c.State == domain.StateUnauthenticated && !c.Deleted {
		s.ActionBy = domain.ActionBy(c.Reason)
		s.OperatorText = strings.ReplaceAll(domain.OperatorText(c.Reason), "{name}", c.Provider)
	}
	if c.TokensHeld {
		s.AccessTokenFP = c.Tokens.AccessTokenFP
		s.AccessTokenExpiresAt = c.Tokens.AccessTokenExpiresAt.UTC()
		s.GrantedScopes = slices.Clone(c.Tokens.Scopes)
	}
	if !c.LastRefreshAt.IsZero() {
		s.LastRefresh = &RefreshInfo{At: c.LastRefreshAt.UTC(), OK: c.LastRefreshOK, ErrorCode: c.LastErrorCode}
	}
	if s.NeedsReauthorisation {
		s.ReauthoriseURL = ReauthorisePath(c.ID)
	}
	return s
}
