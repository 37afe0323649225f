package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/provider"
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
// Once the lock is held the work runs to its end within the lease even if
// ctx is cancelled (a caller that gave up must not strand a rotated token
// between the provider and the vault).
func (s *Service) Refresh(ctx context.Context, id, trigger string) error {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return err
	}
	if c.State != domain.StateActive || !c.TokensHeld {
		return ErrNotDue
	}
	if trigger == domain.TriggerSchedule && !s.due(&c, s.cfg.Now()) {
		return ErrNotDue
	}
	p, err := s.provider(&c)
	if err != nil {
		return err
	}
	lease := s.cfg.Now().Add(s.cfg.Lease).UTC()
	pl, err := domain.Decide(&c, domain.StartRefresh{LeaseUntil: lease, Trigger: trigger, RefreshTokenFP: c.Tokens.RefreshTokenFP})
	if err != nil {
		return err
	}
	out, err := s.cfg.Store.Append(ctx, id, c.Version, s.event(id, pl))
	if err != nil {
		return err // ErrConflict: another instance holds or just used the lock
	}
	if err := c.Apply(out); err != nil {
		return err
	}

	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), lease)
	defer cancel()
	toks, err := s.cfg.Vault.Get(ctx, id)
	switch {
	case errors.Is(err, domain.ErrNoTokens):
		return s.refreshFailed(ctx, &c, lease, &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"})
	case err != nil:
		s.log.Warn("reading the vault failed", "connection_id", id, "error", err.Error())
		return s.refreshFailed(ctx, &c, lease, &domain.Failure{Code: "vault_read_failed"})
	}
	if fp := domain.Fingerprint(toks.RefreshToken); c.Tokens.RefreshTokenFP != "" && fp != c.Tokens.RefreshTokenFP {
		// An earlier refresher stored rotated tokens and died before its
		// event: the vault is ahead of the stream. Adopt them; presenting
		// the refresh token the events describe would present a replaced one.
		s.log.Warn("adopting tokens stored by an interrupted refresh", "connection_id", id, "refresh_token_fp", fp)
		return s.refreshSucceeded(ctx, &c, lease, trigger, toks, true)
	}
	// The provider gets two thirds of the lease; the rest is for storing.
	pctx, pcancel := context.WithDeadline(ctx, s.cfg.Now().Add(s.cfg.Lease*2/3))
	newToks, rotated, err := p.Refresh(pctx, toks.RefreshToken, toks.Scopes)
	pcancel()
	if err != nil {
		return s.refreshFailed(ctx, &c, lease, provider.Classify(err))
	}
	// Store access and refresh token together before the event is appended.
	// The provider has already rotated: the old refresh token is dead, so a
	// write that cannot be made within the lease is terminal (presenting the
	// old token again would kill the grant).
	if err := s.putTokens(ctx, id, newToks); err != nil {
		s.log.Error("storing rotated tokens failed", "connection_id", id, "error", err.Error())
		return s.refreshFailed(ctx, &c, lease, &domain.Failure{Terminal: true, Code: "rotated_tokens_lost"})
	}
	return s.refreshSucceeded(ctx, &c, lease, trigger, newToks, rotated)
}

func (s *Service) refreshSucceeded(ctx context.Context, c *domain.Connection, lease time.Time, trigger string, toks domain.Tokens, rotated bool) error {
	info := toks.Info()
	if _, err := s.appendOutcome(ctx, c, lease, domain.SucceedRefresh{Tokens: info, Rotated: rotated}); err != nil {
		s.abandonTokens(ctx, c.ID, toks)
		return fmt.Errorf("lifecycle: record refresh of %s: %w", c.ID, err)
	}
	_ = s.cfg.Gate.SetToken(c.ID, info.AccessTokenFP, toks.AccessToken)
	s.log.Info("refresh succeeded", "connection_id", c.ID, "trigger", trigger, "rotated", rotated, "access_token_fp", info.AccessTokenFP, "expires_at", info.AccessTokenExpiresAt)
	return nil
}

