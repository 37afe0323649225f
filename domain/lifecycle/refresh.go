package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// ErrNotDue: the connection does not need a refresh now (or is not active).
var ErrNotDue = errors.New("lifecycle: refresh not due")

// Refresh refreshes one connection now if it is active (and, for the
// schedule trigger, due). It takes the refresh lock by appending
// refresh.started against the version it read; losing that race returns an
// error wrapping domain.ErrConflict and sends no token request. The refresh
// token is read from the vault after the lock is held, so a replaced refresh
// token is never presented.
//
// ctx is honoured until the token request is sent (a shutdown then leaves
// the lease to expire and be recovered). From then on the work runs to its
// end within the lease even if ctx is cancelled: a caller that gave up must
// not strand a rotated token between the provider and the vault.
//
// The path loads the connection once and appends twice (the lock and the
// outcome), plus tokens.invalidated after a terminal failure.
func (s *Service) Refresh(ctx context.Context, id, trigger string) error {
	_, err := s.refresh(ctx, id, trigger)
	return err
}

// refresh is Refresh returning the connection as this instance last saw it
// (after the outcome it recorded, when it got that far).
func (s *Service) refresh(ctx context.Context, id, trigger string) (domain.Connection, error) {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return c, err
	}
	if c.State != domain.StateActive || !c.TokensHeld || c.Deleted {
		return c, ErrNotDue
	}
	if trigger == domain.TriggerSchedule && !s.due(&c, s.clock.Now()) {
		return c, ErrNotDue
	}
	p, err := s.provider(c.Provider)
	if err != nil {
		return c, err
	}
	lease := s.now().Add(s.cfg.Lease)
	pl, err := domain.Decide(&c, domain.StartRefresh{LeaseUntil: lease, Trigger: trigger, RefreshTokenFP: c.Tokens.RefreshTokenFP})
	if err != nil {
		return c, err
	}
	e, err := s.cfg.Store.Append(ctx, id, c.Version, s.event(id, pl))
	if err != nil {
		return c, err // ErrConflict: another instance holds or just used the lock
	}
	if err := c.Apply(e); err != nil {
		return c, err
	}
	r := refreshRun{s: s, c: &c, p: p, lease: lease, trigger: trigger}
	return c, r.run(ctx)
}

// refreshRun is one refresh under a lease this instance holds.
type refreshRun struct {
	s       *Service
	c       *domain.Connection // at the refresh.started version, then after the outcome
	p       domain.TokenEndpoint
	lease   time.Time
	trigger string
}

func (r *refreshRun) run(ctx context.Context) error {
	s, id := r.s, r.c.ID
	toks, err := s.cfg.Vault.Get(ctx, id)
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // shutting down before anything was sent: the lease expires
	case errors.Is(err, domain.ErrNoTokens):
		return r.failed(ctx, &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"})
	case err != nil:
		s.log.Warn("reading the vault failed", "connection_id", id, "error", err.Error())
		return r.failed(ctx, &domain.Failure{Code: "vault_read_failed"})
	}
	// From here the work must finish within the lease, whatever ctx does.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.lease)
	defer cancel()
	if fp := domain.Fingerprint(toks.RefreshToken); r.c.Tokens.RefreshTokenFP != "" && fp != r.c.Tokens.RefreshTokenFP {
		// An earlier refresher stored rotated tokens and died before its
		// event: the vault is ahead of the stream. Adopt them; presenting
		// the refresh token the events describe would present a replaced one.
		s.log.Warn("adopting tokens stored by an interrupted refresh", "connection_id", id, "refresh_token_fp", fp)
		return r.succeeded(ctx, toks, true)
	}
	// The provider gets two thirds of the lease; the rest is for storing.
	pctx, pcancel := context.WithDeadline(ctx, s.clock.Now().Add(s.cfg.Lease*2/3))
	newToks, rotated, err := r.p.Refresh(pctx, toks.RefreshToken, toks.Scopes)
	pcancel()
	if err != nil {
		return r.failed(ctx, domain.FailureOf(err))
	}
	// Store access and refresh token together before the event is appended.
	// The provider has already rotated: the old refresh token is dead, so a
	// write that cannot be made within the lease is terminal (presenting the
	// old token again would kill the grant).
	if err := s.putTokens(ctx, id, newToks); err != nil {
		s.log.Error("storing rotated tokens failed", "connection_id", id, "error", err.Error())
		// The new tokens exist only here: revoke them (best effort) so that
		// the grant does not outlive the record of it.
		if rerr := r.p.Revoke(ctx, newToks.RefreshToken, "refresh_token"); rerr != nil && !errors.Is(rerr, domain.ErrNoRevocation) {
			s.log.Warn("revoking the rotated tokens at the provider failed (best effort)", "connection_id", id, "error", rerr.Error())
		}
		return r.failed(ctx, &domain.Failure{Terminal: true, Code: "rotated_tokens_lost"})
	}
	return r.succeeded(ctx, newToks, rotated)
}

func (r *refreshRun) succeeded(ctx context.Context, toks domain.Tokens, rotated bool) error {
	s, id := r.s, r.c.ID
	info := toks.Info()
	if _, err := r.outcome(ctx, domain.SucceedRefresh{Tokens: info, Rotated: rotated}); err != nil {
		s.abandonTokens(ctx, id, toks)
		return fmt.Errorf("lifecycle: record refresh of %s: %w", id, err)
	}
	_ = s.cfg.Gate.SetToken(id, info.AccessTokenFP, toks.AccessToken)
	s.log.Info("refresh succeeded", "connection_id", id, "trigger", r.trigger, "rotated", rotated, "access_token_fp", info.AccessTokenFP, "expires_at", info.AccessTokenExpiresAt)
	return nil
}

