package sandbox

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// How the sandbox's API (GET /sandbox/api/me) answers a dead access token
// (invalid, expired, revoked, or a refresh token): the ways real providers
// signal it, for testing tokenline's detection rules. Config.DeadTokenAnswer
// sets the initial mode, POST /sandbox/admin/api-mode changes it.
const (
	// DeadToken401 answers 401 with WWW-Authenticate: Bearer
	// error="invalid_token" (RFC 6750; the default).
	DeadToken401 = "401"
	// DeadToken403Empty answers 403 with the body {} and no challenge.
	DeadToken403Empty = "403_empty"
	// DeadToken403Bearer answers 403 with WWW-Authenticate: Bearer
	// error="invalid_token".
	DeadToken403Bearer = "403_bearer"
	// DeadToken200Error answers 200 with {"ok":false,"error":"invalid_auth"}.
	DeadToken200Error = "200_error_body"
	// DeadToken400Error answers 400 with
	// {"error":{"code":"invalid_access_token","message":"..."}}.
	DeadToken400Error = "400_error_body"
)

// deadTokenModes are the modes in documentation order.
var deadTokenModes = []string{DeadToken401, DeadToken403Empty, DeadToken403Bearer, DeadToken200Error, DeadToken400Error}

func validDeadTokenMode(m string) bool { return slices.Contains(deadTokenModes, m) }

// deadTokenMode returns the current mode.
func (s *Server) deadTokenMode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deadToken == "" {
		return DeadToken401
	}
	return s.deadToken
}

// writeDeadToken answers an API request whose token is dead, as the current
// mode says.
func (s *Server) writeDeadToken(w http.ResponseWriter) {
	switch s.deadTokenMode() {
	case DeadToken403Empty:
		writeJSON(w, http.StatusForbidden, struct{}{})
	case DeadToken403Bearer:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSONError(w, http.StatusForbidden, "invalid_token", "The access token is invalid, expired or revoked.")
	case DeadToken200Error:
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_auth"})
	case DeadToken400Error:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{
			"code": "invalid_access_token", "message": "The access token is invalid, expired or revoked."}})
	default:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSONError(w, http.StatusUnauthorized, "invalid_token", "The access token is invalid, expired or revoked.")
	}
}

// handleAdminAPIMode changes how the API answers a dead token:
// {"dead_token":"401"|"403_empty"|"403_bearer"|"200_error_body"|"400_error_body"}.
func (s *Server) handleAdminAPIMode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeadToken string `json:"dead_token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !validDeadTokenMode(req.DeadToken) {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "dead_token must be one of "+strings.Join(deadTokenModes, ", "))
		return
	}
	s.mu.Lock()
	s.deadToken = req.DeadToken
	s.mu.Unlock()
	s.log.Info("admin: api mode set", "dead_token", req.DeadToken)
	writeJSON(w, http.StatusOK, map[string]string{"dead_token": req.DeadToken})
}

// checkDeadTokenMode validates Config.DeadTokenAnswer.
func checkDeadTokenMode(m string) error {
	if m != "" && !validDeadTokenMode(m) {
		return fmt.Errorf("sandbox: DeadTokenAnswer %q is not one of %s", m, strings.Join(deadTokenModes, ", "))
	}
	return nil
}
