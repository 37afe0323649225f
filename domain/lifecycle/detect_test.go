package lifecycle_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

func TestReportRejectionRefusesOtherStatuses(t *testing.T) {
	e, id, n := activeEnv(t)
	for _, st := range []int{200, 400, 500} {
		if _, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: st}); !errors.Is(err, domain.ErrInvalidCommand) {
			t.Fatalf("%d: %v", st, err)
		}
	}
	if _, err := e.svc.ReportRejection(e.ctx, unknownID, lifecycle.Rejection{Status: 401}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	if e.events(id) != n {
		t.Fatal("recorded")
	}
}

// 403 insufficient_scope is recorded and logs nobody out: no refresh.
func TestReportRejection403InsufficientScope(t *testing.T) {
	e, id, n := activeEnv(t)
	tok := e.expectOpen(e.instance, id)
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 403,
		WWWAuthenticate: `Bearer error="insufficient_scope", scope="admin"`, AccessTokenFP: domain.Fingerprint(tok)})
	if err != nil || c.State != domain.StateActive {
		t.Fatalf("%s %v", c.State, err)
	}
	e.expectTypes(id, n, domain.EventAccessRejected)
	ar := last[domain.AccessRejected](e, id)
	if ar.HTTPStatus != 403 || ar.ErrorCode != "insufficient_scope" || ar.Scope != "admin" || ar.Terminal || ar.AccessTokenFP != domain.Fingerprint(tok) {
		t.Fatalf("access.rejected %+v", ar)
	}
	if e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatal("refreshed on a 403")
	}
	if got := e.expectOpen(e.instance, id); got != tok {
		t.Fatal("gate")
	}
}

// A 401 refreshes once (trigger access_rejected); a 401 against the token
// that refresh issued is terminal (access_token_rejected).
func TestReportRejection401RefreshesThenIsTerminal(t *testing.T) {
	e, id, n := activeEnv(t)
	tok := e.expectOpen(e.instance, id)
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401, WWWAuthenticate: `Bearer realm="api"`, AccessTokenFP: domain.Fingerprint(tok)})
	if err != nil || c.State != domain.StateActive || !c.RecoveringFromRejection {
		t.Fatalf("%+v %v", c, err)
	}
	e.expectTypes(id, n, domain.EventAccessRejected, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
	if ar := find[domain.AccessRejected](e, id); ar.ErrorCode != "invalid_token" || ar.Terminal {
		t.Fatalf("access.rejected %+v", ar)
	}
	if rs := find[domain.RefreshStarted](e, id); rs.Trigger != domain.TriggerAccessRejected {
		t.Fatalf("refresh.started %+v", rs)
	}
	fresh := e.expectOpen(e.instance, id)
	if fresh == tok || c.Tokens.AccessTokenFP != domain.Fingerprint(fresh) {
		t.Fatal("the returned connection does not describe the fresh token")
	}

	// A late report about the old token (no fingerprint) neither refreshes
	// nor condemns the fresh token.
	m := e.events(id)
	c, err = e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401})
	if err != nil || c.State != domain.StateActive {
		t.Fatalf("%s %v", c.State, err)
	}
	e.expectTypes(id, m, domain.EventAccessRejected)
	if ar := last[domain.AccessRejected](e, id); ar.Terminal {
		t.Fatal("terminal without a fingerprint")
	}
	if e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("refreshed again")
	}
	// The same about the old token with its fingerprint: no refresh either.
	if _, err = e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401, AccessTokenFP: domain.Fingerprint(tok)}); err != nil || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatalf("old token reported: %v, %d refreshes", err, e.tep.Requests(memory.RequestRefresh))
	}

	// The fresh token rejected too: terminal.
	m = e.events(id)
	c, err = e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401, WWWAuthenticate: `Bearer error="invalid_token"`, AccessTokenFP: domain.Fingerprint(fresh)})
	if err != nil || c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected || c.TokensHeld {
		t.Fatalf("%+v %v", c, err)
	}
	e.expectTypes(id, m, domain.EventAccessRejected, domain.EventTokensInvalidated)
	if ar := find[domain.AccessRejected](e, id); !ar.Terminal || ar.Reason != domain.ReasonAccessTokenRejected {
		t.Fatalf("access.rejected %+v", ar)
	}
	expectClosed(t, e.instance, id, domain.ReasonAccessTokenRejected)
	if e.vault.Has(id) || e.tep.LiveGrants() != 0 || e.tep.Requests(memory.RequestRefresh) != 1 {
		t.Fatal("tokens not destroyed, or refreshed again")
	}
}

// A terminal rejection whose invalidation fails: the connection is
// reported as stored (unauthenticated, tokens still held for the
// scheduler to destroy).
func TestReportRejectionTerminalInvalidationFails(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	if _, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401}); err != nil {
		t.Fatal(err)
	}
	fresh := e.expectOpen(e.instance, id)
	e.vault.FailDeletes(1, errors.New("vault unreachable"))
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401, AccessTokenFP: domain.Fingerprint(fresh)})
	if err != nil || c.State != domain.StateUnauthenticated || !c.TokensHeld || c.Version != e.load(id).Version {
		t.Fatalf("%+v %v", c, err)
	}
	expectClosed(t, e.instance, id, domain.ReasonAccessTokenRejected)
}

