package domain_test

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// refreshing returns an active connection that has started a refresh with
// the given trigger, through Decide.
func refreshing(t *testing.T, trigger string) *hist {
	t.Helper()
	h := toActive(t)
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second), Trigger: trigger})
	return h
}

func TestFailRefreshTransientThenExhausted(t *testing.T) {
	const maxAttempts = 3
	h := toActive(t)
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		p := h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second)})
		if rs := p.(domain.RefreshStarted); rs.Attempt != attempt || rs.Trigger != domain.TriggerSchedule {
			t.Fatalf("attempt %d: %+v", attempt, rs)
		}
		retryAt := h.now.Add(time.Duration(attempt) * time.Minute)
		p = h.mustExec(t, domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: retryAt, MaxAttempts: maxAttempts})
		rf := p.(domain.RefreshFailed)
		if rf.Attempt != attempt || rf.HTTPStatus != 503 || rf.ErrorCode != "temporarily_unavailable" {
			t.Fatalf("attempt %d: %+v", attempt, rf)
		}
		if attempt < maxAttempts {
			if rf.Terminal || rf.Reason != domain.ReasonNone || !rf.RetryAt.Equal(retryAt) || rf.Class != "transient" {
				t.Fatalf("attempt %d: %+v, want transient with RetryAt %v", attempt, rf, retryAt)
			}
			if h.c.State != A || h.c.TransientFailures != attempt || !h.c.RetryAt.Equal(retryAt) ||
				h.c.Reason != domain.ReasonNone || !h.c.LeaseUntil.IsZero() || h.c.LastRefreshOK || h.c.LastErrorCode != "temporarily_unavailable" {
				t.Fatalf("attempt %d: aggregate %+v", attempt, h.c)
			}
			continue
		}
		if !rf.Terminal || rf.Reason != domain.ReasonRefreshRetriesExhausted || !rf.RetryAt.IsZero() {
			t.Fatalf("attempt %d (max): %+v, want terminal refresh_retries_exhausted", attempt, rf)
		}
		if h.c.State != U || h.c.Reason != domain.ReasonRefreshRetriesExhausted || h.c.TransientFailures != 0 ||
			!h.c.RetryAt.IsZero() || !h.c.LeaseUntil.IsZero() || !h.c.NeedsReauthorisation() {
			t.Fatalf("after exhaustion: %+v", h.c)
		}
	}
}

func TestFailRefreshWithoutBoundStaysTransient(t *testing.T) {
	h := toActive(t)
	for i := 1; i <= 10; i++ {
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
		h.mustExec(t, domain.FailRefresh{HTTPStatus: 502, RetryAt: h.now.Add(time.Minute)})
		if h.c.State != A || h.c.TransientFailures != i {
			t.Fatalf("failure %d with MaxAttempts 0: %s, %d failures", i, h.c.State, h.c.TransientFailures)
		}
	}
}

func TestRefreshSuccessResetsTransientFailures(t *testing.T) {
	h := toActive(t)
	oldRefreshFP := h.c.Tokens.RefreshTokenFP
	for range 2 {
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
		h.mustExec(t, domain.FailRefresh{HTTPStatus: 503, RetryAt: h.now.Add(time.Minute), MaxAttempts: 3})
	}
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
	newTok := tokenInfo(50, h.now)
	newTok.RefreshTokenFP = "" // not rotated
	p := h.mustExec(t, domain.SucceedRefresh{Tokens: newTok})
	if p.(domain.RefreshSucceeded).Attempt != 3 {
		t.Errorf("success attempt %d, want 3", p.(domain.RefreshSucceeded).Attempt)
	}
	if h.c.State != A || h.c.TransientFailures != 0 || !h.c.RetryAt.IsZero() || !h.c.LastRefreshOK || h.c.LastErrorCode != "" || !h.c.LastRefreshAt.Equal(h.now) {
		t.Fatalf("after success: %+v", h.c)
	}
	if h.c.Tokens.AccessTokenFP != newTok.AccessTokenFP || h.c.Tokens.RefreshTokenFP != oldRefreshFP {
		t.Fatalf("tokens %+v: want new access fp and the kept refresh fp %s", h.c.Tokens, oldRefreshFP)
	}
	// The count starts again: two more transient failures are not exhaustion.
	for i := 1; i <= 2; i++ {
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
		h.mustExec(t, domain.FailRefresh{HTTPStatus: 503, RetryAt: h.now.Add(time.Minute), MaxAttempts: 3})
		if h.c.State != A || h.c.TransientFailures != i {
			t.Fatalf("failure %d after success: %s, %d", i, h.c.State, h.c.TransientFailures)
		}
	}
}

