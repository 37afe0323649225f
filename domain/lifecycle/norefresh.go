package lifecycle

import (
	"context"

	"github.com/tokenline/tokenline/domain"
)

// Grants without a refresh token. Providers issue a refresh token only for
// some scopes (OpenID Connect's offline_access) or never; many issue
// long-lived access tokens without one. Such a grant is an active
// connection like any other, but nothing is ever refreshed (there is
// nothing to present to the token endpoint):
//
//   - an access token without expiry is handed out until an API call is
//     rejected (a 401 ends it at once: domain.RejectAccess) or a probe
//     finds it dead; the scheduler plans nothing for it.
//   - an access token with an expiry is handed out until then, less a
//     safety margin (domain.TokenTiming.GateMarginWithoutRefresh), after
//     which the gate refuses it as refresh_not_granted, a refusal waiting
//     does not cure (the user must reconnect: /token answers 409 at once,
//     the RoundTripper ErrActionRequired, never "refresh in progress"); at its
//     expiry the scheduler's "lapse" job records refresh.failed (terminal,
//     error code no_refresh_token, reason refresh_not_granted; transition
//     refresh.failed.not_granted) and destroys the tokens. The user must
//     reconnect, and the operator may first need to add the scope the
//     provider wants for offline access to the connection's scopes.
//
// A grant is taken to have no refresh token when the events name none
// (TokenInfo.RefreshTokenFP empty): a refresh response without one keeps
// the old one (RFC 6749 §6), so only a grant that never had one qualifies.

// withoutRefreshToken reports whether c is active on a grant without a
// refresh token.
func withoutRefreshToken(c *domain.Connection) bool {
	return c.State == domain.StateActive && c.TokensHeld && !c.Deleted && c.Tokens.RefreshTokenFP == ""
}

// planWithoutRefresh plans an active entry whose grant has no refresh
// token (s.mu held): the lapse at its access token's expiry, or nothing
// for a token without one.
func planWithoutRefresh(en *schedEntry) {
	if en.expiresAt != 0 {
		en.job, en.due = jobLapse, en.expiresAt
	}
}

// lapse is the scheduler's job for a grant without a refresh token whose
// access token has expired.
func (s *Service) lapse(ctx context.Context, id string) error {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return err
	}
	return s.endWithoutRefresh(ctx, &c)
}

// endWithoutRefresh ends c, a connection the caller loaded, if its grant
// has no refresh token and its access token has expired: the gate closes,
// refresh.failed (refresh_not_granted) is appended and the tokens are
// destroyed (c is updated). It returns ErrNotDue, changing nothing, if
// the connection does not qualify (any more).
func (s *Service) endWithoutRefresh(ctx context.Context, c *domain.Connection) error {
	now := s.clock.Now()
	_, _, err := s.transact(ctx, c.ID, c, func(cur *domain.Connection) (domain.Command, error) {
		if exp := cur.Tokens.AccessTokenExpiresAt; !withoutRefreshToken(cur) || exp.IsZero() || now.Before(exp) {
			return nil, ErrNotDue
		}
		return domain.ExpireWithoutRefresh{Now: now}, nil
	}, true)
	if err != nil {
		return err
	}
	s.log.Error("token expiry or revocation detected", "connection_id", c.ID, "reason", string(domain.ReasonRefreshNotGranted),
		"source", "expiry", "error_code", domain.ErrorCodeNoRefreshToken,
		"hint", "the provider issued no refresh token; request the scope it needs for offline access (e.g. offline_access) and reconnect")
	if err := s.invalidate(ctx, c); err != nil {
		s.log.Error("token invalidation failed", "connection_id", c.ID, "error", err.Error())
	}
	return nil
}

// refreshWithoutToken is what a refresh of a grant without a refresh
// token does instead (refresh calls it): nothing before the access token
// expires (ErrNotDue), the end of the connection after (a *TerminalError).
func (s *Service) refreshWithoutToken(ctx context.Context, c *domain.Connection) error {
	if err := s.endWithoutRefresh(ctx, c); err != nil {
		return err
	}
	return &TerminalError{ConnectionID: c.ID, Reason: domain.ReasonRefreshNotGranted,
		Failure: &domain.Failure{Terminal: true, Code: domain.ErrorCodeNoRefreshToken, Detail: "the provider issued no refresh token"}}
}
