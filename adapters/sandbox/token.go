package sandbox

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/ory/fosite"
)

// handleToken serves POST /sandbox/oauth/token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// Parsing here (fosite would do it too) gives the grant type for the
	// counters; a body that cannot be parsed has no grant_type, is counted
	// under "other" and refused with invalid_request below.
	_ = r.ParseForm()
	grantType := r.PostForm.Get("grant_type")
	s.stats.tokenRequest(grantType)

	if f, ok := s.takeFault(); ok {
		s.stats.failure(f.errorCode, true)
		s.log.Info("token request answered by injected fault",
			"grant_type", grantType, "status", f.status, "error", f.errorCode)
		writeFault(w, f)
		return
	}

	switch grantType {
	case "authorization_code", "refresh_token":
	case "":
		s.tokenFailed(w, r, grantType, nil,
			fosite.ErrInvalidRequest.WithHint("The grant_type parameter is missing from the form body."))
		return
	default:
		// fosite would answer invalid_request; RFC 6749 section 5.2 asks
		// for unsupported_grant_type.
		s.tokenFailed(w, r, grantType, nil,
			fosite.ErrUnsupportedGrantType.WithHint("Only authorization_code and refresh_token are supported."))
		return
	}

	s.tokenMu.Lock()
	mode := s.grantMode() // which refresh tokens, which lifetime (mode_refresh.go)
	ar, err := s.provider.NewAccessRequest(ctx, r, newSession())
	var resp fosite.AccessResponder
	if err == nil {
		// fosite rounds expiry times to the second, so a 1 s token may
		// live 0.5 s and report expires_in 0 (which clients read as "no
		// expiry"). Pin the expiry to exactly now + lifetime instead.
		now := s.now().UTC()
		ar.GetSession().SetExpiresAt(fosite.AccessToken, mode.accessExpiry(now, s.atLifetime))
		ar.GetSession().SetExpiresAt(fosite.RefreshToken, now.Add(s.rtLifetime))
		resp, err = s.provider.NewAccessResponse(ctx, ar)
		if err == nil {
			s.applyGrantMode(ctx, r, ar, resp, mode)
		}
	}
	s.tokenMu.Unlock()

	if err != nil {
		s.tokenFailed(w, r, grantType, ar, err)
		return
	}
	mode.setExpiresIn(resp, s.atLifetime)
	s.stats.success()
	s.log.Info("token request succeeded", "grant_type", grantType)
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// tokenFailed counts, logs and writes a token-endpoint error.
func (s *Server) tokenFailed(w http.ResponseWriter, r *http.Request, grantType string, ar fosite.AccessRequester, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	s.stats.failure(rfc.ErrorField, false)
	s.log.Info("token request failed", "grant_type", grantType, "status", rfc.CodeField,
		"error", rfc.ErrorField, "error_description", rfc.GetDescription())
	challengeBasic(w, r, err)
	s.provider.WriteAccessError(r.Context(), w, ar, err)
}

// challengeBasic names the scheme of an invalid_client 401 answered to a
// client that used the Authorization header (RFC 6749 section 5.2).
func challengeBasic(w http.ResponseWriter, r *http.Request, err error) {
	if _, _, ok := r.BasicAuth(); ok && errors.Is(err, fosite.ErrInvalidClient) {
		w.Header().Set("WWW-Authenticate", `Basic realm="sandbox"`)
	}
}

// takeFault consumes one pending injected fault, if any.
func (s *Server) takeFault() (faultPlan, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault.remaining <= 0 {
		return faultPlan{}, false
	}
	s.fault.remaining--
	return s.fault, true
}

func writeFault(w http.ResponseWriter, f faultPlan) {
	if f.retryAfter >= 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
	}
	writeJSONError(w, f.status, f.errorCode, "Injected fault: the sandbox was told to fail this request.")
}

// handleRevoke serves POST /sandbox/oauth/revoke (RFC 7009). The client
// authenticates as at the token endpoint. Revoking either token of a grant
// revokes the whole grant. Unknown or already invalid tokens get 200, as the
// RFC requires.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s.revocations.note(r)
	s.tokenMu.Lock()
	err := s.provider.NewRevocationRequest(ctx, r)
	s.tokenMu.Unlock()
	if err != nil {
		rfc := fosite.ErrorToRFC6749Error(err)
		s.log.Info("revocation request failed", "error", rfc.ErrorField)
		challengeBasic(w, r, err)
	} else {
		s.log.Info("revocation request handled")
	}
	s.provider.WriteRevocationResponse(ctx, w, err)
}

// handleIntrospect serves POST /sandbox/oauth/token/introspect (RFC 7662).
// fosite authenticates the caller by the client's credentials in HTTP Basic,
// or by any valid access token as a Bearer token. The response is written
// here rather than by fosite because fosite reports the access token's
// expiry for refresh tokens too and omits token_type.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	resp, err := s.provider.NewIntrospectionRequest(ctx, r, newSession())
	if err != nil {
		if !errors.Is(err, fosite.ErrInactiveToken) {
			s.log.Info("introspection request failed", "error", fosite.ErrorToRFC6749Error(err).ErrorField)
		}
		s.provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	ar := resp.GetAccessRequester()
	body := map[string]any{
		"active":    true,
		"client_id": ar.GetClient().GetID(),
		"scope":     strings.Join(ar.GetGrantedScopes(), " "),
		"iat":       ar.GetRequestedAt().Unix(),
		"sub":       ar.GetSession().GetSubject(),
		"username":  ar.GetSession().GetUsername(),
		"token_use": string(resp.GetTokenUse()),
	}
	switch resp.GetTokenUse() {
	case fosite.AccessToken:
		body["token_type"] = "Bearer"
		body["exp"] = ar.GetSession().GetExpiresAt(fosite.AccessToken).Unix()
	case fosite.RefreshToken:
		body["exp"] = ar.GetSession().GetExpiresAt(fosite.RefreshToken).Unix()
	}
	writeJSON(w, http.StatusOK, body)
}

// writeJSONError writes an OAuth-style error body.
func writeJSONError(w http.ResponseWriter, status int, code, description string) {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
