package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Rejection is an API call's rejection reported by an integration (or
// found by a probe).
type Rejection struct {
	// Status is the answer's HTTP status: 401 or 403, or any status the
	// provider's detection rules mark as dead.
	Status int
	// WWWAuthenticate is the response's WWW-Authenticate header.
	WWWAuthenticate string
	// Body is at most domain.MaxRejectionBody bytes of the answer's body,
	// for the provider's body rules (optional).
	Body []byte
	// AccessTokenFP is the fingerprint of the token the call used; empty
	// means the connection's current token.
	AccessTokenFP string
	// Source names who found it in logs: "api_call" (default) or "probe".
	Source string
	// dead skips the rules: an introspection said the grant is inactive.
	dead bool
}

// ReportRejection is the detection path for API calls. The provider's
// detection rules (Config.Detection, domain.DetectionRules) judge the
// answer. A dead token (a 401, a Bearer invalid_token, or a provider rule)
// appends access.rejected and tries one refresh; if that fails terminally,
// or the token it issued is rejected again, the connection goes
// unauthenticated (access_token_rejected). Any other 401 or 403 (403
// insufficient_scope, a 403 no rule names) is recorded and does not log the
// connection out. Another status that no rule marks as dead is refused
// (domain.ErrInvalidCommand) and changes nothing.
func (s *Service) ReportRejection(ctx context.Context, id string, r Rejection) (domain.Connection, error) {
	if r.Status < 100 || r.Status > 599 {
		return domain.Connection{}, fmt.Errorf("%w: status must be an HTTP status (401, 403, or one the provider's detection rules name)", domain.ErrInvalidCommand)
	}
	if len(r.Body) > domain.MaxRejectionBody {
		return domain.Connection{}, fmt.Errorf("%w: the body is longer than %d bytes", domain.ErrInvalidCommand, domain.MaxRejectionBody)
	}
	_, scope, _ := domain.BearerError(r.WWWAuthenticate)
	var verdict domain.Verdict
	var code string
	var current bool
	c, e, err := s.transact(ctx, id, nil, func(c *domain.Connection) (domain.Command, error) {
		// Without a fingerprint the rejected token is assumed to be the
		// current one, except right after a refresh made because of a
		// rejection: a late report about the previous token must neither
		// refresh again nor condemn the fresh token (only a matching
		// fingerprint can make a rejection terminal).
		current = r.AccessTokenFP == c.Tokens.AccessTokenFP || (r.AccessTokenFP == "" && !c.RecoveringFromRejection)
		verdict, code = s.judge(c.Provider, r)
		if verdict != domain.VerdictDead && r.Status != 401 && r.Status != 403 {
			return nil, fmt.Errorf("%w: status %d is not a rejection under provider %q's detection rules (401, 403, a Bearer invalid_token challenge, or a rule of the providers file); nothing recorded", domain.ErrInvalidCommand, r.Status, c.Provider)
		}
		return domain.RejectAccess{HTTPStatus: r.Status, ErrorCode: code, Scope: scope, AccessTokenFP: r.AccessTokenFP}, nil
	}, true)
	if err != nil {
		return c, err
	}
	source := cmp.Or(r.Source, "api_call")
	terminal := e.Payload.(domain.AccessRejected).Terminal
	s.log.Warn("api call rejected", "connection_id", id, "http_status", r.Status, "error_code", code, "verdict", verdict.String(), "terminal", terminal, "source", source)
	if terminal {
		s.log.Error("token expiry or revocation detected", "connection_id", id, "reason", string(domain.ReasonAccessTokenRejected), "source", source)
		if err := s.invalidate(ctx, &c); err != nil {
			s.log.Error("token invalidation failed", "connection_id", id, "error", err.Error())
			return s.cfg.Store.Load(ctx, id)
		}
		return c, nil
	}
	if verdict != domain.VerdictDead || c.State != domain.StateActive || !current {
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

// judge applies the provider's detection rules to a rejection.
func (s *Service) judge(provider string, r Rejection) (domain.Verdict, string) {
	if r.dead {
		return domain.VerdictDead, "invalid_token"
	}
	var www []string
	if r.WWWAuthenticate != "" {
		www = []string{r.WWWAuthenticate}
	}
	return s.cfg.Detection[provider].Judge(r.Status, www, r.Body)
}

// DetectionRules returns the detection rules of a connection's provider
// (the default rules for a connection this instance has not seen). The
// RoundTripper judges answers with them (roundtrip.RulesSource); it is a
// map look-up.
func (s *Service) DetectionRules(connectionID string) domain.DetectionRules {
	p, _ := s.providerOf(connectionID) // known to every connection the gate has seen
	return s.cfg.Detection[p]
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

// ReportResponse implements roundtrip.ResponseReporter: the rejection with
// (at most domain.MaxRejectionBody bytes of) the answer's body, for the
// provider's body rules.
func (r Reporter) ReportResponse(ctx context.Context, connectionID string, status int, wwwAuthenticate string, body []byte, accessTokenFP string) error {
	_, err := r.S.ReportRejection(ctx, connectionID, Rejection{Status: status, WWWAuthenticate: wwwAuthenticate, Body: body, AccessTokenFP: accessTokenFP})
	return err
}

// DetectionRules implements roundtrip.RulesSource: the rules of the
// connection's provider.
func (r Reporter) DetectionRules(connectionID string) domain.DetectionRules {
	return r.S.DetectionRules(connectionID)
}

// expiry is the access-token expiry the scheduler knows for a connection.
func (s *Service) expiry(id string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.sched[id]; ok {
		return timeOf(e.expiresAt)
	}
	return time.Time{}
}
