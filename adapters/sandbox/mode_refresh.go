package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
)

// Refresh-token modes: which token responses carry a refresh token
// (Config.RefreshTokens, POST /sandbox/admin/grant-mode). Providers differ
// here: Pleo issues one with every grant and rotates it; OpenID providers
// issue one only when offline_access was granted; many issue none, or keep
// the first one and omit refresh_token from refresh responses (RFC 6749
// section 6 allows it).
const (
	// RefreshTokensAlways issues a refresh token with every code exchange
	// and a new one with every refresh (rotation). The default.
	RefreshTokensAlways = "always"
	// RefreshTokensNever issues none: a grant is its access token alone.
	RefreshTokensNever = "never"
	// RefreshTokensKeep issues one with the code exchange; refresh
	// responses omit refresh_token and the presented refresh token stays
	// valid (no rotation).
	RefreshTokensKeep = "keep"
	// RefreshTokensScopePrefix followed by a scope ("scope:offline_access")
	// issues a refresh token only to grants that were granted that scope,
	// rotated as with RefreshTokensAlways.
	RefreshTokensScopePrefix = "scope:"
)

// OfflineAccessScope is OpenID Connect's scope for offline access. The
// client may request it on top of Config.Scopes; it is granted only when
// requested. Use it with RefreshTokensScopePrefix ("scope:offline_access").
const OfflineAccessScope = "offline_access"

// maxAccessTTL bounds the access-token lifetime grant-mode accepts.
const maxAccessTTL = 365 * 24 * time.Hour

// nonExpiringLifetime is how long a "non-expiring" access token lives in
// the store: it is checked against the clock like any other, but no test
// outlives it (and fosite's arithmetic on it does not overflow).
const nonExpiringLifetime = 100 * 365 * 24 * time.Hour

// grantMode is the refresh-token mode and access-token lifetime in force.
type grantMode struct {
	refresh string // RefreshTokensAlways, ...Never, ...Keep, or "scope:<scope>"
	// accessTTL is the access-token lifetime: 0 means Config's
	// AccessTokenLifetime, nonExpiring a token without expiry.
	accessTTL   time.Duration
	nonExpiring bool
}

// validRefreshMode checks a refresh-token mode against the scopes the
// client may request.
func (s *Server) validRefreshMode(m string) error { return ValidateRefreshTokens(m, s.scopes) }

// ValidateRefreshTokens checks a refresh-token mode (Config.RefreshTokens,
// POST /sandbox/admin/grant-mode's refresh_token, the --sandbox-grant-mode
// and --grant-mode flags) against the registered scopes (nil or empty:
// DefaultScopes): always, never, keep, or scope:<scope> with
// offline_access or a registered scope.
func ValidateRefreshTokens(m string, scopes []string) error {
	if len(scopes) == 0 {
		scopes = DefaultScopes
	}
	switch m {
	case RefreshTokensAlways, RefreshTokensNever, RefreshTokensKeep:
		return nil
	}
	if sc, ok := strings.CutPrefix(m, RefreshTokensScopePrefix); ok && (sc == OfflineAccessScope || slices.Contains(scopes, sc)) {
		return nil
	}
	shown := m
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	return fmt.Errorf("refresh_token %q is not always, never, keep or scope:<scope> with offline_access or a registered scope", shown)
}

// MaxAccessTTL bounds the access-token lifetime grant-mode (and the
// commands' flags) accept.
const MaxAccessTTL = maxAccessTTL

// requestableScopes are the scopes the client may request: the registered
// ones and OfflineAccessScope.
func requestableScopes(registered []string) []string {
	return append(slices.Clone(registered), OfflineAccessScope)
}

func (s *Server) grantMode() grantMode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grant
}

// accessExpiry is when an access token issued at now expires.
func (m grantMode) accessExpiry(now time.Time, configured time.Duration) time.Time {
	switch {
	case m.nonExpiring:
		return now.Add(nonExpiringLifetime)
	case m.accessTTL > 0:
		return now.Add(m.accessTTL)
	}
	return now.Add(configured)
}

// setExpiresIn writes expires_in, or leaves it out for a token without
// expiry.
func (m grantMode) setExpiresIn(resp fosite.AccessResponder, configured time.Duration) {
	switch {
	case m.nonExpiring:
		if ar, ok := resp.(*fosite.AccessResponse); ok {
			delete(ar.Extra, "expires_in")
		}
	case m.accessTTL > 0:
		resp.SetExpiresIn(m.accessTTL)
	default:
		resp.SetExpiresIn(configured)
	}
}

// issues reports whether a grant with the granted scopes gets (on a code
// exchange) or rotates (on a refresh) a refresh token.
func (m grantMode) issues(granted []string, refresh bool) bool {
	switch m.refresh {
	case RefreshTokensNever:
		return false
	case RefreshTokensKeep:
		return !refresh
	}
	if sc, ok := strings.CutPrefix(m.refresh, RefreshTokensScopePrefix); ok {
		return slices.Contains(granted, sc)
	}
	return true
}

