package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// StartAuthorisation opens an authorisation (or reauthorisation) attempt and
// returns the provider's authorize URL: the connection's scopes, a one-time
// state (256 bits, bound to this connection and attempt, expiring after
// AuthorisationTTL) and a PKCE S256 challenge. The verifier stays in the
// attempts store, sealed.
func (s *Service) StartAuthorisation(ctx context.Context, id string) (string, error) {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return "", err
	}
	if c.State == domain.StateUnauthenticated && c.TokensHeld && !c.Deleted {
		// The terminal failure's invalidation has not finished (it was
		// interrupted): finish it first, so it cannot later delete the
		// tokens this authorisation stores.
		if err := s.invalidate(ctx, &c); err != nil {
			return "", err
		}
	}
	p, err := s.provider(c.Provider)
	if err != nil {
		return "", err
	}
	now := s.clock.Now()
	if ok, wait := s.attempts.allow(id, now); !ok {
		return "", fmt.Errorf("%w (retry in %s)", ErrTooManyAttempts, wait.Round(time.Second))
	}
	state, verifier := randomSecret(), randomSecret()
	attempt := uuid.NewString()
	// The limiter knows the attempt by its start: ExpiresAt - AuthorisationTTL.
	expires := now.UTC().Add(s.cfg.AuthorisationTTL)
	if err := s.cfg.Attempts.Put(ctx, stateKey(state), domain.Attempt{ConnectionID: id, AttemptID: attempt, Verifier: verifier, ExpiresAt: expires}); err != nil {
		return "", err
	}
	if _, _, err = s.transact(ctx, id, &c, fixed(domain.StartAuthorisation{AttemptID: attempt, ExpiresAt: expires}), false); err != nil {
		return "", err
	}
	s.log.Info("reauthorisation triggered", "connection_id", id, "attempt_id", attempt, "previous_reason", string(c.Reason))
	return p.AuthCodeURL(state, verifier, c.Scopes, domain.AuthorizeParams(c.Config)), nil
}

// CallbackResult is what the callback did.
type CallbackResult struct {
	ConnectionID string
	State        domain.State
}

// HandleCallback completes an attempt from the provider's redirect. The
// state is checked before anything else; an unknown, expired, reused or
// mismatched state changes nothing. An error from the provider ends the
// attempt (authorisation_denied); a code is exchanged (PKCE) and the tokens
// are stored before authorisation.completed is appended.
func (s *Service) HandleCallback(ctx context.Context, state, code, errCode, errDesc string) (CallbackResult, error) {
	if state == "" {
		return CallbackResult{}, ErrStateMissing
	}
	at, err := s.cfg.Attempts.Take(ctx, stateKey(state))
	if errors.Is(err, domain.ErrNoAttempt) {
		return CallbackResult{}, ErrStateUnknown
	}
	if err != nil {
		return CallbackResult{}, err
	}
	res := CallbackResult{ConnectionID: at.ConnectionID}
	if !s.clock.Now().Before(at.ExpiresAt) {
		return res, ErrStateExpired
	}
	c, err := s.cfg.Store.Load(ctx, at.ConnectionID)
	if err != nil {
		return res, err
	}
	if c.State != domain.StateReauthorising || c.AttemptID != at.AttemptID {
		return res, ErrStateMismatch
	}
	p, err := s.provider(c.Provider)
	if err != nil {
		return res, err
	}
	fail := func(code, desc string, exchange bool) (CallbackResult, error) {
		_, e, err := s.transact(ctx, c.ID, &c, fixed(domain.FailAuthorisation{AttemptID: at.AttemptID, Exchange: exchange, ErrorCode: code, Description: truncate(desc, 200)}), false)
		if err != nil {
			return res, err
		}
		res.State = c.State
		s.log.Warn("authorisation failed", "connection_id", c.ID, "reason", string(e.Payload.(domain.AuthorisationFailed).Reason), "error_code", code)
		return res, fmt.Errorf("%w: %s", ErrDenied, code)
	}
	if errCode != "" {
		return fail(domain.SafeErrorCode(errCode), errDesc, false)
	}
	if code == "" {
		return fail("invalid_request", "callback without code", false)
	}
	toks, err := s.exchange(ctx, p, code, at.Verifier, c.Scopes)
	if err != nil {
		return fail(domain.FailureOf(err).Code, "", true)
	}
	if err := s.cfg.Vault.Put(ctx, c.ID, toks); err != nil {
		return res, err
	}
	info := toks.Info()
	if _, _, err = s.transact(ctx, c.ID, &c, fixed(domain.CompleteAuthorisation{AttemptID: at.AttemptID, Tokens: info}), false); err != nil {
		return res, err
	}
	_ = s.cfg.Gate.SetToken(c.ID, info.AccessTokenFP, toks.AccessToken)
	// The attempt's entry left the store (Take): it no longer counts.
	s.attempts.completed(c.ID, at.ExpiresAt.Add(-s.cfg.AuthorisationTTL).UnixNano())
	res.State = c.State
	s.log.Info("authorisation completed", "connection_id", c.ID, "attempt_id", at.AttemptID, "access_token_fp", info.AccessTokenFP, "expires_at", info.AccessTokenExpiresAt, "refresh_token", info.RefreshTokenFP != "")
	switch {
	case info.RefreshTokenFP != "":
	case info.AccessTokenExpiresAt.IsZero():
		s.log.Info("the provider issued no refresh token and an access token without expiry: it is used until the provider rejects it", "connection_id", c.ID)
	default:
		// Not an error: some providers grant offline access only for a
		// scope (offline_access). The connection ends at expires_at with
		// refresh_not_granted (norefresh.go).
		s.log.Warn("the provider issued no refresh token: the connection ends when its access token expires; request the scope it needs for offline access (e.g. offline_access) to keep it",
			"connection_id", c.ID, "expires_at", info.AccessTokenExpiresAt, "scopes", c.Scopes)
	}
	return res, nil
}

// exchange trades the code, retrying transient failures (network, 5xx, 429)
// twice with a short backoff: a code is single-use, but a request that
// failed that way was not answered, so the code is still good.
func (s *Service) exchange(ctx context.Context, p domain.TokenEndpoint, code, verifier string, scopes []string) (domain.Tokens, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var toks domain.Tokens
		if toks, err = p.Exchange(ctx, code, verifier, scopes); err == nil {
			return toks, nil
		}
		f := domain.FailureOf(err)
		if f.Terminal {
			return domain.Tokens{}, err
		}
		s.log.Warn("code exchange failed, retrying", "class", "transient", "error_code", f.Code, "http_status", f.Status, "attempt", attempt+1)
		if attempt < 2 && !s.sleep(ctx, max(time.Duration(100*(attempt+1)*(attempt+1))*time.Millisecond, min(f.RetryAfter, 2*time.Second))) {
			return domain.Tokens{}, err
		}
	}
	return domain.Tokens{}, err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
