package httpapi

import "net/http"

// handleSigningKey answers GET /v1/signing-key: the public key that
// verifies the stream's signed checkpoints.
func (s *Server) handleSigningKey(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.SigningKey == nil {
		writeError(w, http.StatusNotFound, "not_found", "this instance signs no checkpoints")
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.SigningKey)
}