func TestTerminalErrorCodesMapToReasons(t *testing.T) {
	cases := map[string]domain.Reason{
		"invalid_grant":          domain.ReasonInvalidGrant,
		"invalid_client":         domain.ReasonInvalidClient,
		"unauthorized_client":    domain.ReasonUnauthorizedClient,
		"unsupported_grant_type": domain.ReasonUnsupportedGrantType,
		"invalid_scope":          domain.ReasonInvalidScope,
		"invalid_request":        domain.ReasonTokenEndpointRejected,
		"server_error":           domain.ReasonTokenEndpointRejected,
		"":                       domain.ReasonTokenEndpointRejected,
		"INVALID_GRANT":          domain.ReasonTokenEndpointRejected,
	}
	for code, want := range cases {
		if got := domain.ReasonForErrorCode(code); got != want {
			t.Errorf("ReasonForErrorCode(%q) = %q, want %q", code, got, want)
		}
		for _, trigger := range []string{domain.TriggerSchedule, domain.TriggerManual} {
			h := refreshing(t, trigger)
			p := h.mustExec(t, domain.FailRefresh{Terminal: true, ErrorCode: code, HTTPStatus: 400, MaxAttempts: 5})
			rf := p.(domain.RefreshFailed)
			if !rf.Terminal || rf.Class != "terminal" || rf.Reason != want || rf.ErrorCode != code || rf.Attempt != 1 {
				t.Errorf("%q (%s): %+v, want terminal %q", code, trigger, rf, want)
			}
			if h.c.State != U || h.c.Reason != want || h.c.LastErrorCode != code || !h.c.LeaseUntil.IsZero() || h.c.RefreshTrigger != "" {
				t.Errorf("%q (%s): aggregate %+v", code, trigger, h.c)
			}
		}
	}
}

func TestTerminalFailureOfRejectionRefreshIsAccessTokenRejected(t *testing.T) {
	for _, code := range []string{"invalid_grant", "invalid_client", "weird"} {
		h := toActive(t)
		h.mustExec(t, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP})
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), Trigger: domain.TriggerAccessRejected})
		p := h.mustExec(t, domain.FailRefresh{Terminal: true, ErrorCode: code, HTTPStatus: 400})
		if rf := p.(domain.RefreshFailed); rf.Reason != domain.ReasonAccessTokenRejected {
			t.Errorf("%s: reason %q, want access_token_rejected", code, rf.Reason)
		}
		if h.c.State != U || h.c.Reason != domain.ReasonAccessTokenRejected {
			t.Errorf("%s: %s (%s)", code, h.c.State, h.c.Reason)
		}
	}
	// A transient failure of such a refresh does not log out.
	h := toActive(t)
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), Trigger: domain.TriggerAccessRejected})
	h.mustExec(t, domain.FailRefresh{HTTPStatus: 503, RetryAt: h.now.Add(time.Minute), MaxAttempts: 3})
	if h.c.State != A || h.c.Reason != domain.ReasonNone {
		t.Errorf("transient failure of rejection refresh: %s (%s)", h.c.State, h.c.Reason)
	}
}

