package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/events"
)

var authorised = []string{"connection.created", "authorisation.started", "authorisation.completed"}

// assertDeadThenRecover checks the end of a terminal scenario and that
// reauthorisation brings the same connection back with its configuration.
func assertDeadThenRecover(t *testing.T, in *instance, id string, reason domain.Reason, wantTail []string) {
	t.Helper()
	c := load(t, in, id)
	if c.State != domain.StateUnauthenticated || c.Reason != reason {
		t.Fatalf("state %s reason %s, want unauthenticated %s", c.State, c.Reason, reason)
	}
	got := history(t, in, id)
	if want := append(append([]string{}, authorised...), wantTail...); !equalSeq(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	if !vaultEmpty(t, in, id) {
		t.Fatal("vault still holds tokens")
	}
	if _, _, err := in.Lifecycle.Token(ctxT(t), id); !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("token handed out after terminal failure: err=%v", err)
	}
	authorise(t, in, id)
	c = load(t, in, id)
	if c.State != domain.StateActive || c.ID != id || c.Config["team"] != "finance" || len(c.Scopes) != 2 {
		t.Fatalf("after reauthorisation: %+v", c)
	}
	if tok, _, err := in.Lifecycle.Token(ctxT(t), id); err != nil || tok == "" {
		t.Fatalf("no token after reauthorisation: %v", err)
	}
	if vaultEmpty(t, in, id) {
		t.Fatal("vault empty after reauthorisation")
	}
}

var terminalTail = func(code string) []string {
	return []string{"refresh.started", "refresh.failed:terminal", "tokens.invalidated"}
}

func refreshNow(t *testing.T, in *instance, id string) error {
	t.Helper()
	return in.Lifecycle.Refresh(ctxT(t), id, domain.TriggerManual)
}

func TestRefreshTokenExpired(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	if err := refreshNow(t, in, id); err != nil { // a healthy refresh first: rotation works
		t.Fatal(err)
	}
	admin(t, in, "expire-refresh-tokens", nil, nil)
	var te *lifecycle.TerminalError
	if err := refreshNow(t, in, id); !errors.As(err, &te) || te.Reason != domain.ReasonInvalidGrant {
		t.Fatalf("refresh after expiry: %v", err)
	}
	assertDeadThenRecover(t, in, id, domain.ReasonInvalidGrant,
		[]string{"refresh.started", "refresh.succeeded", "refresh.started", "refresh.failed:terminal", "tokens.invalidated", "authorisation.started", "authorisation.completed"}[:5])
	if s := stats(t, in); s.TokenRequests.RefreshToken != 2 {
		t.Fatalf("sandbox saw %d refresh requests, want 2 (no retry of a terminal failure)", s.TokenRequests.RefreshToken)
	}
}

func TestUserRevokedAccess(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	admin(t, in, "revoke-grants", nil, nil)
	if err := refreshNow(t, in, id); !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("refresh after revocation: %v", err)
	}
	assertDeadThenRecover(t, in, id, domain.ReasonInvalidGrant, terminalTail("invalid_grant"))
	// The guide's three log lines: the refresh failure, the detection, the
	// reauthorisation trigger, each with the connection id and reason.
	logs := in.logs.String()
	for _, want := range []string{`"msg":"refresh failed"`, `"msg":"token expiry or revocation detected"`, `"msg":"reauthorisation triggered"`} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, want) && strings.Contains(line, id) {
				found = true
			}
		}
		if !found {
			t.Errorf("no log line %s for the connection", want)
		}
	}
	if !strings.Contains(logs, `"reason":"invalid_grant"`) {
		t.Error("logs do not carry the reason")
	}
}

