package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// withoutRefresh returns a connection authorised with an access token that
// expires at exp (zero: never) and no refresh token.
func withoutRefresh(t *testing.T, exp time.Time) *hist {
	t.Helper()
	h := newHist()
	h.must(t, created())
	h.must(t, h.startAuth("att-1"))
	h.must(t, domain.AuthorisationCompleted{AttemptID: "att-1", Tokens: domain.Tokens{AccessToken: "at-1", Expiry: exp}.Info()})
	if h.c.State != A || h.c.Tokens.RefreshTokenFP != "" {
		t.Fatalf("setup: %+v", h.c)
	}
	return h
}

func TestExpireWithoutRefresh(t *testing.T) {
	exp := t0.Add(time.Hour)
	h := withoutRefresh(t, exp)
	// Not before the access token has expired.
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: exp.Add(-time.Second)}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("before expiry: %v", err)
	}
	p := h.mustExec(t, domain.ExpireWithoutRefresh{Now: exp})
	rf, ok := p.(domain.RefreshFailed)
	if !ok || !rf.Terminal || rf.Class != "terminal" || rf.Reason != domain.ReasonRefreshNotGranted ||
		rf.ErrorCode != domain.ErrorCodeNoRefreshToken || rf.Attempt != 1 || !rf.RetryAt.IsZero() {
		t.Fatalf("payload %#v", p)
	}
	if got := domain.TransitionName(p); got != domain.TransRefreshNotGranted {
		t.Fatalf("transition %q", got)
	}
	if h.c.State != U || h.c.Reason != domain.ReasonRefreshNotGranted || !h.c.TokensHeld || !h.c.NeedsReauthorisation() ||
		h.c.LastRefreshOK || h.c.LastErrorCode != domain.ErrorCodeNoRefreshToken {
		t.Fatalf("after: %+v", h.c)
	}
	// Then the tokens are destroyed, and the user reconnects.
	h.mustExec(t, domain.InvalidateTokens{})
	if h.c.TokensHeld || h.c.Reason != domain.ReasonRefreshNotGranted {
		t.Fatalf("after invalidation: %+v", h.c)
	}
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: exp.Add(time.Hour)}); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("again when unauthenticated: %v", err)
	}
}

func TestExpireWithoutRefreshRefused(t *testing.T) {
	late := t0.Add(100 * time.Hour)
	// A token without expiry never lapses.
	h := withoutRefresh(t, time.Time{})
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: late}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("non-expiring token: %v", err)
	}
	// A grant with a refresh token is refreshed, never lapsed.
	h = toActive(t)
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: late}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("with a refresh token: %v", err)
	}
	// Only from active: a refreshing connection (it has a refresh token)
	// is not active.
	h = refreshing(t, domain.TriggerSchedule)
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: late}); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("refreshing: %v", err)
	}
	// The new transition does not let other refresh failures leave active.
	h = withoutRefresh(t, t0.Add(time.Hour))
	for _, cmd := range []domain.Command{
		domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant"},
		domain.RecoverLease{Now: late},
	} {
		if _, err := h.exec(t, cmd); !errors.Is(err, domain.ErrInvalidTransition) {
			t.Fatalf("%T from active: %v", cmd, err)
		}
	}
	// Nor is a refresh.failed.not_granted applied from refreshing.
	h = refreshing(t, domain.TriggerSchedule)
	p := domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: domain.ErrorCodeNoRefreshToken, Attempt: 1, Reason: domain.ReasonRefreshNotGranted}
	if err := h.apply(p); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("apply from refreshing: %v", err)
	}
}

// A 401 against the token of a grant without a refresh token ends it at
// once: there is no refresh to try. A 403, or a report that names another
// token, is recorded only.
func TestRejectAccessWithoutRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		fp       func(h *hist) string
		terminal bool
	}{
		{"401 current token", 401, func(h *hist) string { return h.c.Tokens.AccessTokenFP }, true},
		{"401 token not named", 401, func(*hist) string { return "" }, true},
		{"401 another token", 401, func(*hist) string { return domain.Fingerprint("old") }, false},
		{"403", 403, func(h *hist) string { return h.c.Tokens.AccessTokenFP }, false},
		{"403 invalid_token (a dead answer)", 403, func(h *hist) string { return h.c.Tokens.AccessTokenFP }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := withoutRefresh(t, time.Time{})
			code := "invalid_token"
			if tc.name == "403" {
				code = "insufficient_scope"
			}
			p := h.mustExec(t, domain.RejectAccess{HTTPStatus: tc.status, ErrorCode: code, AccessTokenFP: tc.fp(h)})
			ar := p.(domain.AccessRejected)
			if ar.Terminal != tc.terminal {
				t.Fatalf("terminal %v, want %v", ar.Terminal, tc.terminal)
			}
			if tc.terminal && (h.c.State != U || h.c.Reason != domain.ReasonAccessTokenRejected) {
				t.Fatalf("after: %s %s", h.c.State, h.c.Reason)
			}
			if !tc.terminal && h.c.State != A {
				t.Fatalf("after: %s", h.c.State)
			}
		})
	}
	// With a refresh token, a first 401 is recorded and a refresh follows.
	h := toActive(t)
	if ar := h.mustExec(t, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.c.Tokens.AccessTokenFP}).(domain.AccessRejected); ar.Terminal {
		t.Fatal("a grant with a refresh token was ended by its first 401")
	}
}

// A refresh response without a refresh token keeps the one the
// connection had (RFC 6749 §6): its fingerprint stays and the refresh is
// recorded as not rotated.
func TestRefreshWithoutNewRefreshTokenKeepsTheOld(t *testing.T) {
	h := toActive(t)
	old := h.c.Tokens.RefreshTokenFP
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(30 * time.Second)})
	h.mustExec(t, domain.SucceedRefresh{Tokens: domain.TokenInfo{AccessTokenFP: domain.Fingerprint("at-new"), AccessTokenExpiresAt: h.now.Add(time.Hour)}})
	if h.c.Tokens.RefreshTokenFP != old || !h.c.RefreshTokenKept || h.c.State != A {
		t.Fatalf("after: %+v", h.c)
	}
	if _, err := h.exec(t, domain.ExpireWithoutRefresh{Now: h.now.Add(2 * time.Hour)}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("a kept refresh token still counts: %v", err)
	}
}