func TestRejectAccess(t *testing.T) {
	// recovering returns an active connection whose latest refresh was made
	// because the previous access token was rejected; it also returns the
	// rejected (old) fingerprint.
	recovering := func(t *testing.T) (*hist, string) {
		h := toActive(t)
		old := h.c.Tokens.AccessTokenFP
		h.mustExec(t, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: old})
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), Trigger: domain.TriggerAccessRejected})
		h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(2, h.now), Rotated: true})
		if !h.c.RecoveringFromRejection || h.c.Tokens.AccessTokenFP == old {
			t.Fatalf("not recovering: %+v", h.c)
		}
		return h, old
	}
	recorded := func(t *testing.T, h *hist, cmd domain.RejectAccess, state domain.State) {
		t.Helper()
		before := h.c.Clone()
		p := h.mustExec(t, cmd)
		ar := p.(domain.AccessRejected)
		want := domain.AccessRejected{HTTPStatus: cmd.HTTPStatus, ErrorCode: cmd.ErrorCode, Scope: cmd.Scope, AccessTokenFP: cmd.AccessTokenFP}
		if ar != want {
			t.Fatalf("%+v: event %+v, want %+v", cmd, ar, want)
		}
		// Only the bookkeeping of having applied one more event changes.
		before.Version, before.Events, before.Head = h.c.Version, h.c.Events, h.c.Head
		if h.c.State != state || !reflect.DeepEqual(h.c, before) {
			t.Fatalf("%+v: recorded rejection changed the aggregate:\nbefore %+v\nafter  %+v", cmd, before, h.c)
		}
	}

	t.Run("401 on active is recorded", func(t *testing.T) {
		h := toActive(t)
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP}, A)
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP}, A)
	})
	t.Run("401 while refreshing is recorded", func(t *testing.T) {
		h := refreshing(t, domain.TriggerAccessRejected)
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP}, F)
	})
	t.Run("401 on the recovered token is terminal", func(t *testing.T) {
		h, _ := recovering(t)
		p := h.mustExec(t, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP})
		if ar := p.(domain.AccessRejected); !ar.Terminal || ar.Reason != domain.ReasonAccessTokenRejected {
			t.Fatalf("event %+v, want terminal access_token_rejected", ar)
		}
		if h.c.State != U || h.c.Reason != domain.ReasonAccessTokenRejected || h.c.RecoveringFromRejection {
			t.Fatalf("aggregate %+v", h.c)
		}
	})
	t.Run("401 on the old token while recovering is recorded", func(t *testing.T) {
		h, old := recovering(t)
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: old}, A)
	})
	t.Run("401 without fingerprint while recovering is recorded", func(t *testing.T) {
		h, _ := recovering(t)
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token"}, A)
	})
	t.Run("403 insufficient_scope never logs out", func(t *testing.T) {
		h, _ := recovering(t)
		for range 3 {
			recorded(t, h, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "expenses:write", AccessTokenFP: h.c.Tokens.AccessTokenFP}, A)
		}
		h2 := toActive(t)
		recorded(t, h2, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "expenses:write", AccessTokenFP: h2.c.Tokens.AccessTokenFP}, A)
	})
	t.Run("scheduled refresh ends recovery", func(t *testing.T) {
		h, _ := recovering(t)
		h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), Trigger: domain.TriggerSchedule})
		h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(3, h.now)})
		if h.c.RecoveringFromRejection {
			t.Fatal("still recovering after a scheduled refresh")
		}
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP}, A)
	})
	t.Run("reauthorisation ends recovery", func(t *testing.T) {
		h, _ := recovering(t)
		h.mustExec(t, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.c.Tokens.AccessTokenFP})
		h.mustExec(t, domain.InvalidateTokens{})
		h.mustExec(t, domain.StartAuthorisation{AttemptID: "att-9", ExpiresAt: h.now.Add(time.Minute)})
		h.mustExec(t, domain.CompleteAuthorisation{AttemptID: "att-9", Tokens: tokenInfo(9, h.now)})
		if h.c.State != A || h.c.RecoveringFromRejection {
			t.Fatalf("after reauthorisation: %+v", h.c)
		}
		recorded(t, h, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.c.Tokens.AccessTokenFP}, A)
	})
	t.Run("other statuses are invalid", func(t *testing.T) {
		h := toActive(t)
		for _, st := range []int{0, 200, 400, 404, 429, 500} {
			if _, err := h.exec(t, domain.RejectAccess{HTTPStatus: st, AccessTokenFP: h.c.Tokens.AccessTokenFP}); !errors.Is(err, domain.ErrInvalidCommand) {
				t.Errorf("status %d: %v, want ErrInvalidCommand", st, err)
			}
		}
	})
	t.Run("not in unauthenticated or reauthorising", func(t *testing.T) {
		for _, sc := range scenarios {
			if sc.state != U && sc.state != R {
				continue
			}
			h := sc.build(t)
			if _, err := h.exec(t, domain.RejectAccess{HTTPStatus: 401}); !errors.Is(err, domain.ErrInvalidTransition) {
				t.Errorf("%s/%s: %v, want ErrInvalidTransition", sc.state, sc.name, err)
			}
		}
	})
}

