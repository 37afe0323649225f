package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

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

// ReportRejection is the detection path for API calls. A 401 (invalid_token,
// or no error parameter) appends access.rejected and tries one refresh; if
// that fails terminally, or the token it issued is rejected again, the
// connection goes unauthenticated (access_token_rejected). A 403
// insufficient_scope is recorded and does not log the connection out.
func (s *Service) ReportRejection(ctx context.Context, id string, r Rejection) (domain.Connection, error) {
	if r.Status != 401 && r.Status != 403 {
		return domain.Connection{}, fmt.Errorf("%w: status must be 401 or 403", domain.ErrInvalidCommand)
	}
	code, scope, _ := domain.BearerError(r.WWWAuthenticate)
	if r.Status == 401 && code == "" {
		code = "invalid_token"
	}
	var current bool
	c, e, err := s.transact(ctx, id, nil, func(c *domain.Connection) (domain.Command, error) {
		// Without a fingerprint the rejected token is assumed to be the
		// current one, except right after a refresh made because of a
		// rejection: a late report about the previous token must neither
		// refresh again nor condemn the fresh token (only a matching
		// fingerprint can make a rejection terminal).
		current = r.AccessTokenFP == c.Tokens.AccessTokenFP || (r.AccessTokenFP == "" && !c.RecoveringFromRejection)
		return domain.RejectAccess{HTTPStatus: r.Status, ErrorCode: code, Scope: scope, AccessTokenFP: r.AccessTokenFP}, nil
	}, true)
	if err != nil {
		return c, err
	}
	terminal := e.Payload.(domain.AccessRejected).Terminal
	s.log.Warn("api call rejected", "connection_id", id, "http_status", r.Status, "error_code", code, "terminal", terminal)
	if terminal {
		s.log.Error("token expiry or revocation detected", "connection_id", id, "reason", string(domain.ReasonAccessTokenRejected), "source", "api_call")
		if err := s.invalidate(ctx, &c); err != nil {
			s.log.Error("token invalidation failed", "connection_id", id, "error", err.Error())
			return s.cfg.Store.Load(ctx, id)
		}
		return c, nil
	}
	if r.Status != 401 || c.State != domain.StateActive || !current {
		return c, nil
	}
	after, err := s.refresh(ctx, id, domain.TriggerAccessRejected)
	var te *TerminalError
	var f *domain.Failure
	switch {
	case err == nil, errors.As(err, &te), errors.As(err, &f):
		// Recorded: a terminal failure made the connection unauthenticated,
		// a transient one is scheduled for retry.
		return after, nil
	case errors.Is(err, domain.ErrConflict), errors.Is(err, ErrNotDue):
		return s.cfg.Store.Load(ctx, id) // another instance acted: report what it did
	}
	return c, err
}

// Token returns the connection's access token if the gate is open, with its
// expiry. On an instance that has not seen the token yet (another instance
// refreshed it), it loads it from the vault once.
func (s *Service) Token(ctx context.Context, id string) (string, time.Time, error) {
	tok, err := s.cfg.Gate.Check(id)
	if err == nil {
		return tok, s.expiry(id), nil
	}
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		return "", time.Time{}, err
	}
	t, verr := s.cfg.Vault.Get(ctx, id)
	if verr != nil {
		return "", time.Time{}, err
	}
	_ = s.cfg.Gate.SetToken(id, domain.Fingerprint(t.AccessToken), t.AccessToken)
	tok, err = s.cfg.Gate.Check(id)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, t.Expiry, nil
}

// Check is the gate check with this instance's slow path: a connection
// refreshed by another instance has its new token loaded from the vault once.
// The Service thereby satisfies roundtrip.TokenSource.
func (s *Service) Check(ctx context.Context, connectionID string) (string, error) {
	tok, err := s.cfg.Gate.Check(connectionID)
	if err == nil {
		return tok, nil
	}
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		return "", err
	}
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

// expiry is the access-token expiry the scheduler knows for a connection.
func (s *Service) expiry(id string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.sched[id]; ok {
		return e.expiresAt
	}
	return time.Time{}
}