func TestClientSecretRotated(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	var rot struct {
		ClientSecret string `json:"client_secret"`
	}
	admin(t, in, "rotate-client-secret", nil, &rot)
	if err := refreshNow(t, in, id); !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("refresh with the old secret: %v", err)
	}
	h, _ := in.Store.History(ctxT(t), id)
	rf := h[4].Payload.(domain.RefreshFailed)
	if rf.ErrorCode != "invalid_client" || rf.HTTPStatus != 401 {
		t.Fatalf("refresh.failed %+v", rf)
	}
	// Reconnecting before the operator installs the new secret fails at the
	// code exchange, with the exchange's reason (not "denied").
	u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := callback(t, in, consent(t, u)); !errors.Is(err, lifecycle.ErrDenied) {
		t.Fatalf("exchange with the old secret: %v", err)
	}
	if c := load(t, in, id); c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonInvalidClient {
		t.Fatalf("after a refused exchange: %s %s", c.State, c.Reason)
	}
	// The operator installs the new secret; the user reconnects.
	if err := in.Lifecycle.SetClientSecret("sandbox", rot.ClientSecret); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(in.logs.String(), rot.ClientSecret) {
		t.Fatal("the new client secret was logged")
	}
	authorise(t, in, id)
	if c := load(t, in, id); c.State != domain.StateActive || c.Config["team"] != "finance" {
		t.Fatalf("after reconnecting: %+v", c)
	}
	got := history(t, in, id)
	want := append(append([]string{}, authorised...), "refresh.started", "refresh.failed:terminal", "tokens.invalidated",
		"authorisation.started", "authorisation.failed", "authorisation.started", "authorisation.completed")
	if !equalSeq(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
}

func TestPolicyChangeRevokesEveryGrant(t *testing.T) {
	in := start(t, nil)
	var ids []string
	for i := 0; i < 3; i++ {
		id := create(t, in, map[string]string{"team": "finance"})
		authorise(t, in, id)
		ids = append(ids, id)
	}
	admin(t, in, "revoke-grants", nil, nil)
	for _, id := range ids {
		if err := refreshNow(t, in, id); !errors.Is(err, domain.ErrUnauthenticated) {
			t.Fatalf("refresh after policy change: %v", err)
		}
	}
	for _, id := range ids {
		assertDeadThenRecover(t, in, id, domain.ReasonInvalidGrant, terminalTail("invalid_grant"))
	}
}