// A recovered lease is terminal (rotated_tokens_lost): the dead refresher
// may have sent the refresh token, which the provider may have replaced, so
// it is never presented again.
func TestRecoverLease(t *testing.T) {
	h := refreshing(t, domain.TriggerSchedule)
	lease := h.c.LeaseUntil
	for _, now := range []time.Time{time.Time{}, h.now, lease.Add(-time.Nanosecond)} {
		if _, err := h.exec(t, domain.RecoverLease{Now: now}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("RecoverLease at %v (lease until %v): %v, want ErrInvalidCommand", now, lease, err)
		}
		if h.c.State != F || !h.c.LeaseUntil.Equal(lease) {
			t.Fatalf("refused recovery changed the aggregate: %+v", h.c)
		}
	}
	now := lease.Add(time.Second)
	p := h.mustExec(t, domain.RecoverLease{Now: now})
	want := domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "lease_expired", Attempt: 1, Reason: domain.ReasonRotatedTokensLost}
	if rf := p.(domain.RefreshFailed); !reflect.DeepEqual(rf, want) {
		t.Fatalf("event %+v, want %+v", rf, want)
	}
	if h.c.State != U || h.c.Reason != domain.ReasonRotatedTokensLost || !h.c.LeaseUntil.IsZero() || h.c.RefreshTrigger != "" || h.c.LastErrorCode != "lease_expired" {
		t.Fatalf("after recovery: %+v", h.c)
	}
	// Nothing to recover once unauthenticated.
	if _, err := h.exec(t, domain.RecoverLease{Now: now.Add(time.Hour)}); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("RecoverLease on unauthenticated: %v, want ErrInvalidTransition", err)
	}
}

// A provider that kept the refresh token on the last refresh (rotated
// false) does not rotate: presenting it again is harmless, so a recovered
// lease is a transient failure and the refresh is retried.
func TestRecoverLeaseOfAProviderThatKeepsRefreshTokens(t *testing.T) {
	h := toActive(t)
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second)})
	h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(5, h.now), Rotated: false})
	if !h.c.RefreshTokenKept {
		t.Fatal("RefreshTokenKept not set by a refresh without rotation")
	}
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second)})
	now := h.c.LeaseUntil.Add(time.Second)
	p := h.mustExec(t, domain.RecoverLease{Now: now})
	want := domain.RefreshFailed{Class: "transient", ErrorCode: "lease_expired", Attempt: 1, RetryAt: now}
	if rf := p.(domain.RefreshFailed); !reflect.DeepEqual(rf, want) {
		t.Fatalf("event %+v, want %+v", rf, want)
	}
	if h.c.State != A || !h.c.LeaseUntil.IsZero() || h.c.TransientFailures != 1 || !h.c.RetryAt.Equal(now) {
		t.Fatalf("after recovery: %+v", h.c)
	}
	// A rotating refresh clears it again.
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second)})
	h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(6, h.now), Rotated: true})
	if h.c.RefreshTokenKept {
		t.Fatal("RefreshTokenKept after a rotation")
	}
}

// The holder extends its lease: only a later end is accepted, and a
// recovery is refused until the extended lease has ended.
func TestExtendLease(t *testing.T) {
	h := refreshing(t, domain.TriggerSchedule)
	lease := h.c.LeaseUntil
	for _, until := range []time.Time{time.Time{}, lease, lease.Add(-time.Second)} {
		if _, err := h.exec(t, domain.ExtendLease{LeaseUntil: until}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("ExtendLease to %v (lease until %v): %v, want ErrInvalidCommand", until, lease, err)
		}
	}
	ext := lease.Add(30 * time.Second)
	p := h.mustExec(t, domain.ExtendLease{LeaseUntil: ext})
	if !reflect.DeepEqual(p, domain.RefreshLeaseExtended{LeaseUntil: ext}) || h.c.State != F || !h.c.LeaseUntil.Equal(ext) || h.c.RefreshTrigger != domain.TriggerSchedule {
		t.Fatalf("event %+v, aggregate %+v", p, h.c)
	}
	if _, err := h.exec(t, domain.RecoverLease{Now: lease.Add(time.Second)}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("recovered an extended lease: %v", err)
	}
	h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(5, h.now), Rotated: true})
	if _, err := h.exec(t, domain.ExtendLease{LeaseUntil: ext.Add(time.Minute)}); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("ExtendLease on active: %v, want ErrInvalidTransition", err)
	}
}

