package lifecycle_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// nonExpiring is the env's token endpoint answering code exchanges without
// expires_in (adapters/provider then records no expiry when no refresh
// token came either).
type nonExpiring struct{ *memory.TokenEndpoint }

func (n nonExpiring) Exchange(ctx context.Context, code, verifier string, scopes []string) (domain.Tokens, error) {
	t, err := n.TokenEndpoint.Exchange(ctx, code, verifier, scopes)
	t.Expiry = time.Time{}
	return t, err
}

// withoutRefreshEnv is an env whose provider issues no refresh token, with
// one active connection; nonExpiringTokens makes its access token one
// without expiry.
func withoutRefreshEnv(t *testing.T, nonExpiringTokens bool) (e *env, id string, n int) {
	t.Helper()
	e = newEnv(t)
	e.tep.SetIssueRefreshTokens(false)
	if nonExpiringTokens {
		cfg := e.config()
		cfg.Providers = map[string]domain.TokenEndpoint{provider: nonExpiring{e.tep}}
		e.instance = e.newInstance(cfg)
	}
	id = e.active()
	c := e.load(id)
	if c.State != domain.StateActive || c.Tokens.RefreshTokenFP != "" || c.Tokens.AccessTokenExpiresAt.IsZero() == !nonExpiringTokens {
		t.Fatalf("setup: %+v", c)
	}
	return e, id, e.events(id)
}

// An access token with an expiry and no refresh token is handed out until
// it expires; then, with no refresh request, the connection is
// unauthenticated (refresh_not_granted, the gate closed before the event)
// and its tokens are destroyed.
func TestGrantWithoutRefreshTokenEndsAtExpiry(t *testing.T) {
	e, id, n := withoutRefreshEnv(t, false)
	exp := e.load(id).Tokens.AccessTokenExpiresAt
	kind, due, ok := lifecycle.PlannedJob(e.svc, id)
	if !ok || kind != "lapse" || !due.Equal(exp) {
		t.Fatalf("planned %q at %v (%v), want lapse at the expiry %v", kind, due, ok, exp)
	}
	e.expectOpen(e.instance, id)
	closedFirst := refusedWhileAppending[domain.RefreshFailed](e, id, domain.ReasonRefreshNotGranted)

	stop := e.run()
	e.tick(exp.Sub(e.clock.Now()) - time.Minute)
	e.tick(30 * time.Second)
	if got := e.events(id); got != n {
		t.Fatalf("%d events before expiry: %v", got-n, e.typesSince(id, n))
	}
	e.expectOpen(e.instance, id)
	e.tick(time.Minute)
	e.waitFor(id, "tokens.invalidated", hasType(domain.EventTokensInvalidated))
	stop()

	e.expectTypes(id, n, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	rf := find[domain.RefreshFailed](e, id)
	if !rf.Terminal || rf.Reason != domain.ReasonRefreshNotGranted || rf.ErrorCode != domain.ErrorCodeNoRefreshToken || domain.TransitionName(rf) != domain.TransRefreshNotGranted {
		t.Fatalf("refresh.failed %+v", rf)
	}
	if !closedFirst.Load() {
		t.Error("the gate was open while refresh.failed was appended")
	}
	c := e.load(id)
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonRefreshNotGranted || c.TokensHeld {
		t.Fatalf("after: %+v", c)
	}
	expectClosed(t, e.instance, id, domain.ReasonRefreshNotGranted)
	if _, err := e.vault.Get(e.ctx, id); !errors.Is(err, domain.ErrNoTokens) {
		t.Fatalf("vault after: %v", err)
	}
	if r := e.tep.Requests(memory.RequestRefresh); r != 0 {
		t.Fatalf("%d refresh requests, want none (nothing to present)", r)
	}
	if _, _, ok := lifecycle.PlannedJob(e.svc, id); ok {
		t.Fatal("a job is still planned")
	}
	// Reconnecting (after the operator added the scope) gives a grant again.
	id2 := id
	state, code := e.start(id2)
	if res, err := e.svc.HandleCallback(e.ctx, state, code, "", ""); err != nil || res.State != domain.StateActive {
		t.Fatalf("reconnect: %v %v", res, err)
	}
}

// A refresh asked for (an API rejection's, a manual one) of a grant
// without a refresh token sends nothing: before expiry it is not due,
// after it the connection ends as the scheduler would end it.
func TestRefreshOfGrantWithoutRefreshToken(t *testing.T) {
	e, id, n := withoutRefreshEnv(t, false)
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, lifecycle.ErrNotDue) {
		t.Fatalf("before expiry: %v, want ErrNotDue", err)
	}
	if got := e.events(id); got != n {
		t.Fatalf("before expiry: %v", e.typesSince(id, n))
	}
	e.clock.Set(e.load(id).Tokens.AccessTokenExpiresAt)
	var te *lifecycle.TerminalError
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.As(err, &te) || te.Reason != domain.ReasonRefreshNotGranted {
		t.Fatalf("at expiry: %v", err)
	}
	e.expectTypes(id, n, domain.EventRefreshFailed, domain.EventTokensInvalidated)
	if r := e.tep.Requests(memory.RequestRefresh); r != 0 {
		t.Fatalf("%d refresh requests", r)
	}
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); !errors.Is(err, lifecycle.ErrNotDue) {
		t.Fatalf("again: %v", err)
	}
}

// An access token without expiry and without refresh token stays active:
// nothing is ever planned for it, however far the clock moves; the gate
// hands it out with no expiry. A 401 against it ends it at once, without
// a refresh request.
func TestNonExpiringGrantWithoutRefreshToken(t *testing.T) {
	e, id, n := withoutRefreshEnv(t, true)
	if kind, due, ok := lifecycle.PlannedJob(e.svc, id); ok {
		t.Fatalf("planned %q at %v for a token that never expires", kind, due)
	}
	stop := e.run()
	for range 5 {
		e.tick(24 * time.Hour)
	}
	stop()
	if got := e.events(id); got != n {
		t.Fatalf("events after 5 days: %v", e.typesSince(id, n))
	}
	tok := e.expectOpen(e.instance, id)
	if got, exp, err := e.svc.Token(e.ctx, id); err != nil || got != tok || !exp.IsZero() {
		t.Fatalf("Token: %v, expiry %v", err, exp)
	}
	// A 403 is recorded only; a 401 against the token ends the grant.
	if c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 403, WWWAuthenticate: `Bearer error="insufficient_scope"`}); err != nil || c.State != domain.StateActive {
		t.Fatalf("403: %v %s", err, c.State)
	}
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401, WWWAuthenticate: `Bearer error="invalid_token"`, AccessTokenFP: domain.Fingerprint(tok)})
	if err != nil || c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected || c.TokensHeld {
		t.Fatalf("401: %v %+v", err, c)
	}
	e.expectTypes(id, n, domain.EventAccessRejected, domain.EventAccessRejected, domain.EventTokensInvalidated)
	if r := e.tep.Requests(memory.RequestRefresh); r != 0 {
		t.Fatalf("%d refresh requests", r)
	}
	expectClosed(t, e.instance, id, domain.ReasonAccessTokenRejected)
}