// callAPI calls the sandbox's protected resource with the connection's token.
func callAPI(t *testing.T, in *instance, token string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, in.BaseURL+"/sandbox/api/me", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

func TestAPICallRejected401(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	tok, _, err := in.Lifecycle.Token(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := callAPI(t, in, tok); st != 200 {
		t.Fatalf("api with fresh token: %d", st)
	}
	admin(t, in, "revoke-grants", nil, nil)
	st, www := callAPI(t, in, tok)
	if st != 401 || !strings.Contains(www, "invalid_token") {
		t.Fatalf("api after revocation: %d %q", st, www)
	}
	c, err := in.Lifecycle.ReportRejection(ctxT(t), id, lifecycle.Rejection{Status: st, WWWAuthenticate: www, AccessTokenFP: domain.Fingerprint(tok)})
	if err != nil {
		t.Fatal(err)
	}
	if c.State != domain.StateUnauthenticated {
		t.Fatalf("after rejection: %s", c.State)
	}
	assertDeadThenRecover(t, in, id, domain.ReasonAccessTokenRejected,
		[]string{"access.rejected", "refresh.started", "refresh.failed:terminal", "tokens.invalidated"})
}

// A token that a refresh just issued and that is rejected again means a
// refresh cannot help: unauthenticated with access_token_rejected.
func TestFreshTokenRejectedAgain(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	rej := lifecycle.Rejection{Status: 401, WWWAuthenticate: `Bearer error="invalid_token"`}
	c, err := in.Lifecycle.ReportRejection(ctxT(t), id, rej)
	if err != nil || c.State != domain.StateActive {
		t.Fatalf("first rejection: %v %s", err, c.State)
	}
	// A late report without a fingerprint (about the old token, as far as
	// tokenline can tell) neither refreshes again nor condemns the new one.
	c, err = in.Lifecycle.ReportRejection(ctxT(t), id, rej)
	if err != nil || c.State != domain.StateActive {
		t.Fatalf("late report without fingerprint: %v %s", err, c.State)
	}
	// The fresh token itself rejected: a refresh cannot help.
	rej.AccessTokenFP = c.Tokens.AccessTokenFP
	c, err = in.Lifecycle.ReportRejection(ctxT(t), id, rej)
	if err != nil || c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected {
		t.Fatalf("second rejection: %v %+v", err, c)
	}
	assertDeadThenRecover(t, in, id, domain.ReasonAccessTokenRejected,
		[]string{"access.rejected", "refresh.started", "refresh.succeeded", "access.rejected", "access.rejected:terminal", "tokens.invalidated"})
}

func TestInsufficientScopeIsRecordedNotFatal(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	c, err := in.Lifecycle.ReportRejection(ctxT(t), id, lifecycle.Rejection{Status: 403, WWWAuthenticate: `Bearer error="insufficient_scope", scope="accounts:write"`})
	if err != nil || c.State != domain.StateActive {
		t.Fatalf("403: %v %s", err, c.State)
	}
	h, _ := in.Store.History(ctxT(t), id)
	ar := h[len(h)-1].Payload.(domain.AccessRejected)
	if ar.ErrorCode != "insufficient_scope" || ar.Scope != "accounts:write" || ar.Terminal {
		t.Fatalf("recorded %+v", ar)
	}
}

func TestTransientFailuresThenSuccessStaysConnected(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	admin(t, in, "faults", map[string]any{"status": 503, "count": 3}, nil)
	if err := refreshNow(t, in, id); err == nil || errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("first attempt should fail transiently: %v", err)
	}
	// The scheduler retries with backoff until the fourth attempt succeeds.
	eventually(t, 10*time.Second, "refresh.succeeded", func() bool {
		return contains(history(t, in, id), "refresh.succeeded")
	})
	want := append(append([]string{}, authorised...),
		"refresh.started", "refresh.failed", "refresh.started", "refresh.failed", "refresh.started", "refresh.failed", "refresh.started", "refresh.succeeded")
	got := history(t, in, id)
	if !hasPrefix(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	for _, e := range got {
		if strings.HasSuffix(e, ":terminal") || e == "tokens.invalidated" {
			t.Fatalf("a blip logged the connection out: %v", got)
		}
	}
	h, _ := in.Store.History(ctxT(t), id)
	for i, e := range h[3:9] {
		if rf, ok := e.Payload.(domain.RefreshFailed); ok && (rf.HTTPStatus != 503 || rf.Attempt != i/2+1 || rf.RetryAt.IsZero()) {
			t.Fatalf("transient failure %d: %+v", i/2+1, rf)
		}
	}
	if c := load(t, in, id); c.State != domain.StateActive || c.TransientFailures != 0 {
		t.Fatalf("after recovery: %+v", c)
	}
	if !strings.Contains(in.logs.String(), `"msg":"refresh failed"`) {
		t.Fatal("no log line for the refresh failures")
	}
}

func TestTransientFailuresBeyondBound(t *testing.T) {
	in := start(t, func(c *app.Config) { c.MaxAttempts = 3 })
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	admin(t, in, "faults", map[string]any{"status": 429, "count": 10, "retry_after": 0}, nil)
	_ = refreshNow(t, in, id)
	eventually(t, 10*time.Second, "unauthenticated", func() bool {
		return load(t, in, id).State == domain.StateUnauthenticated
	})
	c := load(t, in, id)
	if c.Reason != domain.ReasonRefreshRetriesExhausted {
		t.Fatalf("reason %s", c.Reason)
	}
	if s := stats(t, in); s.TokenRequests.RefreshToken != 3 {
		t.Fatalf("sandbox saw %d refresh requests, want exactly 3", s.TokenRequests.RefreshToken)
	}
	eventually(t, 5*time.Second, "tokens.invalidated", func() bool { return contains(history(t, in, id), "tokens.invalidated") })
	// Clear the leftover faults (they would hit the code exchange too): a new
	// plan of one fault replaces them, and one request consumes it.
	admin(t, in, "faults", map[string]any{"status": 503, "count": 1}, nil)
	resp, err := http.Post(in.BaseURL+"/sandbox/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=none"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("fault not consumed: %d", resp.StatusCode)
	}
	assertDeadThenRecover(t, in, id, domain.ReasonRefreshRetriesExhausted,
		[]string{"refresh.started", "refresh.failed", "refresh.started", "refresh.failed", "refresh.started", "refresh.failed:terminal", "tokens.invalidated"})
}

func TestCallbackStatesForgedExpiredReplayed(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	other := create(t, in, map[string]string{"team": "finance"})
	u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	q := consent(t, u)
	before := history(t, in, id)

	// Forged: a state tokenline never issued.
	if _, err := in.Lifecycle.HandleCallback(ctxT(t), "forged-"+q.Get("state")[:10], q.Get("code"), "", ""); !errors.Is(err, lifecycle.ErrStateUnknown) {
		t.Fatalf("forged state: %v", err)
	}
	// Missing.
	if _, err := in.Lifecycle.HandleCallback(ctxT(t), "", q.Get("code"), "", ""); !errors.Is(err, lifecycle.ErrStateMissing) {
		t.Fatalf("missing state: %v", err)
	}
	if got := history(t, in, id); !equalSeq(got, before) {
		t.Fatalf("a bad callback changed the stream: %v", got)
	}
	// The real one works once...
	if err := callback(t, in, q); err != nil {
		t.Fatal(err)
	}
	after := history(t, in, id)
	// ...and its replay is refused without a transition.
	if err := callback(t, in, q); !errors.Is(err, lifecycle.ErrStateUnknown) {
		t.Fatalf("replayed state: %v", err)
	}
	if got := history(t, in, id); !equalSeq(got, after) {
		t.Fatalf("a replayed callback changed the stream: %v", got)
	}
	// A state of a superseded attempt of another connection is refused.
	u1, _ := in.Lifecycle.StartAuthorisation(ctxT(t), other)
	q1 := consent(t, u1)
	if _, err := in.Lifecycle.StartAuthorisation(ctxT(t), other); err != nil {
		t.Fatal(err)
	}
	if err := callback(t, in, q1); !errors.Is(err, lifecycle.ErrStateMismatch) {
		t.Fatalf("superseded attempt: %v", err)
	}
	// Expired: the clock moves past the attempt's lifetime (10 minutes),
	// not as far as the good connection's refresh (its token lives an hour).
	in2 := create(t, in, map[string]string{"team": "finance"})
	u2, _ := in.Lifecycle.StartAuthorisation(ctxT(t), in2)
	q2 := consent(t, u2)
	in.advance(11 * time.Minute)
	if err := callback(t, in, q2); !errors.Is(err, lifecycle.ErrStateExpired) {
		t.Fatalf("expired state: %v", err)
	}
	// The abandoned attempt expires back to unauthenticated.
	eventually(t, 5*time.Second, "authorisation_expired", func() bool {
		c := load(t, in, in2)
		return c.State == domain.StateUnauthenticated && c.Reason == domain.ReasonAuthorisationExpired
	})
	if c := load(t, in, id); c.State != domain.StateActive {
		t.Fatalf("the good connection is %s", c.State)
	}
}

func TestConsentDenied(t *testing.T) {
	in := start(t, func(c *app.Config) { c.SandboxConsent = "deny" })
	id := create(t, in, map[string]string{"team": "finance"})
	u, _ := in.Lifecycle.StartAuthorisation(ctxT(t), id)
	q := consent(t, u)
	if q.Get("error") != "access_denied" {
		t.Fatalf("callback query %v", q)
	}
	if err := callback(t, in, q); !errors.Is(err, lifecycle.ErrDenied) {
		t.Fatalf("denied: %v", err)
	}
	c := load(t, in, id)
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAuthorisationDenied || c.Config["team"] != "finance" {
		t.Fatalf("after denial: %+v", c)
	}
}

// Two instances share the stream; 200 connections fall due together. The
// refresh.started append is the lock: the sandbox sees exactly one refresh
// request per connection and never a reused (replaced) refresh token.
//
// So that the instances really compete, the test holds both schedulers until
// every connection is due and then starts them together: both pick the same
// connections in the same order. A core NATS subscription on the connection
// subjects sees every append attempt, including those JetStream refuses, so
// the test checks that both instances tried to lock the same connections
// and that each won some, rather than one doing all the work alone.
func TestTwoInstancesOneRefreshPerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	const n = 200
	// Tokens live an hour and the clocks jump past their expiry: the
	// refreshed tokens are then not due again however slowly the machine
	// runs the rest of the test (with 8 s tokens a loaded machine refreshed
	// some connections a second time before the check).
	a := start(t, func(c *app.Config) { c.SandboxAccessTTL = time.Hour; c.Instance = "a" })
	b := start(t, func(c *app.Config) {
		c.Instance = "b"
		c.NATSURL = a.NATSURL()
		c.NATSCreds = a.NATSCredsFile()
		c.VaultKeyFile = sharedKey(t, a)
		c.Provider, c.ProviderName = "custom", "sandbox"
		c.ClientID, c.ClientSecret = a.Sandbox.ClientID(), a.Sandbox.ClientSecret()
		c.AuthURL, c.TokenURL = a.BaseURL+"/sandbox/oauth/authorize", a.BaseURL+"/sandbox/oauth/token"
	})
	a.StopScheduler()
	b.StopScheduler()
	attempts, err := a.Conn.SubscribeSync(events.SubjectAll)
	if err != nil {
		t.Fatal(err)
	}
	defer attempts.Unsubscribe()
	if err := a.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var setupErrs []string
	sem := make(chan struct{}, 16)
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gt := &goroutineT{TB: t, mu: &mu, errs: &setupErrs}
			ids[i] = create(gt, a, map[string]string{"team": "finance"})
			authorise(gt, a, ids[i])
		}()
	}
	wg.Wait()
	if len(setupErrs) > 0 {
		t.Fatalf("%d connections could not be set up; first: %s", len(setupErrs), setupErrs[0])
	}
	// Every connection is due once its access token has expired: both
	// instances' clocks move past the latest expiry. Both instances must
	// know every connection first.
	var due time.Time
	for _, id := range ids {
		if exp := load(t, a, id).Tokens.AccessTokenExpiresAt; exp.After(due) {
			due = exp
		}
	}
	lctx := ctxT(t)
	eventually(t, 10*time.Second, "instance b knows every connection", func() bool {
		for _, id := range ids {
			if c, err := b.Store.Load(lctx, id); err != nil || c.State != domain.StateActive {
				return false
			}
		}
		return true
	})
	a.advance(time.Until(due.Add(50 * time.Millisecond)))
	b.advance(time.Until(due.Add(50 * time.Millisecond)))

	ctx, stop := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	halt := func() { stop(); runs.Wait() }
	t.Cleanup(halt)
	ready := make(chan struct{})
	for _, in := range []*instance{a, b} {
		runs.Add(1)
		go func() { defer runs.Done(); <-ready; in.Lifecycle.Run(ctx) }()
	}
	close(ready)
	eventually(t, 30*time.Second, "every connection refreshed once", func() bool {
		for _, id := range ids {
			if !contains(history(t, a, id), "refresh.succeeded") {
				return false
			}
		}
		return true
	})
	// Freeze both schedulers (in-flight refreshes finish), then compare the
	// stream with the sandbox.
	halt()
	s := a.Sandbox.Stats()
	var started, succeeded int
	actors := map[string]int{}
	for _, id := range ids {
		h, err := b.Store.History(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		// Hour-long tokens: the next cycle cannot come due within the test
		// (the scheduler never plans one before a fifth of the lifetime), so
		// each connection is refreshed exactly once, and no refresh token is
		// ever presented twice.
		perConn, perToken := 0, map[string]int{}
		for _, e := range h {
			switch e.Type() {
			case domain.EventRefreshStarted:
				started++
				perConn++
				actors[e.Actor]++
				fp := e.Payload.(domain.RefreshStarted).RefreshTokenFP
				if perToken[fp]++; perToken[fp] > 1 {
					t.Fatalf("connection %s: refresh token %s refreshed twice", id, fp)
				}
			case domain.EventRefreshSucceeded:
				succeeded++
			case domain.EventRefreshFailed:
				t.Fatalf("connection %s: refresh failed: %+v", id, e.Payload)
			}
		}
		if perConn != 1 {
			t.Fatalf("connection %s refreshed %d times", id, perConn)
		}
	}
	if s.TokenRequests.RefreshToken != n || started != n || succeeded != n {
		t.Fatalf("sandbox refresh requests %d, refresh.started %d, succeeded %d; want %d each", s.TokenRequests.RefreshToken, started, succeeded, n)
	}
	if s.Errors["invalid_grant"] != 0 {
		t.Fatalf("invalid_grant %d", s.Errors["invalid_grant"])
	}

	// Every refresh.started either instance tried to append, accepted or
	// refused. Both schedulers were stopped after their last append was
	// answered, so a flush of the subscriber's connection delivers them all.
	if err := a.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	tried := map[string]map[string]int{} // connection -> actor -> attempts
	for k := 0; ; k++ {
		pending, _, err := attempts.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			break
		}
		if k > 1_000_000 {
			t.Fatal("the attempts subscription never drains")
		}
		m, err := attempts.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("undecodable event on %s: %v", m.Subject, err)
		}
		if e.Type() != domain.EventRefreshStarted {
			continue
		}
		if tried[e.ConnectionID] == nil {
			tried[e.ConnectionID] = map[string]int{}
		}
		tried[e.ConnectionID][e.Actor]++
	}
	if dropped, err := attempts.Dropped(); err != nil || dropped != 0 {
		t.Fatalf("the attempts subscription dropped %d messages (%v)", dropped, err)
	}
	perInstance := map[string]int{}
	contested, attemptsTotal := 0, 0
	for _, id := range ids {
		for actor, k := range tried[id] {
			perInstance[actor] += k
			attemptsTotal += k
		}
		if len(tried[id]) > 1 {
			contested++
		}
	}
	t.Logf("refreshes by instance: %v; refresh.started attempts by instance: %v; connections both tried: %d; refused attempts: %d",
		actors, perInstance, contested, attemptsTotal-started)
	for _, actor := range []string{"instance/a", "instance/b"} {
		if actors[actor] == 0 {
			t.Errorf("%s refreshed no connection: the other did all the work alone", actor)
		}
	}
	if contested == 0 || attemptsTotal == started {
		t.Errorf("the instances never competed for the same connection (%d attempts, %d accepted): the lock was not exercised", attemptsTotal, started)
	}
	for _, actor := range []string{"instance/a", "instance/b"} {
		if perInstance[actor] <= actors[actor] {
			t.Errorf("%s never lost the lock to the other instance", actor)
		}
	}
}