func TestAuthorisationAttemptMustBeTheOpenOne(t *testing.T) {
	h := newHist()
	h.mustExec(t, domain.Create{Provider: "pleo", Scopes: []string{"expenses:read"}})
	h.mustExec(t, domain.StartAuthorisation{AttemptID: "att-1", ExpiresAt: h.now.Add(time.Minute)})
	h.mustExec(t, domain.StartAuthorisation{AttemptID: "att-2", ExpiresAt: h.now.Add(time.Minute)}) // restart
	if h.c.AttemptID != "att-2" || h.c.State != R {
		t.Fatalf("after restart: %+v", h.c)
	}
	for _, id := range []string{"att-1", "", "ATT-2", "att-3"} {
		before := h.c.Clone()
		for _, cmd := range []domain.Command{
			domain.CompleteAuthorisation{AttemptID: id, Tokens: tokenInfo(1, h.now)},
			domain.FailAuthorisation{AttemptID: id, ErrorCode: "access_denied"},
			domain.FailAuthorisation{AttemptID: id, Expired: true},
		} {
			if _, err := h.exec(t, cmd); !errors.Is(err, domain.ErrInvalidCommand) {
				t.Errorf("%#v: %v, want ErrInvalidCommand", cmd, err)
			}
			if !reflect.DeepEqual(h.c, before) {
				t.Fatalf("%#v refused but changed the aggregate", cmd)
			}
		}
	}
	for _, tc := range []struct {
		expired bool
		want    domain.Reason
	}{{false, domain.ReasonAuthorisationDenied}, {true, domain.ReasonAuthorisationExpired}} {
		h2 := *h
		h2.c = h.c.Clone()
		h2.events = slices.Clone(h.events)
		p := h2.mustExec(t, domain.FailAuthorisation{AttemptID: "att-2", Expired: tc.expired, ErrorCode: "access_denied", Description: "no"})
		if af := p.(domain.AuthorisationFailed); af.Reason != tc.want || af.AttemptID != "att-2" {
			t.Errorf("expired=%v: %+v", tc.expired, af)
		}
		if h2.c.State != U || h2.c.Reason != tc.want || h2.c.AttemptID != "" || !h2.c.AttemptExpiresAt.IsZero() {
			t.Errorf("expired=%v: aggregate %+v", tc.expired, h2.c)
		}
	}
	tok := tokenInfo(1, h.now)
	h.mustExec(t, domain.CompleteAuthorisation{AttemptID: "att-2", Tokens: tok})
	if h.c.State != A || h.c.Reason != domain.ReasonNone || h.c.AttemptID != "" || !h.c.TokensHeld || !reflect.DeepEqual(h.c.Tokens, tok) {
		t.Fatalf("after completion: %+v", h.c)
	}
	// Outside reauthorising there is no attempt to complete or fail.
	for _, cmd := range []domain.Command{domain.CompleteAuthorisation{AttemptID: "att-2"}, domain.FailAuthorisation{AttemptID: "att-2"}} {
		if _, err := h.exec(t, cmd); !errors.Is(err, domain.ErrInvalidTransition) {
			t.Errorf("%T on active: %v, want ErrInvalidTransition", cmd, err)
		}
	}
}