// failed records a failed attempt; a terminal one then destroys the tokens.
func (r *refreshRun) failed(ctx context.Context, f *domain.Failure) error {
	s, id := r.s, r.c.ID
	retryAt := s.now().Add(s.backoff(r.c.TransientFailures+1, f.RetryAfter))
	pl, err := r.outcome(ctx, domain.FailRefresh{Terminal: f.Terminal, ErrorCode: f.Code, HTTPStatus: f.Status, RetryAt: retryAt, MaxAttempts: s.cfg.MaxAttempts})
	if err != nil {
		return fmt.Errorf("lifecycle: record refresh failure of %s: %w", id, err)
	}
	rf := pl.(domain.RefreshFailed)
	s.log.Warn("refresh failed", "connection_id", id, "class", rf.Class, "error_code", rf.ErrorCode,
		"http_status", rf.HTTPStatus, "attempt", rf.Attempt, "terminal", rf.Terminal, "reason", string(rf.Reason), "retry_at", rf.RetryAt)
	if !rf.Terminal {
		return f
	}
	s.log.Error("token expiry or revocation detected", "connection_id", id, "reason", string(rf.Reason), "source", "refresh", "error_code", rf.ErrorCode)
	if err := s.invalidate(ctx, r.c); err != nil {
		s.log.Error("token invalidation failed", "connection_id", id, "error", err.Error())
	}
	return &TerminalError{ConnectionID: id, Reason: rf.Reason, Failure: f}
}

// outcome appends the outcome of the refresh. Another event may have been
// appended meanwhile (a self-loop such as access.rejected or
// connection.updated): while the connection is still refreshing under this
// lease, the outcome is decided again on the new version and appended.
func (r *refreshRun) outcome(ctx context.Context, cmd domain.Command) (domain.Payload, error) {
	_, e, err := r.s.transact(ctx, r.c.ID, r.c, func(c *domain.Connection) (domain.Command, error) {
		if c.State != domain.StateRefreshing || !c.LeaseUntil.Equal(r.lease) {
			return nil, fmt.Errorf("%w: the refresh lease was recovered or the connection changed state", domain.ErrConflict)
		}
		return cmd, nil
	}, true)
	return e.Payload, err
}

// abandonTokens handles tokens this instance stored but could not record:
// if the connection is gone or unauthenticated they must not linger in the
// vault, so they are revoked (best effort) and deleted.
func (s *Service) abandonTokens(ctx context.Context, id string, toks domain.Tokens) {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil || (!c.Deleted && c.State != domain.StateUnauthenticated) {
		return // still usable: a later refresh adopts them
	}
	if p, err := s.provider(c.Provider); err == nil {
		_ = p.Revoke(ctx, toks.RefreshToken, "refresh_token")
	}
	if err := s.cfg.Vault.Delete(ctx, id); err != nil {
		s.log.Error("deleting abandoned tokens failed", "connection_id", id, "error", err.Error())
	}
}

// TerminalError reports that a connection became unauthenticated.
type TerminalError struct {
	ConnectionID string
	Reason       domain.Reason
	Failure      *domain.Failure
}

func (e *TerminalError) Error() string {
	return fmt.Sprintf("lifecycle: connection %s is unauthenticated (%s)", e.ConnectionID, e.Reason)
}

// Unwrap makes errors.Is(err, domain.ErrUnauthenticated) true.
func (e *TerminalError) Unwrap() error { return domain.ErrUnauthenticated }

// invalidate destroys the stored tokens of a connection the caller holds
// (c, updated on success): revoke at the provider (RFC 7009, best effort),
// delete from the vault, append tokens.invalidated. Only an
// unauthenticated (or deleted) connection's tokens are destroyed: once a
// reauthorisation has started, the vault is about to hold (or holds) the
// new grant, which replaces the old tokens there anyway.
func (s *Service) invalidate(ctx context.Context, c *domain.Connection) error {
	if !c.TokensHeld || c.State != domain.StateUnauthenticated {
		return nil
	}
	id := c.ID
	revoked := false
	if toks, err := s.cfg.Vault.Get(ctx, id); err == nil {
		if p, err := s.provider(c.Provider); err == nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rerr := p.Revoke(rctx, toks.RefreshToken, "refresh_token")
			if rerr == nil {
				rerr = p.Revoke(rctx, toks.AccessToken, "access_token")
			}
			cancel()
			revoked = rerr == nil
			if rerr != nil && !errors.Is(rerr, domain.ErrNoRevocation) {
				s.log.Warn("revocation at provider failed (best effort)", "connection_id", id, "error", rerr.Error())
			}
		}
	}
	if err := s.cfg.Vault.Delete(ctx, id); err != nil {
		return err
	}
	_, _, err := s.transact(ctx, id, c, func(c *domain.Connection) (domain.Command, error) {
		if !c.TokensHeld || c.State != domain.StateUnauthenticated {
			return nil, errAlreadyInvalidated
		}
		return domain.InvalidateTokens{ProviderRevoked: revoked}, nil
	}, false)
	if errors.Is(err, errAlreadyInvalidated) {
		return nil
	}
	if err == nil {
		s.log.Info("tokens invalidated", "connection_id", id, "provider_revoked", revoked)
	}
	return err
}

var errAlreadyInvalidated = errors.New("lifecycle: tokens already invalidated")

// putTokens writes the vault, retrying a failed write up to three times
// within the refresh lease.
func (s *Service) putTokens(ctx context.Context, id string, t domain.Tokens) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = s.cfg.Vault.Put(ctx, id, t); err == nil {
			return nil
		}
		if attempt < 3 && !s.sleep(ctx, time.Duration(100*(attempt+1))*time.Millisecond) {
			return err
		}
	}
	return err
}
