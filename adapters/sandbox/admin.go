package sandbox

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
)

// Limits for POST /sandbox/admin/faults.
const (
	maxFaultCount      = 10000
	maxFaultRetryAfter = 86400
)

// errorCodePattern bounds the error code an injected fault may carry.
var errorCodePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// requireAdminToken answers 401 to every admin request that does not carry
// "Authorization: Bearer <admin token>" (Config.AdminToken). Both sides are
// hashed before the constant-time comparison, so neither the token's content
// nor its length leaks. The guard wraps the whole admin subtree, so a caller
// without the token learns nothing about which admin paths exist.
func requireAdminToken(tokenHash [sha256.Size]byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], tokenHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandbox-admin"`)
			writeJSONError(w, http.StatusUnauthorized, "unauthorized",
				"The sandbox admin API needs Authorization: Bearer <admin token> (tokenline's API token).")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleAdminRevokeGrants revokes every grant of the client, as when the
// user revokes the integration's access: all access tokens, refresh tokens
// and unused authorisation codes stop working. Refreshing then gets
// invalid_grant and the API gets 401.
func (s *Server) handleAdminRevokeGrants(w http.ResponseWriter, _ *http.Request) {
	s.tokenMu.Lock()
	n := s.store.revokeGrants(nil)
	s.tokenMu.Unlock()
	s.log.Info("admin: grants revoked", "revoked", n)
	writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
}

// handleAdminRotateSecret replaces the client secret. The old one stops
// working at once: token requests with it get 401 invalid_client. The new
// secret is returned in the response and by Server.ClientSecret. Issued
// tokens are not revoked, but a client that kept the old secret can no
// longer refresh or exchange codes.
func (s *Server) handleAdminRotateSecret(w http.ResponseWriter, _ *http.Request) {
	secret, err := randomString(32)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "server_error", "Could not generate a secret.")
		return
	}
	client := s.newClient(secret)
	s.tokenMu.Lock()
	s.store.setClient(client)
	s.mu.Lock()
	s.secret = secret
	s.mu.Unlock()
	s.tokenMu.Unlock()
	s.log.Info("admin: client secret rotated")
	writeJSON(w, http.StatusOK, map[string]string{"client_secret": secret})
}

// handleAdminExpireRefreshTokens makes every active refresh token expire
// now; refreshing with one then gets invalid_grant. Access tokens are not
// touched.
func (s *Server) handleAdminExpireRefreshTokens(w http.ResponseWriter, _ *http.Request) {
	s.tokenMu.Lock()
	n := s.store.expireRefreshTokens(s.now())
	s.tokenMu.Unlock()
	s.log.Info("admin: refresh tokens expired", "expired", n)
	writeJSON(w, http.StatusOK, map[string]int{"expired": n})
}

// faultRequest is the body of POST /sandbox/admin/faults.
type faultRequest struct {
	Status     *int    `json:"status"`
	Count      *int    `json:"count"`
	RetryAfter *int    `json:"retry_after"`
	Error      *string `json:"error"`
}

// faultResponse echoes the fault plan now in force.
type faultResponse struct {
	Status     int    `json:"status"`
	Count      int    `json:"count"`
	RetryAfter *int   `json:"retry_after,omitempty"`
	Error      string `json:"error"`
}

// handleAdminFaults makes the next count token-endpoint requests fail with
// the given status, replacing any pending plan. Optional fields:
// retry_after (seconds, sent as Retry-After; defaults to 1 for 429) and
// error (the OAuth error code in the body; defaults by status:
// temporarily_unavailable for 429 and 503, invalid_client for 401,
// invalid_request for other 4xx, server_error for other 5xx).
func (s *Server) handleAdminFaults(w http.ResponseWriter, r *http.Request) {
	var req faultRequest
	if err := decodeJSON(r, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	plan, err := req.plan()
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	s.mu.Lock()
	s.fault = plan
	s.mu.Unlock()
	s.log.Info("admin: faults set", "status", plan.status, "count", plan.remaining, "error", plan.errorCode)

	out := faultResponse{Status: plan.status, Count: plan.remaining, Error: plan.errorCode}
	if plan.retryAfter >= 0 {
		ra := plan.retryAfter
		out.RetryAfter = &ra
	}
	writeJSON(w, http.StatusOK, out)
}

func (f faultRequest) plan() (faultPlan, error) {
	if f.Status == nil || *f.Status < 400 || *f.Status > 599 {
		return faultPlan{}, errors.New("status is required and must be an HTTP status in 400-599")
	}
	if f.Count == nil || *f.Count < 1 || *f.Count > maxFaultCount {
		return faultPlan{}, fmt.Errorf("count is required and must be in 1-%d", maxFaultCount)
	}
	p := faultPlan{status: *f.Status, remaining: *f.Count, retryAfter: -1}
	switch {
	case f.RetryAfter != nil:
		if *f.RetryAfter < 0 || *f.RetryAfter > maxFaultRetryAfter {
			return faultPlan{}, fmt.Errorf("retry_after must be in 0-%d seconds", maxFaultRetryAfter)
		}
		p.retryAfter = *f.RetryAfter
	case p.status == http.StatusTooManyRequests:
		p.retryAfter = 1
	}
	switch {
	case f.Error != nil:
		if !errorCodePattern.MatchString(*f.Error) {
			return faultPlan{}, errors.New("error must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
		}
		p.errorCode = *f.Error
	case p.status == http.StatusTooManyRequests || p.status == http.StatusServiceUnavailable:
		p.errorCode = "temporarily_unavailable"
	case p.status == http.StatusUnauthorized:
		p.errorCode = "invalid_client"
	case p.status < 500:
		p.errorCode = "invalid_request"
	default:
		p.errorCode = "server_error"
	}
	return p, nil
}

// handleAdminConsent changes the consent mode: {"mode":"approve"|"deny"|"prompt"}.
func (s *Server) handleAdminConsent(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Mode string `json:"mode"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !validConsent(req.Mode) {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "mode must be approve, deny or prompt")
		return
	}
	s.mu.Lock()
	s.consent = req.Mode
	s.mu.Unlock()
	s.log.Info("admin: consent mode set", "mode", req.Mode)
	writeJSON(w, http.StatusOK, map[string]string{"mode": req.Mode})
}

func (s *Server) handleAdminStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// handleAdminResetStats zeroes the counters. What the store holds (Held,
// RefreshesPerGrant) is state, not a counter, and is not reset.
func (s *Server) handleAdminResetStats(w http.ResponseWriter, _ *http.Request) {
	s.stats.reset()
	s.log.Info("admin: stats reset")
	writeJSON(w, http.StatusOK, s.Stats())
}

// decodeJSON decodes exactly one JSON object with no unknown fields.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errors.New("request body too large")
		}
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON body: unexpected data after the object")
	}
	return nil
}