// Authorisation, its failure and reauthorisation never change configuration
// or scopes.
func TestAuthorisationIsNonDestructive(t *testing.T) {
	scopes := []string{"expenses:read", "users:read", "offline_access"}
	cfg := map[string]string{"company": "acme", "export": "daily"}
	h := newHist()
	h.mustExec(t, domain.Create{Provider: "pleo", Scopes: slices.Clone(scopes), Config: maps.Clone(cfg)})
	same := func(step string) {
		t.Helper()
		if !slices.Equal(h.c.Scopes, scopes) || !maps.Equal(h.c.Config, cfg) || h.c.Provider != "pleo" {
			t.Fatalf("%s: scopes %v config %v", step, h.c.Scopes, h.c.Config)
		}
	}
	same("created")
	steps := []struct {
		name string
		cmd  func() domain.Command
	}{
		{"start", func() domain.Command {
			return domain.StartAuthorisation{AttemptID: "a1", ExpiresAt: h.now.Add(time.Minute)}
		}},
		{"deny", func() domain.Command { return domain.FailAuthorisation{AttemptID: "a1", ErrorCode: "access_denied"} }},
		{"restart", func() domain.Command {
			return domain.StartAuthorisation{AttemptID: "a2", ExpiresAt: h.now.Add(time.Minute)}
		}},
		{"expire", func() domain.Command { return domain.FailAuthorisation{AttemptID: "a2", Expired: true} }},
		{"start again", func() domain.Command {
			return domain.StartAuthorisation{AttemptID: "a3", ExpiresAt: h.now.Add(time.Minute)}
		}},
		{"complete", func() domain.Command {
			return domain.CompleteAuthorisation{AttemptID: "a3", Tokens: tokenInfo(1, h.now)}
		}},
		{"refresh", func() domain.Command { return domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)} }},
		{"revoked", func() domain.Command { return domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant"} }},
		{"invalidate", func() domain.Command { return domain.InvalidateTokens{ProviderRevoked: true} }},
		{"reauthorise", func() domain.Command {
			return domain.StartAuthorisation{AttemptID: "a4", ExpiresAt: h.now.Add(time.Minute)}
		}},
		{"complete again", func() domain.Command {
			return domain.CompleteAuthorisation{AttemptID: "a4", Tokens: tokenInfo(2, h.now)}
		}},
	}
	for _, st := range steps {
		p := h.mustExec(t, st.cmd())
		if as, ok := p.(domain.AuthorisationStarted); ok && !slices.Equal(as.Scopes, scopes) {
			t.Fatalf("%s: attempt requests scopes %v, want %v", st.name, as.Scopes, scopes)
		}
		same(st.name)
	}
	// After an update, the next attempt requests the new scopes.
	h.mustExec(t, domain.Update{Scopes: []string{"expenses:write"}})
	if !slices.Equal(h.c.Scopes, []string{"expenses:write"}) || !maps.Equal(h.c.Config, cfg) {
		t.Fatalf("scopes-only update: scopes %v config %v", h.c.Scopes, h.c.Config)
	}
	h.mustExec(t, domain.Update{Config: map[string]string{"company": "other"}})
	if !slices.Equal(h.c.Scopes, []string{"expenses:write"}) || h.c.Config["company"] != "other" || len(h.c.Config) != 1 {
		t.Fatalf("config-only update: scopes %v config %v", h.c.Scopes, h.c.Config)
	}
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
	h.mustExec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_scope"})
	h.mustExec(t, domain.InvalidateTokens{})
	p := h.mustExec(t, domain.StartAuthorisation{AttemptID: "a5", ExpiresAt: h.now.Add(time.Minute)})
	if as := p.(domain.AuthorisationStarted); !slices.Equal(as.Scopes, []string{"expenses:write"}) {
		t.Fatalf("attempt after update requests %v", as.Scopes)
	}
}

// The aggregate does not share slices or maps with the commands or events
// it was built from.
func TestAggregateDoesNotAliasInputs(t *testing.T) {
	scopes := []string{"expenses:read"}
	cfg := map[string]string{"company": "acme"}
	h := newHist()
	h.mustExec(t, domain.Create{Provider: "pleo", Scopes: scopes, Config: cfg})
	scopes[0] = "changed"
	cfg["company"] = "changed"
	if h.c.Scopes[0] != "expenses:read" || h.c.Config["company"] != "acme" {
		t.Fatalf("aggregate follows the caller's slice/map: %v %v", h.c.Scopes, h.c.Config)
	}
	c2 := h.c.Clone()
	c2.Scopes[0], c2.Config["company"] = "x", "x"
	if h.c.Scopes[0] != "expenses:read" || h.c.Config["company"] != "acme" {
		t.Fatal("Clone shares slices or maps")
	}
}