// appendOutcome appends the outcome of a refresh this instance holds the
// lease of. Another event may have been appended meanwhile (a self-loop such
// as access.rejected or connection.updated): while the connection is still
// refreshing under this lease, the outcome is decided again on the new
// version and appended.
func (s *Service) appendOutcome(ctx context.Context, c *domain.Connection, lease time.Time, cmd domain.Command) (domain.Payload, error) {
	for try := 0; ; try++ {
		pl, err := domain.Decide(c, cmd)
		if err != nil {
			return nil, err
		}
		if rf, ok := pl.(domain.RefreshFailed); ok && rf.Terminal {
			s.cfg.Gate.CloseAfter(c.ID, rf.Reason, c.Version) // before the append: nothing slips through
		}
		out, err := s.cfg.Store.Append(ctx, c.ID, c.Version, s.event(c.ID, pl))
		if err == nil {
			_ = c.Apply(out)
			return pl, nil
		}
		if rf, ok := pl.(domain.RefreshFailed); ok && rf.Terminal {
			s.cfg.Gate.Reopen(c.ID) // the decision did not land; the next event decides
		}
		if !errors.Is(err, domain.ErrConflict) || try >= 3 {
			return nil, err
		}
		cur, lerr := s.cfg.Store.Load(ctx, c.ID)
		if lerr != nil {
			return nil, err
		}
		if cur.State != domain.StateRefreshing || !cur.LeaseUntil.Equal(lease) {
			return nil, err // the lease was recovered or the connection changed state
		}
		*c = cur
	}
}

// abandonTokens handles tokens this instance stored but could not record:
// if the connection is gone or unauthenticated they must not linger in the
// vault, so they are revoked (best effort) and deleted.
func (s *Service) abandonTokens(ctx context.Context, id string, toks domain.Tokens) {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil || (!c.Deleted && c.State != domain.StateUnauthenticated) {
		return // still usable: a later refresh adopts them
	}
	if p, err := s.provider(&c); err == nil {
		_ = p.Revoke(ctx, toks.RefreshToken, "refresh_token")
	}
	if err := s.cfg.Vault.Delete(ctx, id); err != nil {
		s.log.Error("deleting abandoned tokens failed", "connection_id", id, "error", err.Error())
	}
}

func (s *Service) event(id string, p domain.Payload) domain.Event {
	return domain.Event{ConnectionID: id, Time: s.cfg.Now().UTC(), Actor: s.actor, Payload: p}
}

