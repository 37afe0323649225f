package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// ProviderDirectory lists the configured providers with their health
// (cmd/tokenline wires it to its providers). It never returns a secret.
type ProviderDirectory interface {
	Providers(ctx context.Context) []apitypes.Provider
}

// ErrProviderUnavailable is wrapped by the errors of a use case that needs
// a provider whose endpoints are not known yet (discovery pending): the
// API answers 503 provider_unavailable with the error's message.
var ErrProviderUnavailable = errors.New("provider unavailable")

// handleProviders answers GET /v1/providers.
func (s *Server) handleProviders(w http.ResponseWriter, r *http.Request) {
	if s.cfg.ProviderDirectory == nil {
		writeError(w, http.StatusNotImplemented, "not_implemented", "this server does not list its providers")
		return
	}
	ps := s.cfg.ProviderDirectory.Providers(r.Context())
	if ps == nil {
		ps = []apitypes.Provider{}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, apitypes.ProvidersResponse{Providers: ps})
}