func TestInvalidScopesAndConfig(t *testing.T) {
	long := strings.Repeat("a", 128)
	manyScopes := make([]string, 64)
	manyCfg := map[string]string{}
	for i := range manyScopes {
		manyScopes[i] = "s" + strings.Repeat("x", i)
		manyCfg[manyScopes[i]] = "v"
	}
	good := []struct {
		scopes []string
		cfg    map[string]string
	}{
		{nil, nil},
		{[]string{"expenses:read", "offline_access", "https://api.example.com/x", "a!#[]~"}, map[string]string{"k": ""}},
		{[]string{long}, map[string]string{long: strings.Repeat("v", 4096)}},
		{manyScopes, manyCfg},
	}
	for i, g := range good {
		if err := domain.ValidateScopes(g.scopes); err != nil {
			t.Errorf("good %d: ValidateScopes: %v", i, err)
		}
		if err := domain.ValidateConfig(g.cfg); err != nil {
			t.Errorf("good %d: ValidateConfig: %v", i, err)
		}
		h := newHist()
		h.mustExec(t, domain.Create{Provider: "pleo", Scopes: g.scopes, Config: g.cfg})
		if g.scopes != nil || g.cfg != nil {
			h.mustExec(t, domain.Update{Scopes: g.scopes, Config: g.cfg})
		}
	}

	badScopes := [][]string{
		{""}, {"has space"}, {`quo"te`}, {`back\slash`}, {"tab\t"}, {"é"}, {"nl\n"},
		{long + "a"}, append(slices.Clone(manyScopes), "one-more"), {"ok", ""},
	}
	tooMany := maps.Clone(manyCfg)
	tooMany["one-more"] = "v"
	badCfg := []map[string]string{
		{"": "v"}, {long + "k": "v"}, {"k": strings.Repeat("v", 4097)}, tooMany,
	}
	h := toActive(t)
	before := h.c.Clone()
	for _, sc := range badScopes {
		if _, err := domain.Decide(&domain.Connection{}, domain.Create{Provider: "pleo", Scopes: sc}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("Create scopes %q: %v, want ErrInvalidCommand", sc, err)
		}
		if _, err := h.exec(t, domain.Update{Scopes: sc}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("Update scopes %q: %v, want ErrInvalidCommand", sc, err)
		}
	}
	for _, cfg := range badCfg {
		if _, err := domain.Decide(&domain.Connection{}, domain.Create{Provider: "pleo", Config: cfg}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("Create config with %d keys: %v, want ErrInvalidCommand", len(cfg), err)
		}
		if _, err := h.exec(t, domain.Update{Config: cfg}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("Update config with %d keys: %v, want ErrInvalidCommand", len(cfg), err)
		}
	}
	if _, err := domain.Decide(&domain.Connection{}, domain.Create{Scopes: []string{"a"}}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("Create without provider: %v, want ErrInvalidCommand", err)
	}
	if _, err := h.exec(t, domain.Update{}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("empty Update: %v, want ErrInvalidCommand", err)
	}
	if !reflect.DeepEqual(h.c, before) {
		t.Fatal("refused updates changed the aggregate")
	}
	// An explicitly empty list is an update (clears the scopes), unlike nil.
	h.mustExec(t, domain.Update{Scopes: []string{}})
	if h.c.Scopes == nil || len(h.c.Scopes) != 0 || !maps.Equal(h.c.Config, before.Config) {
		t.Errorf("Update{Scopes: []string{}}: scopes %#v config %v", h.c.Scopes, h.c.Config)
	}
}

func TestRequiredCommandFields(t *testing.T) {
	h := newHist()
	h.mustExec(t, domain.Create{Provider: "pleo"})
	for _, cmd := range []domain.Command{
		domain.StartAuthorisation{ExpiresAt: h.now.Add(time.Minute)},
		domain.StartAuthorisation{AttemptID: "a"},
	} {
		if _, err := h.exec(t, cmd); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("%#v: %v, want ErrInvalidCommand", cmd, err)
		}
	}
	expires := h.now.Add(time.Minute)
	h.mustExec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: expires})
	if h.c.AttemptID != "a" || !h.c.AttemptExpiresAt.Equal(expires) {
		t.Errorf("attempt not recorded: %+v", h.c)
	}
	h.mustExec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tokenInfo(1, h.now)})
	if _, err := h.exec(t, domain.StartRefresh{Trigger: domain.TriggerManual}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("StartRefresh without lease: %v, want ErrInvalidCommand", err)
	}
	p := h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), RefreshTokenFP: h.c.Tokens.RefreshTokenFP})
	if rs := p.(domain.RefreshStarted); rs.Trigger != domain.TriggerSchedule || rs.RefreshTokenFP != h.c.Tokens.RefreshTokenFP {
		t.Errorf("default trigger: %+v", rs)
	}
	if h.c.RefreshTrigger != domain.TriggerSchedule {
		t.Errorf("RefreshTrigger %q", h.c.RefreshTrigger)
	}
	// A second refresh cannot start while one is in flight.
	if _, err := h.exec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Hour)}); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Errorf("second StartRefresh: %v, want ErrInvalidTransition", err)
	}
	type unknown struct{ domain.Delete }
	if _, err := h.exec(t, unknown{}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("unknown command: %v, want ErrInvalidCommand", err)
	}
	if _, err := h.exec(t, nil); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("nil command: %v, want ErrInvalidCommand", err)
	}
}