// refreshFailed records a failed attempt on a connection this instance holds
// the lease of (c is at the refresh.started version).
func (s *Service) refreshFailed(ctx context.Context, c *domain.Connection, lease time.Time, f *domain.Failure) error {
	retryAt := s.cfg.Now().Add(s.backoff(c.TransientFailures+1, f.RetryAfter)).UTC()
	pl, err := s.appendOutcome(ctx, c, lease, domain.FailRefresh{Terminal: f.Terminal, ErrorCode: f.Code, HTTPStatus: f.Status, RetryAt: retryAt, MaxAttempts: s.cfg.MaxAttempts})
	if err != nil {
		return fmt.Errorf("lifecycle: record refresh failure of %s: %w", c.ID, err)
	}
	rf := pl.(domain.RefreshFailed)
	s.log.Warn("refresh failed", "connection_id", c.ID, "class", rf.Class, "error_code", rf.ErrorCode,
		"http_status", rf.HTTPStatus, "attempt", rf.Attempt, "terminal", rf.Terminal, "reason", string(rf.Reason), "retry_at", rf.RetryAt)
	if !rf.Terminal {
		return f
	}
	s.log.Error("token expiry or revocation detected", "connection_id", c.ID, "reason", string(rf.Reason), "source", "refresh", "error_code", rf.ErrorCode)
	if err := s.invalidate(ctx, c.ID); err != nil {
		s.log.Error("token invalidation failed", "connection_id", c.ID, "error", err.Error())
	}
	return &TerminalError{ConnectionID: c.ID, Reason: rf.Reason, Failure: f}
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

// invalidate destroys a connection's stored tokens: revoke at the provider
// (RFC 7009, best effort), delete from the vault, append tokens.invalidated.
func (s *Service) invalidate(ctx context.Context, id string) error {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return err
	}
	// Only an unauthenticated connection's tokens are destroyed: once a
	// reauthorisation has started, the vault is about to hold (or holds) the
	// new grant, which replaces the old tokens there anyway.
	if !c.TokensHeld || c.State != domain.StateUnauthenticated {
		return nil
	}
	revoked := false
	if toks, err := s.cfg.Vault.Get(ctx, id); err == nil {
		if p, err := s.provider(&c); err == nil {
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
	_, _, err = s.decideAppend(ctx, id, fixed(domain.InvalidateTokens{ProviderRevoked: revoked}), nil)
	if err == nil {
		s.log.Info("tokens invalidated", "connection_id", id, "provider_revoked", revoked)
	}
	return err
}

// Rejection is an API call's rejection reported by an integration.
type Rejection struct {
	// Status is 401 or 403.
	Status int
	// WWWAuthenticate is the response's WWW-Authenticate header.
	WWWAuthenticate string
	// AccessTokenFP is the fingerprint of the token the call used; empty
	// means the connection's current token.
	AccessTokenFP string
}

// ParseBearerChallenge extracts error and scope from a Bearer
// WWW-Authenticate header (RFC 6750 §3).
func ParseBearerChallenge(h string) (errCode, scope string) {
	h = strings.TrimSpace(h)
	if len(h) < 6 || !strings.EqualFold(h[:6], "bearer") {
		return "", ""
	}
	for part := range strings.SplitSeq(h[6:], ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "error":
			errCode = safe(v)
		case "scope":
			scope = truncate(v, 512)
		}
	}
	return errCode, scope
}

// ReportRejection is the detection path for API calls. A 401 (invalid_token,
// or no error parameter) appends access.rejected and tries one refresh; if
// that fails terminally, or the token it issued is rejected again, the
// connection goes unauthenticated (access_token_rejected). A 403
// insufficient_scope is recorded and does not log the connection out.
func (s *Service) ReportRejection(ctx context.Context, id string, r Rejection) (domain.Connection, error) {
	if r.Status != 401 && r.Status != 403 {
		return domain.Connection{}, fmt.Errorf("%w: status must be 401 or 403", domain.ErrInvalidCommand)
	}
	code, scope := ParseBearerChallenge(r.WWWAuthenticate)
	if r.Status == 401 && code == "" {
		code = "invalid_token"
	}
	var terminal, current bool
	c, _, err := s.decideAppend(ctx, id, func(c *domain.Connection) (domain.Command, error) {
		// Without a fingerprint the rejected token is assumed to be the
		// current one, except right after a refresh made because of a
		// rejection: a late report about the previous token must neither
		// refresh again nor condemn the fresh token (only a matching
		// fingerprint can make a rejection terminal).
		current = r.AccessTokenFP == c.Tokens.AccessTokenFP || (r.AccessTokenFP == "" && !c.RecoveringFromRejection)
		return domain.RejectAccess{HTTPStatus: r.Status, ErrorCode: code, Scope: scope, AccessTokenFP: r.AccessTokenFP}, nil
	}, func(c *domain.Connection, p domain.Payload) {
		if ar := p.(domain.AccessRejected); ar.Terminal {
			terminal = true
			s.cfg.Gate.CloseAfter(id, ar.Reason, c.Version)
		}
	})
	if err != nil {
		return c, err
	}
	s.log.Warn("api call rejected", "connection_id", id, "http_status", r.Status, "error_code", code, "terminal", terminal)
	if terminal {
		s.log.Error("token expiry or revocation detected", "connection_id", id, "reason", string(domain.ReasonAccessTokenRejected), "source", "api_call")
		if err := s.invalidate(ctx, id); err != nil {
			s.log.Error("token invalidation failed", "connection_id", id, "error", err.Error())
		}
		return s.cfg.Store.Load(ctx, id)
	}
	if r.Status == 401 && c.State == domain.StateActive && current {
		err := s.Refresh(ctx, id, domain.TriggerAccessRejected)
		var te *TerminalError
		if err != nil && !errors.As(err, &te) && !errors.Is(err, domain.ErrConflict) && !errors.Is(err, ErrNotDue) {
			var f *domain.Failure
			if !errors.As(err, &f) { // transient failures are scheduled, not reported
				return c, err
			}
		}
	}
	return s.cfg.Store.Load(ctx, id)
}

// Check is the gate check with this instance's slow path: a connection
// refreshed by another instance has its new token loaded from the vault once.
// The Service thereby satisfies roundtrip.TokenSource.
func (s *Service) Check(connectionID string) (string, error) {
	tok, err := s.cfg.Gate.Check(connectionID)
	if err == nil {
		return tok, nil
	}
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, _, err = s.Token(ctx, connectionID)
	return tok, err
}

// Reporter adapts the Service to roundtrip.Reporter.
type Reporter struct{ S *Service }

// ReportRejection implements roundtrip.Reporter.
func (r Reporter) ReportRejection(ctx context.Context, connectionID string, status int, wwwAuthenticate, accessTokenFP string) error {
	_, err := r.S.ReportRejection(ctx, connectionID, Rejection{Status: status, WWWAuthenticate: wwwAuthenticate, AccessTokenFP: accessTokenFP})
	return err
}

// putTokens writes the vault, retrying a failed write up to three times
// within the refresh lease.
func (s *Service) putTokens(ctx context.Context, id string, t domain.Tokens) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = s.cfg.Vault.Put(ctx, id, t); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(100*(attempt+1)) * time.Millisecond):
		}
	}
	return err
}