// applyGrantMode shapes a successful token response (s.tokenMu held).
// fosite issued (and on a refresh, rotated) a refresh token; where the
// mode issues none, it is left out of the response and:
//
//   - on a code exchange, forgotten: the grant has no refresh token.
//   - on a refresh, the presented refresh token takes the new one's place
//     (valid again, the new session and expiry): the provider kept it.
func (s *Server) applyGrantMode(ctx context.Context, r *http.Request, ar fosite.AccessRequester, resp fosite.AccessResponder, m grantMode) {
	rt, _ := resp.GetExtra("refresh_token").(string)
	refresh := r.PostForm.Get("grant_type") == "refresh_token"
	if rt == "" || m.issues(ar.GetGrantedScopes(), refresh) {
		return
	}
	if out, ok := resp.(*fosite.AccessResponse); ok {
		delete(out.Extra, "refresh_token")
	}
	newSig := s.strategy.RefreshTokenSignature(ctx, rt)
	if refresh {
		s.store.keepRefresh(s.strategy.RefreshTokenSignature(ctx, r.PostForm.Get("refresh_token")), newSig)
		s.stats.kept()
		return
	}
	s.store.dropRefresh(newSig)
	s.stats.withheld()
}

// dropRefresh forgets a refresh token that was never handed out.
func (s *store) dropRefresh(sig string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.refresh[sig]
	if rec == nil {
		return
	}
	delete(s.refresh, sig)
	if g := s.grants[rec.req.GetID()]; g != nil {
		delete(g.refresh, sig)
	}
}

// keepRefresh makes the refresh token with signature oldSig, just replaced
// by the one with newSig (never handed out), the grant's active refresh
// token again, with the new one's record.
func (s *store) keepRefresh(oldSig, newSig string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.refresh[newSig]
	if rec == nil {
		return
	}
	g := s.grants[rec.req.GetID()]
	delete(s.refresh, newSig)
	s.refresh[oldSig] = rec
	if g != nil {
		delete(g.refresh, newSig)
		g.refresh[oldSig] = struct{}{}
		g.tombstones = slices.DeleteFunc(g.tombstones, func(sig string) bool { return sig == oldSig })
	}
}

// grantModeRequest is the body of POST /sandbox/admin/grant-mode; at least
// one field.
type grantModeRequest struct {
	RefreshToken *string `json:"refresh_token"`
	AccessTTL    *string `json:"access_ttl"`
}

// grantModeResponse is the mode in force.
type grantModeResponse struct {
	RefreshToken string `json:"refresh_token"`
	// AccessTTL is the access-token lifetime ("0s": tokens without expiry).
	AccessTTL string `json:"access_ttl"`
}

func (s *Server) grantModeResponse() grantModeResponse {
	m := s.grantMode()
	ttl := s.atLifetime
	switch {
	case m.nonExpiring:
		ttl = 0
	case m.accessTTL > 0:
		ttl = m.accessTTL
	}
	return grantModeResponse{RefreshToken: m.refresh, AccessTTL: ttl.String()}
}

// handleAdminGrantMode serves POST /sandbox/admin/grant-mode:
// {"refresh_token":"always"|"never"|"keep"|"scope:<scope>"} and/or
// {"access_ttl":"<Go duration>"} ("0s": access tokens without expiry and
// without expires_in; otherwise 1s to 8760h). It applies to tokens issued
// from then on. A bad body changes nothing.
func (s *Server) handleAdminGrantMode(w http.ResponseWriter, r *http.Request) {
	var req grantModeRequest
	if err := decodeJSON(r, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	m, err := s.parseGrantMode(req)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	s.mu.Lock()
	s.grant = m
	s.mu.Unlock()
	out := s.grantModeResponse()
	s.log.Info("admin: grant mode set", "refresh_token", out.RefreshToken, "access_ttl", out.AccessTTL)
	writeJSON(w, http.StatusOK, out)
}

// handleAdminGetGrantMode serves GET /sandbox/admin/grant-mode.
func (s *Server) handleAdminGetGrantMode(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.grantModeResponse())
}

// parseGrantMode validates a grant-mode body against the mode in force
// (fields left out keep their value).
func (s *Server) parseGrantMode(req grantModeRequest) (grantMode, error) {
	if req.RefreshToken == nil && req.AccessTTL == nil {
		return grantMode{}, errors.New("give refresh_token (always, never, keep or scope:<scope>) and/or access_ttl (a duration; 0s: no expiry)")
	}
	m := s.grantMode()
	if req.RefreshToken != nil {
		if err := s.validRefreshMode(*req.RefreshToken); err != nil {
			return grantMode{}, err
		}
		m.refresh = *req.RefreshToken
	}
	if req.AccessTTL != nil {
		v := *req.AccessTTL
		if len(v) > 32 {
			return grantMode{}, errors.New("access_ttl is too long (at most 32 characters)")
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return grantMode{}, fmt.Errorf("access_ttl %q is not a duration such as 0s, 30s or 15m", v)
		case d == 0:
			m.accessTTL, m.nonExpiring = 0, true
		case d < time.Second || d > maxAccessTTL:
			return grantMode{}, fmt.Errorf("access_ttl must be 0s (no expiry) or from 1s to %s", maxAccessTTL)
		default:
			m.accessTTL, m.nonExpiring = d, false
		}
	}
	return m, nil
}

// initialGrantMode validates and applies Config.RefreshTokens and
// Config.NonExpiringAccessTokens (New calls it).
func (s *Server) initialGrantMode(cfg Config) error {
	mode := cfg.RefreshTokens
	if mode == "" {
		mode = RefreshTokensAlways
	}
	if err := s.validRefreshMode(mode); err != nil {
		return fmt.Errorf("sandbox: RefreshTokens: %w", err)
	}
	s.grant = grantMode{refresh: mode, nonExpiring: cfg.NonExpiringAccessTokens}
	return nil
}

func (c *counters) withheld() { c.update(func(s *Stats) { s.RefreshTokensWithheld++ }) }
func (c *counters) kept()     { c.update(func(s *Stats) { s.RefreshTokensKept++ }) }
