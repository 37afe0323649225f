package apitypes

import "time"

// RouteProviders lists the configured providers (GET).
const RouteProviders = "/v1/providers"

// ProvidersResponse is the answer of GET /v1/providers.
type ProvidersResponse struct {
	Providers []Provider `json:"providers"`
}

// Provider is one configured provider as GET /v1/providers shows it: its
// configuration and health, never a secret.
type Provider struct {
	// Name is what connections name in "provider".
	Name string `json:"name"`
	// Kind is the preset ("pleo", "pleo-staging", "sandbox") or "custom".
	Kind string `json:"kind"`
	// Status is "configured" (explicit endpoints), "discovered" (endpoints
	// read from the issuer's metadata) or "unavailable" (discovery has not
	// succeeded yet and is retried in the background; refreshes of its
	// connections fail transiently meanwhile).
	Status string `json:"status"`
	// Issuer is the configured issuer (discovery), if any.
	Issuer string `json:"issuer,omitempty"`
	// Endpoints are the endpoints in use (empty while unavailable).
	Endpoints ProviderEndpoints `json:"endpoints"`
	// ClientID is the OAuth client id (not a secret).
	ClientID string `json:"client_id"`
	// ClientAuth is client_secret_basic, client_secret_post or none (a
	// public client).
	ClientAuth string `json:"client_auth"`
	// DefaultScopes are requested when a connection names none.
	DefaultScopes []string `json:"default_scopes"`
	// AuthorizeParams are the extra authorization request parameters.
	AuthorizeParams map[string]string `json:"authorize_params"`
	// Error says why the provider is unavailable, and Tried lists the
	// discovery URLs of the last attempt.
	Error string   `json:"error,omitempty"`
	Tried []string `json:"tried,omitempty"`
	// CheckedAt is when discovery last ran.
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// ProviderEndpoints are a provider's endpoints; the optional ones are
// omitted when the provider has none.
type ProviderEndpoints struct {
	Authorization string `json:"authorization,omitempty"`
	Token         string `json:"token,omitempty"`
	Revocation    string `json:"revocation,omitempty"`
	Introspection string `json:"introspection,omitempty"`
}