// goroutineT lets the shared helpers, which call t.Fatalf, run on a
// goroutine other than the test's: a fatal error is recorded and ends only
// that goroutine (runtime.Goexit runs its deferred calls); the test
// goroutine reports the recorded errors.
type goroutineT struct {
	testing.TB
	mu   *sync.Mutex
	errs *[]string
}

func (g *goroutineT) record(msg string) {
	g.mu.Lock()
	*g.errs = append(*g.errs, msg)
	g.mu.Unlock()
}

func (g *goroutineT) Error(args ...any)                 { g.record(fmt.Sprint(args...)) }
func (g *goroutineT) Errorf(format string, args ...any) { g.record(fmt.Sprintf(format, args...)) }
func (g *goroutineT) Fatal(args ...any)                 { g.record(fmt.Sprint(args...)); runtime.Goexit() }
func (g *goroutineT) Fatalf(format string, args ...any) {
	g.record(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (g *goroutineT) FailNow() { g.record("FailNow"); runtime.Goexit() }

// A refresher that took the lease and died (with its token request sent,
// or before sending it: the two cannot be told apart) is recovered a grace
// after its lease: the provider may have replaced the refresh token, so
// another instance records rotated_tokens_lost and never presents the old
// refresh token again (the sandbox sees no second refresh request and no
// reuse).
func TestDeadRefresherRecoveredAsRotatedTokensLost(t *testing.T) {
	for _, sent := range []bool{true, false} {
		t.Run(fmt.Sprintf("sent=%t", sent), func(t *testing.T) {
			in := start(t, func(c *app.Config) { c.RefreshLease = 2 * time.Second }) // the grace is the lease
			id := create(t, in, map[string]string{"team": "finance"})
			authorise(t, in, id)
			c := load(t, in, id)
			// The "dead" refresher: it appended refresh.started, maybe sent
			// its request, and never came back.
			p, err := domain.Decide(&c, domain.StartRefresh{LeaseUntil: time.Now().Add(300 * time.Millisecond), Trigger: domain.TriggerSchedule, RefreshTokenFP: c.Tokens.RefreshTokenFP})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := in.Store.Append(ctxT(t), id, c.Version, domain.Event{Actor: "instance/dead", Payload: p}); err != nil {
				t.Fatal(err)
			}
			if sent {
				toks, err := in.Vault.Get(ctxT(t), id)
				if err != nil {
					t.Fatal(err)
				}
				if _, rotated, err := in.Providers["sandbox"].Refresh(ctxT(t), toks.RefreshToken, toks.Scopes); err != nil || !rotated {
					t.Fatalf("the dead refresher's request: rotated %t, %v", rotated, err)
				}
			}
			if _, _, err := in.Lifecycle.Token(ctxT(t), id); !errors.Is(err, domain.ErrUnauthenticated) {
				t.Fatalf("token handed out while another instance holds the refresh lease: %v", err)
			}
			eventually(t, 10*time.Second, "recovery", func() bool {
				return contains(history(t, in, id), "tokens.invalidated")
			})
			c = load(t, in, id)
			if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonRotatedTokensLost {
				t.Fatalf("state %s (%s); events %v", c.State, c.Reason, history(t, in, id))
			}
			var wantRefreshes int64
			if sent {
				wantRefreshes = 1
			}
			if s := stats(t, in); s.TokenRequests.RefreshToken != wantRefreshes || s.RefreshTokenReuse != 0 {
				t.Fatalf("sandbox saw %d refresh requests, %d reuses; want %d, 0", s.TokenRequests.RefreshToken, s.RefreshTokenReuse, wantRefreshes)
			}
		})
	}
}

// Transient trouble at the token endpoint during the code exchange is
// retried within the callback: the code was not consumed.
func TestCodeExchangeRetriesTransientFailures(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance"})
	u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	q := consent(t, u)
	admin(t, in, "faults", map[string]any{"status": 503, "count": 2}, nil)
	if err := callback(t, in, q); err != nil {
		t.Fatalf("callback: %v", err)
	}
	if c := load(t, in, id); c.State != domain.StateActive {
		t.Fatalf("state %s", c.State)
	}
	if s := stats(t, in); s.TokenRequests.AuthorizationCode != 3 || s.FaultsInjected != 2 {
		t.Fatalf("sandbox saw %d code exchanges, %d faults", s.TokenRequests.AuthorizationCode, s.FaultsInjected)
	}
}

// Pleo's optional subject (urn_pleo_params_oauth_subject) travels from the
// connection's configuration to the authorize request, on every
// reauthorisation too.
func TestAuthorizeParamsFromConnectionConfig(t *testing.T) {
	in := start(t, nil)
	id := create(t, in, map[string]string{"team": "finance", "authorize.urn_pleo_params_oauth_subject": "company-42"})
	for i := 0; i < 2; i++ {
		u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(u, "urn_pleo_params_oauth_subject=company-42") {
			t.Fatalf("authorize URL lacks the subject: %s", u)
		}
		if err := callback(t, in, consent(t, u)); err != nil {
			t.Fatal(err)
		}
		admin(t, in, "revoke-grants", nil, nil)
		_ = refreshNow(t, in, id)
	}
	if _, err := in.Lifecycle.Update(ctxT(t), id, nil, map[string]string{"authorize.state": "x"}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("a reserved parameter was accepted: %v", err)
	}
}
