package memory_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
)

const verifier = "memory-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"

func newEndpoint(t *testing.T) (*memory.TokenEndpoint, *memory.Clock) {
	t.Helper()
	clock := memory.NewClock(t0)
	return memory.NewTokenEndpoint(memory.TokenEndpointConfig{Scopes: []string{"users:read", "accounts:read"}, Clock: clock}), clock
}

func code(t *testing.T, e *memory.TokenEndpoint) string {
	t.Helper()
	c, err := e.Approve(e.AuthCodeURL("state-0123456789", verifier, []string{"users:read"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func grant(t *testing.T, e *memory.TokenEndpoint) domain.Tokens {
	t.Helper()
	tok, err := e.Exchange(t.Context(), code(t, e), verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func failure(t *testing.T, err error) *domain.Failure {
	t.Helper()
	var f *domain.Failure
	if !errors.As(err, &f) {
		t.Fatalf("%v is not a *domain.Failure", err)
	}
	return f
}

func TestTokenEndpointScriptedFailuresConsumeNothing(t *testing.T) {
	e, _ := newEndpoint(t)
	tok := grant(t, e)
	e.FailNext(memory.RequestRefresh, memory.Unavailable(7*time.Second), memory.RateLimited(time.Second), memory.NetworkFailure(), memory.InvalidGrant())
	want := []*domain.Failure{memory.Unavailable(7 * time.Second), memory.RateLimited(time.Second), memory.NetworkFailure(), memory.InvalidGrant()}
	for i, w := range want {
		_, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
		if f := failure(t, err); !reflect.DeepEqual(f, w) {
			t.Fatalf("scripted answer %d: %+v, want %+v", i, f, w)
		}
	}
	got, rotated, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
	if err != nil || !rotated {
		t.Fatalf("refresh after the script: %v", err)
	}
	if e.Requests(memory.RequestRefresh) != 5 || e.Requests(memory.RequestExchange) != 1 || e.Requests(memory.RequestAuthorize) != 1 {
		t.Fatalf("requests: refresh %d exchange %d authorize %d", e.Requests(memory.RequestRefresh), e.Requests(memory.RequestExchange), e.Requests(memory.RequestAuthorize))
	}
	// Refresh("") makes no request.
	if _, _, err := e.Refresh(t.Context(), "", nil); !failure(t, err).Terminal || e.Requests(memory.RequestRefresh) != 5 {
		t.Fatal("Refresh(\"\") counted as a request or not terminal")
	}
	e.FailNext(memory.RequestRevoke, memory.Unavailable(0))
	if err := e.Revoke(t.Context(), got.RefreshToken, "refresh_token"); err == nil {
		t.Fatal("scripted revoke failure not returned")
	}
	if !e.AccessTokenValid(got.AccessToken) {
		t.Fatal("a failed revoke revoked")
	}
}

func TestTokenEndpointLifetimesAndValidity(t *testing.T) {
	e, clock := newEndpoint(t)
	e.SetAccessTokenLifetime(time.Minute)
	tok := grant(t, e)
	if !tok.Expiry.Equal(t0.Add(time.Minute)) || tok.TokenType != "bearer" || len(tok.Scopes) != 1 || tok.Scopes[0] != "users:read" {
		t.Fatalf("expiry %v type %q scopes %v", tok.Expiry, tok.TokenType, tok.Scopes)
	}
	if !e.AccessTokenValid(tok.AccessToken) || e.AccessTokenValid(tok.RefreshToken) {
		t.Fatal("validity of the fresh tokens")
	}
	clock.Advance(time.Minute)
	if e.AccessTokenValid(tok.AccessToken) {
		t.Fatal("an expired access token is valid")
	}
	next, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
	if err != nil || !next.Expiry.Equal(t0.Add(2*time.Minute)) || !e.AccessTokenValid(next.AccessToken) {
		t.Fatalf("refresh: %v, expiry %v", err, next.Expiry)
	}
	// A code lives CodeLifetime.
	c := code(t, e)
	clock.Advance(memory.CodeLifetime)
	_, err = e.Exchange(t.Context(), c, verifier, nil)
	if f := failure(t, err); !f.Terminal || f.Code != "invalid_grant" {
		t.Fatalf("expired code: %+v", f)
	}
}

func TestTokenEndpointWithoutRefreshTokens(t *testing.T) {
	e, _ := newEndpoint(t)
	tok := grant(t, e)
	e.SetIssueRefreshTokens(false)
	got, rotated, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
	if err != nil || rotated || got.RefreshToken != tok.RefreshToken || got.AccessToken == tok.AccessToken {
		t.Fatalf("refresh without rotation: rotated=%v err=%v", rotated, err)
	}
	if _, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil); err != nil {
		t.Fatalf("the kept refresh token must keep working: %v", err)
	}
	got, err = e.Exchange(t.Context(), code(t, e), verifier, nil)
	if err != nil || got.AccessToken == "" || got.RefreshToken != "" || got.Expiry.IsZero() {
		t.Fatalf("exchange without a refresh token: %v, refresh token %q, expiry %v", err, got.RefreshToken, got.Expiry)
	}
}

func TestTokenEndpointAdminActions(t *testing.T) {
	e, _ := newEndpoint(t)
	a, b := grant(t, e), grant(t, e)
	if e.LiveGrants() != 2 {
		t.Fatalf("live grants %d", e.LiveGrants())
	}
	// Revoking an access token revokes its grant (like the sandbox).
	if err := e.Revoke(t.Context(), a.AccessToken, "access_token"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Refresh(t.Context(), a.RefreshToken, nil); failure(t, err).Code != "invalid_grant" {
		t.Fatal("refresh token of a revoked grant works")
	}
	if n := e.ExpireRefreshTokens(); n != 1 {
		t.Fatalf("expired %d refresh tokens, want 1", n)
	}
	if _, _, err := e.Refresh(t.Context(), b.RefreshToken, nil); failure(t, err).Code != "invalid_grant" {
		t.Fatal("expired refresh token works")
	}
	if !e.AccessTokenValid(b.AccessToken) {
		t.Fatal("expiring refresh tokens killed the access token")
	}
	if n := e.RevokeGrants(); n != 1 || e.AccessTokenValid(b.AccessToken) {
		t.Fatalf("RevokeGrants revoked %d", n)
	}
	// A rotated server secret fails the client until it is told.
	c := grant(t, e)
	e.RotateClientSecret("new-secret")
	_, _, err := e.Refresh(t.Context(), c.RefreshToken, nil)
	if f := failure(t, err); !reflect.DeepEqual(f, memory.InvalidClient()) {
		t.Fatalf("old secret: %+v", f)
	}
	e.SetClientSecret("new-secret")
	if _, _, err := e.Refresh(t.Context(), c.RefreshToken, nil); err != nil {
		t.Fatalf("new secret: %v", err)
	}
	none := memory.NewTokenEndpoint(memory.TokenEndpointConfig{NoRevocation: true})
	if err := none.Revoke(t.Context(), "x", "refresh_token"); !errors.Is(err, domain.ErrNoRevocation) {
		t.Fatalf("no revocation endpoint: %v", err)
	}
}

func TestTokenEndpointApproveRefusals(t *testing.T) {
	e, _ := newEndpoint(t)
	good := e.AuthCodeURL("state-0123456789", verifier, []string{"users:read"}, map[string]string{"x": "y"})
	bad := map[string]string{
		"other endpoint": strings.Replace(good, memory.DefaultAuthURL, "https://evil.invalid/authorize", 1),
		"short state":    e.AuthCodeURL("short", verifier, nil, nil),
		"unknown scope":  e.AuthCodeURL("state-0123456789", verifier, []string{"admin:write"}, nil),
		"plain pkce":     strings.Replace(good, "code_challenge_method=S256", "code_challenge_method=plain", 1),
		"other client":   strings.Replace(good, "client_id="+memory.DefaultClientID, "client_id=someone", 1),
	}
	for name, u := range bad {
		if _, err := e.Approve(u); err == nil {
			t.Errorf("%s: approved", name)
		}
	}
	c, err := e.Approve(e.AuthCodeURL("state-0123456789", verifier, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.Exchange(t.Context(), c, verifier, nil)
	if err != nil || len(tok.Scopes) != 2 {
		t.Fatalf("no scope requested: all registered ones granted, got %v (%v)", tok.Scopes, err)
	}
}

func TestTokenEndpointHold(t *testing.T) {
	e, _ := newEndpoint(t)
	tok := grant(t, e)
	h := e.Hold(memory.RequestRefresh)
	type result struct {
		t   domain.Tokens
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
		done <- result{got, err}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := h.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("a held request was answered")
	default:
	}
	// While one is held, a request whose context ends fails like over HTTP.
	dl, cancelDL := context.WithDeadline(t.Context(), time.Unix(1, 0)) // long past: expired at once
	defer cancelDL()
	if _, _, err := e.Refresh(dl, tok.RefreshToken, nil); !reflect.DeepEqual(failure(t, err), memory.TimeoutFailure()) {
		t.Fatalf("deadline: %v", err)
	}
	h.Release()
	select {
	case r := <-done:
		if r.err != nil || r.t.AccessToken == "" {
			t.Fatalf("released refresh: %v", r.err)
		}
	case <-ctx.Done():
		t.Fatal("released request not answered")
	}
	h.Release() // idempotent
	// A held request whose context is canceled fails as a network error.
	h2 := e.Hold(memory.RequestExchange)
	c := code(t, e)
	cctx, ccancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := e.Exchange(cctx, c, verifier, nil); errc <- err }()
	if err := h2.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ccancel()
	if err := <-errc; !reflect.DeepEqual(failure(t, err), memory.NetworkFailure()) {
		t.Fatalf("canceled while held: %v", err)
	}
	h2.Release()
	if _, err := e.Exchange(t.Context(), c, verifier, nil); err != nil {
		t.Fatalf("the code survived the canceled request: %v", err)
	}
}

// The failures the memory endpoint returns are those provider.Classify
// makes of the same answers from a real HTTP server.
func TestFailuresMatchProviderClassify(t *testing.T) {
	serve := func(status int, body string, hdr map[string]string) *provider.Provider {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for k, v := range hdr {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		p, err := provider.New(provider.Config{Name: "x", ClientID: "c", ClientSecret: "s",
			Endpoints: provider.Endpoints{AuthURL: srv.URL + "/a", TokenURL: srv.URL + "/t"}, RedirectURL: "http://127.0.0.1/cb"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name   string
		status int
		body   string
		hdr    map[string]string
		want   *domain.Failure
	}{
		{"invalid_grant", 400, `{"error":"invalid_grant"}`, nil, memory.InvalidGrant()},
		{"invalid_client", 401, `{"error":"invalid_client"}`, nil, memory.InvalidClient()},
		{"503", 503, `{"error":"temporarily_unavailable"}`, map[string]string{"Retry-After": "7"}, memory.Unavailable(7 * time.Second)},
		{"429", 429, `{"error":"temporarily_unavailable"}`, map[string]string{"Retry-After": "2"}, memory.RateLimited(2 * time.Second)},
		{"bare 403", 403, `nope`, nil, memory.HTTPFailure(403, "", 0)},
		{"other code", 400, `{"error":"invalid_scope"}`, nil, memory.HTTPFailure(400, "invalid_scope", 0)},
		{"garbage", 200, `<<<`, nil, memory.MalformedResponse()},
	}
	for _, c := range cases {
		_, _, err := serve(c.status, c.body, c.hdr).Refresh(t.Context(), "rt", nil)
		if got := provider.Classify(err); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: provider %+v, memory %+v", c.name, got, c.want)
		}
	}
	if got, err := serve(200, `{"access_token":"a","token_type":"bearer","expires_in":60}`, nil).Exchange(t.Context(), "code", "v", nil); err != nil || got.RefreshToken != "" || got.Expiry.IsZero() {
		t.Errorf("no refresh token: provider %v, refresh token %q, expiry %v (memory grants it too)", err, got.RefreshToken, got.Expiry)
	}
	_, _, perr := serve(200, `{}`, nil).Refresh(t.Context(), "", nil)
	_, _, merr := memory.NewTokenEndpoint(memory.TokenEndpointConfig{}).Refresh(t.Context(), "", nil)
	if !reflect.DeepEqual(failure(t, perr), failure(t, merr)) {
		t.Errorf("empty refresh token: provider %+v, memory %+v", perr, merr)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p, _ := provider.New(provider.Config{Name: "x", ClientID: "c", Endpoints: provider.Endpoints{AuthURL: "http://" + addr, TokenURL: "http://" + addr}, RedirectURL: "http://127.0.0.1/cb"})
	if _, _, err := p.Refresh(t.Context(), "rt", nil); !reflect.DeepEqual(provider.Classify(err), memory.NetworkFailure()) {
		t.Errorf("refused connection: provider %+v", provider.Classify(err))
	}
	dl, cancel := context.WithDeadline(t.Context(), time.Unix(1, 0)) // long past
	defer cancel()
	if _, _, err := p.Refresh(dl, "rt", nil); !reflect.DeepEqual(provider.Classify(err), memory.TimeoutFailure()) {
		t.Errorf("deadline passed: provider %+v", provider.Classify(err))
	}
}

// Presented logs every token sent, by fingerprint, failed requests too;
// a request whose context ended before it was sent presents nothing.
func TestTokenEndpointPresented(t *testing.T) {
	e, _ := newEndpoint(t)
	tok := grant(t, e)
	rotated, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Refresh(t.Context(), tok.RefreshToken, nil); err == nil {
		t.Fatal("a replaced refresh token was accepted")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, _ = e.Refresh(ctx, rotated.RefreshToken, nil)
	if err := e.Revoke(t.Context(), rotated.AccessToken, "access_token"); err != nil {
		t.Fatal(err)
	}
	old := domain.Fingerprint(tok.RefreshToken)
	if got := e.Presented(memory.RequestRefresh); !slices.Equal(got, []string{old, old}) {
		t.Fatalf("refresh presented %v", got)
	}
	if got := e.Presented(memory.RequestRevoke); !slices.Equal(got, []string{domain.Fingerprint(rotated.AccessToken)}) {
		t.Fatalf("revoke presented %v", got)
	}
}