// The refresh a 401 triggers fails: transiently (recorded, retried later;
// the report succeeds) or terminally (access_token_rejected).
func TestReportRejectionRefreshFails(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	e.tep.FailNext(memory.RequestRefresh, memory.Unavailable(0))
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401})
	if err != nil || c.State != domain.StateActive || c.TransientFailures != 1 {
		t.Fatalf("transient: %+v %v", c, err)
	}
	if rf := last[domain.RefreshFailed](e, id); rf.Terminal {
		t.Fatalf("refresh.failed %+v", rf)
	}

	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	c, err = e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401})
	if err != nil || c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected {
		t.Fatalf("terminal: %+v %v", c, err)
	}
	if rf := find[domain.RefreshFailed](e, id); !rf.Terminal || rf.Reason != domain.ReasonAccessTokenRejected || rf.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh.failed %+v", rf)
	}
	expectClosed(t, e.instance, id, domain.ReasonAccessTokenRejected)
}

// Another instance took the refresh lock first: the report returns what
// the store shows, without error.
func TestReportRejectionRefreshLosesTheLock(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	var raced bool
	e.store.BeforeAppend(func(cid string, _ uint64, ev domain.Event) {
		if _, ok := ev.Payload.(domain.RefreshStarted); ok && !raced {
			raced = true
			e.appendRaw(cid, domain.RefreshStarted{Attempt: 1, LeaseUntil: e.clock.Now().Add(30 * time.Second), Trigger: domain.TriggerAccessRejected})
		}
	})
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401})
	if err != nil || c.State != domain.StateRefreshing || c.Version != e.load(id).Version {
		t.Fatalf("%+v %v", c, err)
	}
	if e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatal("both refreshed")
	}
	// While another instance refreshes, a 401 is recorded only.
	n := e.events(id)
	if c, err = e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401}); err != nil || c.State != domain.StateRefreshing {
		t.Fatalf("%+v %v", c, err)
	}
	e.expectTypes(id, n, domain.EventAccessRejected)
}

func TestReportRejectionStoreFailures(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	appendErr := errors.New("stream unreachable")
	e.store.FailAppends(1, appendErr)
	if _, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401}); !errors.Is(err, appendErr) {
		t.Fatalf("append: %v", err)
	}
	// The refresh cannot load the connection.
	loadErr := errors.New("stream unreachable")
	e.store.OnAppend(func(ev domain.Event) {
		if _, ok := ev.Payload.(domain.AccessRejected); ok {
			e.store.FailLoads(1, loadErr)
		}
	})
	c, err := e.svc.ReportRejection(e.ctx, id, lifecycle.Rejection{Status: 401})
	if !errors.Is(err, loadErr) || c.State != domain.StateActive {
		t.Fatalf("load: %s %v", c.State, err)
	}
	if e.tep.Requests(memory.RequestRefresh) != 0 {
		t.Fatal("refreshed")
	}
}

func TestReporter(t *testing.T) {
	e := newEnv(t)
	id := e.active()
	r := lifecycle.Reporter{S: e.svc}
	if err := r.ReportRejection(e.ctx, id, 401, `Bearer error="invalid_token"`, ""); err != nil {
		t.Fatal(err)
	}
	if rs := find[domain.RefreshStarted](e, id); rs.Trigger != domain.TriggerAccessRejected {
		t.Fatal("no refresh")
	}
	if err := r.ReportRejection(e.ctx, id, 500, "", ""); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatal(err)
	}
}