func TestInvalidateTokens(t *testing.T) {
	h := toActive(t)
	tok := h.c.Tokens
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
	h.mustExec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_client"})
	p := h.mustExec(t, domain.InvalidateTokens{ProviderRevoked: true})
	want := domain.TokensInvalidated{Reason: domain.ReasonInvalidClient, AccessTokenFP: tok.AccessTokenFP, RefreshTokenFP: tok.RefreshTokenFP, ProviderRevoked: true}
	if p != want {
		t.Fatalf("event %+v, want %+v", p, want)
	}
	if h.c.TokensHeld || !reflect.DeepEqual(h.c.Tokens, domain.TokenInfo{}) || h.c.State != U || h.c.Reason != domain.ReasonInvalidClient {
		t.Fatalf("after invalidation: %+v", h.c)
	}
}

// A connection being deleted has its tokens destroyed first, whatever its
// state: tokens.invalidated (reason connection_deleted) makes an active or
// refreshing connection unauthenticated, then connection.deleted, after
// which nothing is accepted.
func TestInvalidateTokensBeforeDelete(t *testing.T) {
	for _, refreshing := range []bool{false, true} {
		h := toActive(t)
		tok := h.c.Tokens
		if refreshing {
			h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute)})
		}
		p := h.mustExec(t, domain.InvalidateTokens{ProviderRevoked: true, Reason: domain.ReasonConnectionDeleted})
		want := domain.TokensInvalidated{Reason: domain.ReasonConnectionDeleted, AccessTokenFP: tok.AccessTokenFP, RefreshTokenFP: tok.RefreshTokenFP, ProviderRevoked: true}
		if p != want {
			t.Fatalf("event %+v, want %+v", p, want)
		}
		if h.c.TokensHeld || h.c.State != U || h.c.Reason != domain.ReasonConnectionDeleted || !h.c.LeaseUntil.IsZero() || h.c.LeaseID != "" {
			t.Fatalf("after invalidation (refreshing %v): %+v", refreshing, h.c)
		}
		h.mustExec(t, domain.Delete{})
		for _, cmd := range []domain.Command{domain.InvalidateTokens{}, domain.InvalidateTokens{Reason: domain.ReasonConnectionDeleted}, domain.Delete{}} {
			if _, err := h.exec(t, cmd); !errors.Is(err, domain.ErrDeleted) {
				t.Fatalf("%T after connection.deleted: %v, want ErrDeleted", cmd, err)
			}
		}
	}
}

// Configuration keys with AuthorizeParamPrefix become extra authorization
// request parameters; the ones tokenline sets itself cannot be overridden.
func TestAuthorizeParamsFromConfig(t *testing.T) {
	cfg := map[string]string{"team": "finance", domain.AuthorizeParamPrefix + "urn_pleo_params_oauth_subject": "company-1"}
	if err := domain.ValidateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	got := domain.AuthorizeParams(cfg)
	if len(got) != 1 || got["urn_pleo_params_oauth_subject"] != "company-1" {
		t.Fatalf("AuthorizeParams = %v", got)
	}
	for _, reserved := range []string{"state", "redirect_uri", "code_challenge", "code_challenge_method", "scope", "client_id", "response_type", "",
		"REDIRECT_URI", "Redirect_Uri", "request", "request_uri", "Request_URI", "redirect_uri ", "a b", "x&redirect_uri=y", "p=q"} {
		err := domain.ValidateConfig(map[string]string{domain.AuthorizeParamPrefix + reserved: "x"})
		if !errors.Is(err, domain.ErrInvalidCommand) {
			t.Errorf("%q accepted as an authorize parameter: %v", reserved, err)
		}
	}
	// A value that is too long is blamed on its length, not on its key.
	err := domain.ValidateConfig(map[string]string{"team": strings.Repeat("x", 100000)})
	if !errors.Is(err, domain.ErrInvalidCommand) || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a too-long value: %v", err)
	}
}
