package apitypes

import (
	"time"

	"github.com/tokenline/tokenline/domain"
)

// CreateRequest is the body of POST /v1/connections.
type CreateRequest struct {
	Provider string            `json:"provider"`
	Scopes   []string          `json:"scopes"`
	Config   map[string]string `json:"config"`
}

// UpdateRequest is the body of PATCH /v1/connections/{id}. A field that is
// present replaces the stored value (an empty list or object clears it); an
// absent or null one is left as is. State and tokens are never touched.
type UpdateRequest struct {
	Scopes []string          `json:"scopes"`
	Config map[string]string `json:"config"`
}

// RejectionRequest is the body of POST /v1/connections/{id}/rejections:
// an API call made with the connection's token was rejected (or answered
// with an error body). The provider's detection rules judge it.
type RejectionRequest struct {
	// Status is the HTTP status of the rejected call: 401 or 403, or any
	// status the provider's detection rules name (e.g. 200 or 400 with an
	// error body).
	Status int `json:"status"`
	// WWWAuthenticate is the response's WWW-Authenticate header.
	WWWAuthenticate string `json:"www_authenticate"`
	// AccessTokenFP is the fingerprint of the token the call used
	// (optional; default: the current token).
	AccessTokenFP string `json:"access_token_fp"`
	// Body is the rejected answer's body as text (optional), for the
	// provider's body rules; BodyBase64 is the same in base64 (RFC 4648,
	// standard alphabet) for a body that is not UTF-8. At most one of them,
	// at most 16 KiB (domain.MaxRejectionBody) once decoded.
	Body       string `json:"body,omitempty"`
	BodyBase64 string `json:"body_base64,omitempty"`
}

// TokenResponse is the answer of GET /v1/connections/{id}/token.
type TokenResponse struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	// AccessTokenFP identifies the token; send it back as access_token_fp
	// when reporting a rejection, so that tokenline knows which token the
	// provider refused.
	AccessTokenFP string `json:"access_token_fp"`
}

// LoginLinkResponse is the answer of POST /v1/ui/login-links: a one-time
// link that signs a browser into the web UI. It is a secret until used or
// expired: print it to the operator, never log it.
type LoginLinkResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AuthorizeResponse is the answer of POST /v1/connections/{id}/authorize.
type AuthorizeResponse struct {
	AuthorizeURL string `json:"authorize_url"`
}

// ListResponse is the answer of GET /v1/connections.
type ListResponse struct {
	Connections []ConnectionStatus `json:"connections"`
}

// ClientSecretRequest is the body of PUT /v1/providers/{name}/client-secret.
type ClientSecretRequest struct {
	ClientSecret string `json:"client_secret"`
}

// ErrorBody is every error answer of the API.
type ErrorBody struct {
	// Error is a stable machine word ("not_found", "invalid_json", ...).
	Error string `json:"error"`
	// Message says what went wrong in plain words.
	Message string `json:"message"`
}

// GateErrorBody is the answer to a token request while the gate is closed:
// 503 refresh_in_progress (retry after RetryAfter seconds, nobody needs to
// act) or 409 when a person must act: reauthorisation_required (the user
// must reconnect) or operator_action_required (the operator must fix the
// client secret or registration).
type GateErrorBody struct {
	Error   string `json:"error"` // GateErrorRefreshInProgress, GateErrorReauthorisation or GateErrorOperatorAction
	Message string `json:"message"`
	// ActionBy is who must act ("user" or "operator"); empty on a 503.
	ActionBy domain.Actor `json:"action_by,omitempty"`
	// RetryAfter (503 only) is the Retry-After header's seconds.
	RetryAfter int `json:"retry_after,omitempty"`
	// State and Reason are the connection's; Detail is the gate's word
	// ("unauthenticated", "token_expired", "refreshing", ...).
	State          domain.State  `json:"state"`
	Reason         domain.Reason `json:"reason"`
	ReasonText     string        `json:"reason_text,omitempty"`
	Detail         string        `json:"detail"`
	ReauthoriseURL string        `json:"reauthorise_url,omitempty"`
}

// The error words of GateErrorBody.
const (
	GateErrorRefreshInProgress = "refresh_in_progress"
	GateErrorReauthorisation   = "reauthorisation_required"
	GateErrorOperatorAction    = "operator_action_required"
)

// HealthResponse is the answer of /healthz and /readyz.
type HealthResponse struct {
	// Status is "ok" (healthz), "ready" or "not_ready" (readyz).
	Status string `json:"status"`
	// Reasons say why the instance is not ready ("nats: not connected").
	Reasons []string `json:"reasons,omitempty"`
	// Degraded lists what does not work although the instance is ready
	// ("provider acme: ..." while its discovery is pending).
	Degraded []string `json:"degraded,omitempty"`
}