// Token and Check: the gate's answer, with the slow path for a token
// another instance refreshed (loaded from the vault once).
func TestTokenAndCheck(t *testing.T) {
	e := newEnv(t)
	other := e.newInstance(e.config())
	id := e.active()

	tok, exp, err := e.svc.Token(e.ctx, id)
	if err != nil || tok != e.expectOpen(e.instance, id) || !exp.Equal(e.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("Token: %q %v %v", tok, exp, err)
	}
	// The other instance saw the events but was never handed the token.
	if _, err := other.gate.Check(id); err == nil {
		t.Fatal("the other gate has the token")
	} else {
		var ge *domain.GateError
		if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
			t.Fatalf("%v", err)
		}
	}
	gets := e.vault.Gets()
	if got, err := other.svc.Check(e.ctx, id); err != nil || got != tok {
		t.Fatalf("slow path: %q %v", got, err)
	}
	if got, err := other.svc.Check(e.ctx, id); err != nil || got != tok || e.vault.Gets() != gets+1 {
		t.Fatalf("second check: %q %v, %d vault reads", got, err, e.vault.Gets()-gets)
	}

	// A refresh on this instance: the other loads the new token.
	if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err != nil {
		t.Fatal(err)
	}
	fresh := e.expectOpen(e.instance, id)
	got, exp, err := other.svc.Token(e.ctx, id)
	if err != nil || got != fresh || !exp.Equal(e.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("other Token: %q %v %v", got, exp, err)
	}

	// The vault is unreachable: the gate's refusal stands.
	id2 := e.active()
	e.vault.FailGets(1, errors.New("vault unreachable"))
	_, _, err = other.svc.Token(e.ctx, id2)
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		t.Fatalf("vault down: %v", err)
	}

	// The vault is ahead of the stream (an interrupted refresh stored new
	// tokens): its token is not the one the events describe, so it is not
	// handed out.
	id3 := e.active()
	old, _ := e.vault.Get(e.ctx, id3)
	rotated, _, _ := e.tep.Refresh(e.ctx, old.RefreshToken, nil)
	_ = e.vault.Put(e.ctx, id3, rotated)
	if _, err := other.svc.Check(e.ctx, id3); !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		t.Fatalf("vault ahead: %v", err)
	}

	// A closed gate: the refusal with its reason, no vault read.
	e.tep.FailNext(memory.RequestRefresh, memory.InvalidGrant())
	_ = e.svc.Refresh(e.ctx, id, domain.TriggerManual)
	gets = e.vault.Gets()
	for _, in := range []instance{e.instance, other} {
		expectClosed(t, in, id, domain.ReasonInvalidGrant)
		if _, _, err := in.svc.Token(e.ctx, id); !errors.As(err, &ge) || ge.Reason != domain.ReasonInvalidGrant {
			t.Fatalf("Token of a closed connection: %v", err)
		}
	}
	if e.vault.Gets() != gets {
		t.Fatal("the vault was read for a closed connection")
	}
	// An unknown connection.
	if _, err := e.svc.Check(e.ctx, unknownID); !errors.As(err, &ge) || ge.Detail != domain.DetailUnknownConnection {
		t.Fatalf("unknown: %v", err)
	}
	// The token expired without a refresh.
	id4 := e.active()
	e.clock.Advance(15 * time.Minute)
	if _, _, err := e.svc.Token(e.ctx, id4); !errors.As(err, &ge) || ge.Detail != domain.DetailTokenExpired {
		t.Fatalf("expired: %v", err)
	}
}

// The provider's detection rules decide: with a 403 rule a 403 {} is a
// dead token (one refresh, like a 401); with a body rule a 200 error body
// is; without rules a 403 {} is recorded only and a 200 is refused.
func TestReportRejectionDetectionRules(t *testing.T) {
	rules := domain.DetectionRules{Rules: []domain.DetectionRule{
		{Status: 403},
		{Status: 200, Body: map[string]string{"ok": "false", "error": "invalid_auth"}},
	}}
	withRules := func(c *lifecycle.Config, _ *memory.TokenEndpointConfig) {
		c.Detection = map[string]domain.DetectionRules{provider: rules}
	}
	for _, c := range []struct {
		name   string
		rules  bool
		r      lifecycle.Rejection
		dead   bool
		refuse bool
	}{
		{"403 {} with rule", true, lifecycle.Rejection{Status: 403, Body: []byte(`{}`)}, true, false},
		{"403 insufficient_scope with rule", true, lifecycle.Rejection{Status: 403, WWWAuthenticate: `Bearer error="insufficient_scope"`}, false, false},
		{"200 invalid_auth with rule", true, lifecycle.Rejection{Status: 200, Body: []byte(`{"ok":false,"error":"invalid_auth"}`)}, true, false},
		{"200 ok with rule", true, lifecycle.Rejection{Status: 200, Body: []byte(`{"ok":true}`)}, false, true},
		{"403 {} default", false, lifecycle.Rejection{Status: 403, Body: []byte(`{}`)}, false, false},
		{"403 invalid_token default", false, lifecycle.Rejection{Status: 403, WWWAuthenticate: `Bearer error="invalid_token"`}, true, false},
		{"400 invalid_token default", false, lifecycle.Rejection{Status: 400, WWWAuthenticate: `Bearer error="invalid_token"`}, true, false},
		{"200 invalid_auth default", false, lifecycle.Rejection{Status: 200, Body: []byte(`{"ok":false,"error":"invalid_auth"}`)}, false, true},
		{"body too long", true, lifecycle.Rejection{Status: 403, Body: make([]byte, domain.MaxRejectionBody+1)}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []envOption
			if c.rules {
				opts = append(opts, withRules)
			}
			e, id, n := activeEnv(t, opts...)
			_, err := e.svc.ReportRejection(e.ctx, id, c.r)
			switch {
			case c.refuse:
				if !errors.Is(err, domain.ErrInvalidCommand) || e.events(id) != n {
					t.Fatalf("not refused: %v, %d events", err, e.events(id)-n)
				}
				return
			case err != nil:
				t.Fatal(err)
			case c.dead:
				e.expectTypes(id, n, domain.EventAccessRejected, domain.EventRefreshStarted, domain.EventRefreshSucceeded)
				if ar := find[domain.AccessRejected](e, id); ar.HTTPStatus != c.r.Status || ar.ErrorCode != "invalid_token" {
					t.Fatalf("access.rejected %+v", ar)
				}
			default:
				e.expectTypes(id, n, domain.EventAccessRejected)
				if e.tep.Requests(memory.RequestRefresh) != 0 {
					t.Fatal("refreshed")
				}
			}
		})
	}
}
