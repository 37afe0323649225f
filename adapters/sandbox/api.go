package sandbox

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
)

// Metadata is the RFC 8414 authorization server metadata document served at
// GET /sandbox/.well-known/oauth-authorization-server.
type Metadata struct {
	// Issuer is the base URL plus "/sandbox".
	Issuer string `json:"issuer"`
	// AuthorizationEndpoint is Issuer + "/oauth/authorize".
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	// TokenEndpoint is Issuer + "/oauth/token".
	TokenEndpoint string `json:"token_endpoint"`
	// RevocationEndpoint is Issuer + "/oauth/revoke" (RFC 7009).
	RevocationEndpoint string `json:"revocation_endpoint"`
	// IntrospectionEndpoint is Issuer + "/oauth/token/introspect" (RFC 7662).
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	// ScopesSupported are the registered scopes (Config.Scopes).
	ScopesSupported []string `json:"scopes_supported"`
	// ResponseTypesSupported is always ["code"].
	ResponseTypesSupported []string `json:"response_types_supported"`
	// ResponseModesSupported is always ["query"].
	ResponseModesSupported []string `json:"response_modes_supported"`
	// GrantTypesSupported is ["authorization_code", "refresh_token"].
	GrantTypesSupported []string `json:"grant_types_supported"`
	// CodeChallengeMethodsSupported is ["S256"]; PKCE is mandatory.
	CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported"`
	// TokenEndpointAuthMethodsSupported is
	// ["client_secret_basic", "client_secret_post"].
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// RevocationEndpointAuthMethodsSupported is the same as for the token
	// endpoint.
	RevocationEndpointAuthMethodsSupported []string `json:"revocation_endpoint_auth_methods_supported"`
	// IntrospectionEndpointAuthMethodsSupported is ["client_secret_basic"]
	// (fosite reads introspection credentials from the header only).
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
}

func (s *Server) metadata(r *http.Request) Metadata {
	iss := s.issuerFor(r)
	auth := []string{"client_secret_basic", "client_secret_post"}
	if s.public {
		auth = []string{"none"}
	}
	return Metadata{
		Issuer:                                    cmp.Or(s.metadataIssuer, iss),
		AuthorizationEndpoint:                     iss + "/oauth/authorize",
		TokenEndpoint:                             iss + "/oauth/token",
		RevocationEndpoint:                        iss + "/oauth/revoke",
		IntrospectionEndpoint:                     iss + "/oauth/token/introspect",
		ScopesSupported:                           requestableScopes(s.scopes), // with offline_access (mode_refresh.go)
		ResponseTypesSupported:                    []string{"code"},
		ResponseModesSupported:                    []string{"query"},
		GrantTypesSupported:                       []string{"authorization_code", "refresh_token"},
		CodeChallengeMethodsSupported:             []string{"S256"},
		TokenEndpointAuthMethodsSupported:         auth,
		RevocationEndpointAuthMethodsSupported:    auth,
		IntrospectionEndpointAuthMethodsSupported: []string{"client_secret_basic"},
	}
}

func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSON(w, http.StatusOK, s.metadata(r))
}

// meResponse is the body of a successful GET /sandbox/api/me.
type meResponse struct {
	ClientID  string    `json:"client_id"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleMe serves GET /sandbox/api/me, the stand-in for Pleo's API. It
// accepts only an access token, only in the Authorization header (RFC 6750
// section 2.1).
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	required := r.URL.Query().Get("require_scope")
	if required != "" && !scopePattern.MatchString(required) {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "require_scope must be a single resource:permission scope.")
		return
	}

	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		// RFC 6750 section 3.1: no error code when no credentials came.
		w.Header().Set("WWW-Authenticate", `Bearer realm="sandbox"`)
		writeJSONError(w, http.StatusUnauthorized, "invalid_request", "A Bearer access token is required.")
		return
	}
	token = strings.TrimSpace(token)

	// fosite's validator falls back to the refresh-token store when no
	// access token matches, so the token use must be checked here or a
	// refresh token would be accepted as a bearer token.
	use, ar, err := s.provider.IntrospectToken(r.Context(), token, fosite.AccessToken, newSession())
	if err != nil || use != fosite.AccessToken {
		s.writeDeadToken(w) // mode_api.go
		return
	}
	granted := ar.GetGrantedScopes()
	if required != "" && !slices.Contains(granted, required) {
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+required+`"`)
		writeJSONError(w, http.StatusForbidden, "insufficient_scope", "The access token lacks scope "+required+".")
		return
	}
	writeJSON(w, http.StatusOK, meResponse{
		ClientID:  ar.GetClient().GetID(),
		Scopes:    slices.Clone([]string(granted)),
		ExpiresAt: ar.GetSession().GetExpiresAt(fosite.AccessToken).UTC(),
	})
}
