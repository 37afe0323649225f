package sandbox_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

func TestCodeFlowIssuesTokensWithConfiguredLifetimes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) {
		c.AccessTokenLifetime = 90 * time.Second
		c.RefreshTokenLifetime = 3 * time.Hour
	})
	before := time.Now()
	tok := e.grant()

	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("want access and refresh token, got %+v", tok)
	}
	if !strings.EqualFold(tok.TokenType, "bearer") {
		t.Fatalf("token_type = %q", tok.TokenType)
	}
	if got := num(tok.Extra("expires_in")); got != 90 {
		t.Fatalf("expires_in = %v, want 90", got)
	}
	if d := tok.Expiry.Sub(before); d < 89*time.Second || d > 92*time.Second {
		t.Fatalf("expiry in %v, want ~90s", d)
	}
	if got := tok.Extra("scope"); got != "export-jobs:read users:read" {
		t.Fatalf("scope = %v", got)
	}

	status, _, body := e.me(tok.AccessToken, "")
	if status != http.StatusOK {
		t.Fatalf("/api/me = %d %v", status, body)
	}
	if body["client_id"] != "tokenline-test" {
		t.Fatalf("client_id = %v", body["client_id"])
	}
	if got := body["scopes"].([]any); len(got) != 2 || got[0] != "export-jobs:read" || got[1] != "users:read" {
		t.Fatalf("scopes = %v", got)
	}
	exp, err := time.Parse(time.RFC3339Nano, body["expires_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if d := exp.Sub(before); d < 89*time.Second || d > 92*time.Second {
		t.Fatalf("expires_at in %v, want ~90s", d)
	}

	// The refresh token's lifetime is visible through introspection.
	resp := e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.RefreshToken}},
		"tokenline-test", e.srv.ClientSecret())
	in := decodeBody(t, resp)
	if in["active"] != true || in["token_use"] != "refresh_token" {
		t.Fatalf("introspection = %v", in)
	}
	if d := time.Unix(int64(num(in["exp"])), 0).Sub(before); d < 3*time.Hour-2*time.Second || d > 3*time.Hour+2*time.Second {
		t.Fatalf("refresh token expires in %v, want ~3h", d)
	}
}

func TestDefaultsMatchPleo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	before := time.Now()
	tok := e.grant()
	if got := num(tok.Extra("expires_in")); got != 900 {
		t.Fatalf("default expires_in = %v, want 900", got)
	}
	resp := e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.RefreshToken}},
		"tokenline-test", e.srv.ClientSecret())
	in := decodeBody(t, resp)
	if d := time.Unix(int64(num(in["exp"])), 0).Sub(before); d < 60*24*time.Hour-2*time.Second || d > 60*24*time.Hour+2*time.Second {
		t.Fatalf("default refresh lifetime %v, want 60 days", d)
	}
}

func TestAuthorizationCodeReplayRevokesTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok, code, v := e.codeGrant()
	_, err := e.oc.Exchange(e.ctx, code, oauth2.VerifierOption(v))
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
	e.assertAPI(tok.AccessToken, http.StatusUnauthorized)
	_, err = e.refresh(tok.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestClientSecretPostAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.oc.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tok := e.grant()
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatalf("refresh with client_secret_post: %v", err)
	}
	// A wrong secret in the body is refused like one in the header.
	e.oc.ClientSecret = "wrong"
	_, err := e.tryGrant()
	mustFailWith(t, err, http.StatusUnauthorized, "invalid_client")
}

func TestMissingPKCERefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	q := e.redirectParams(e.authorize(e.oc.AuthCodeURL("state-0123456789")))
	if q.Get("error") != "invalid_request" || q.Get("code") != "" || q.Get("state") != "state-0123456789" {
		t.Fatalf("redirect = %v, want error=invalid_request with state and no code", q)
	}
}

func TestPlainPKCERefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	v := oauth2.GenerateVerifier()
	for name, method := range map[string][]string{"plain": {"plain"}, "no method": nil, "unknown": {"S512"}} {
		u := e.oc.AuthCodeURL("state-0123456789",
			oauth2.SetAuthURLParam("code_challenge", v)) // plain: challenge == verifier
		if method != nil {
			u += "&code_challenge_method=" + method[0]
		}
		q := e.redirectParams(e.authorize(u))
		if q.Get("error") != "invalid_request" || q.Get("code") != "" {
			t.Fatalf("%s: redirect = %v, want error=invalid_request", name, q)
		}
	}
	// A malformed S256 challenge is refused too.
	u := e.oc.AuthCodeURL("state-0123456789",
		oauth2.SetAuthURLParam("code_challenge", "short"), oauth2.SetAuthURLParam("code_challenge_method", "S256"))
	if q := e.redirectParams(e.authorize(u)); q.Get("error") != "invalid_request" {
		t.Fatalf("short challenge: %v", q)
	}
}

func TestWrongOrMissingVerifierRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)

	v := oauth2.GenerateVerifier()
	code := e.code(v)
	_, err := e.oc.Exchange(e.ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")

	code = e.code(v)
	_, err = e.oc.Exchange(e.ctx, code) // no code_verifier
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")

	// The right verifier still works on a fresh code.
	code = e.code(v)
	if _, err := e.oc.Exchange(e.ctx, code, oauth2.VerifierOption(v)); err != nil {
		t.Fatalf("exchange with right verifier: %v", err)
	}
}

func TestRedirectURIMustMatchExactly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	v := oauth2.GenerateVerifier()
	for _, redirect := range []string{
		"http://127.0.0.1:2/callback",  // other port: fosite alone would accept this loopback URI
		"http://127.0.0.1:1/callback/", // trailing slash
		"http://127.0.0.1:1/other",
		"http://localhost:1/callback",
		"",
	} {
		oc := e.oc
		oc.RedirectURL = redirect
		resp := e.authorize(oc.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v)))
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("redirect_uri %q: status %d Location %q, want 400 without redirect",
				redirect, resp.StatusCode, resp.Header.Get("Location"))
		}
		if body := decodeBody(t, resp); body["error"] != "invalid_request" {
			t.Fatalf("redirect_uri %q: body %v", redirect, body)
		}
	}

	// The token request must repeat the authorisation request's redirect_uri.
	code := e.code(v)
	oc := e.oc
	oc.RedirectURL = "http://127.0.0.1:2/callback"
	_, err := oc.Exchange(e.ctx, code, oauth2.VerifierOption(v))
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)

	// A subset is granted as requested.
	e.oc.Scopes = []string{"accounts:read"}
	tok := e.grant()
	if got := tok.Extra("scope"); got != "accounts:read" {
		t.Fatalf("scope = %v", got)
	}
	status, h, _ := e.me(tok.AccessToken, "?require_scope=users:read")
	if status != http.StatusForbidden ||
		h.Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="users:read"` {
		t.Fatalf("require_scope without scope: %d %q", status, h.Get("WWW-Authenticate"))
	}
	if status, _, _ := e.me(tok.AccessToken, "?require_scope=accounts:read"); status != http.StatusOK {
		t.Fatalf("require_scope with scope: %d", status)
	}

	// No scope parameter: all registered scopes.
	e.oc.Scopes = nil
	tok = e.grant()
	if got := tok.Extra("scope"); got != strings.Join(testScopes, " ") {
		t.Fatalf("default scope = %v", got)
	}

	// An unregistered scope is refused.
	e.oc.Scopes = []string{"users:write"}
	e.authorizeRefused("unregistered scope", "invalid_scope")
}

func TestRefreshRotatesAndReuseRevokesGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	old := e.grant()

	fresh, err := e.refresh(old.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.AccessToken == old.AccessToken || fresh.RefreshToken == old.RefreshToken || fresh.RefreshToken == "" {
		t.Fatal("refresh did not rotate both tokens")
	}
	if got := tok2scope(fresh); got != "export-jobs:read users:read" {
		t.Fatalf("refreshed scope = %q", got)
	}
	// Rotation: the old access token dies at once, the new one works.
	e.assertAPI(old.AccessToken, http.StatusUnauthorized)
	e.assertAPI(fresh.AccessToken, http.StatusOK)

	// Reuse of the replaced refresh token is refused ...
	_, err = e.refresh(old.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
	// ... and kills the whole grant, including the newest tokens.
	_, err = e.refresh(fresh.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
	e.assertAPI(fresh.AccessToken, http.StatusUnauthorized)

	st := e.srv.Stats()
	if st.RefreshTokenReuse != 1 || st.Revocations != 1 {
		t.Fatalf("reuse = %d revocations = %d, want 1 and 1", st.RefreshTokenReuse, st.Revocations)
	}
}

func tok2scope(t *oauth2.Token) string {
	s, _ := t.Extra("scope").(string)
	return s
}

func TestConcurrentRefreshWithSameTokenKillsGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()

	const n = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  []*oauth2.Token
		failures int
		start    = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			got, err := e.refresh(tok.RefreshToken)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, got)
				return
			}
			mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
			failures++
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 || failures != n-1 {
		t.Fatalf("winners = %d failures = %d, want exactly one winner", len(winners), failures)
	}
	// The losers presented a replaced token, which revoked the winner's
	// tokens too: a stale concurrent refresh kills the grant, as at Pleo.
	e.assertAPI(winners[0].AccessToken, http.StatusUnauthorized)
	_, err := e.refresh(winners[0].RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestConcurrentRefreshesOfDifferentGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const n = 200

	grants := make([]*oauth2.Token, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			tok, err := e.tryGrant()
			if err != nil {
				t.Errorf("grant %d: %v", i, err)
				return
			}
			grants[i] = tok
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	fresh := make([]*oauth2.Token, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			tok, err := e.refresh(grants[i].RefreshToken)
			if err != nil {
				t.Errorf("refresh %d: %v", i, err)
				return
			}
			fresh[i] = tok
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	seen := map[string]bool{}
	for i := range n {
		if seen[fresh[i].RefreshToken] {
			t.Fatalf("refresh token issued twice")
		}
		seen[fresh[i].RefreshToken] = true
		wg.Go(func() {
			if status, _, _ := e.me(fresh[i].AccessToken, ""); status != http.StatusOK {
				t.Errorf("new access token %d: %d", i, status)
			}
			if status, _, _ := e.me(grants[i].AccessToken, ""); status != http.StatusUnauthorized {
				t.Errorf("old access token %d: %d", i, status)
			}
		})
	}
	wg.Wait()

	st := e.srv.Stats()
	if st.Successes != 2*n || st.Failures != 0 || st.TokenRequests.RefreshToken != n ||
		st.TokenRequests.AuthorizationCode != n || st.RefreshTokenReuse != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// Tokens expire on the sandbox's clock (Config.Now), not the wall clock: the
// clock starts years in the past and is moved by hand, so the test waits for
// nothing and cannot flake on a slow machine.
func TestShortLifetimesExpire(t *testing.T) {
	t.Parallel()
	clock := newTestClock(time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	e := newEnv(t, func(c *sandbox.Config) {
		c.Now = clock.Now
		c.AccessTokenLifetime = time.Second
		c.RefreshTokenLifetime = 2 * time.Second
	})
	tok := e.grant()
	if got := num(tok.Extra("expires_in")); got != 1 {
		t.Fatalf("expires_in = %v, want 1", got)
	}
	status, _, body := e.me(tok.AccessToken, "")
	if status != http.StatusOK || body["expires_at"] != clock.Now().Add(time.Second).Format(time.RFC3339Nano) {
		t.Fatalf("/api/me = %d %v, want expiry at clock + 1s", status, body)
	}

	clock.Advance(time.Second) // the last instant of the access token
	e.assertAPI(tok.AccessToken, http.StatusOK)
	clock.Advance(time.Nanosecond)
	e.assertAPI(tok.AccessToken, http.StatusUnauthorized) // access token expired
	in := decodeBody(t, e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.AccessToken}},
		"tokenline-test", e.srv.ClientSecret()))
	if in["active"] != false {
		t.Fatalf("introspection of an expired access token = %v", in)
	}

	// The refresh token (2 s) is still valid and gives a fresh pair whose
	// lifetimes count from the clock's now.
	fresh, err := e.refresh(tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh within refresh lifetime: %v", err)
	}
	e.assertAPI(fresh.AccessToken, http.StatusOK)

	clock.Advance(2 * time.Second)
	e.assertAPI(fresh.AccessToken, http.StatusUnauthorized)
	if _, err = e.refresh(fresh.RefreshToken); err != nil {
		t.Fatalf("refresh at the last instant of the refresh token: %v", err)
	}

	// A second grant's refresh token, left to expire.
	tok = e.grant()
	clock.Advance(2*time.Second + time.Nanosecond)
	_, err = e.refresh(tok.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestDenyConsent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) { c.Consent = sandbox.ConsentDeny })
	q := e.authorizeS256(oauth2.GenerateVerifier())
	if q.Get("error") != "access_denied" || q.Get("state") != "state-0123456789" || q.Get("code") != "" {
		t.Fatalf("redirect = %v, want error=access_denied with state", q)
	}

	// Switching the mode at run time takes effect for the next request.
	e.mustAdmin(http.MethodPost, "/sandbox/admin/consent", `{"mode":"approve"}`)
	e.grant()
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)

func TestPromptConsentPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) { c.Consent = sandbox.ConsentPrompt })
	v := oauth2.GenerateVerifier()
	authURL := e.oc.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(v))

	page := func() (string, url.Values) {
		resp := e.authorize(authURL)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("consent page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(resp.Body)
		html := string(b)
		form := url.Values{}
		for _, m := range hiddenInput.FindAllStringSubmatch(html, -1) {
			form.Add(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
		}
		return html, form
	}

	html, form := page()
	for _, want := range []string{`id="approve"`, `id="deny"`, "tokenline-test", "wants access to",
		"<code>export-jobs:read</code>", "<code>users:read</code>", `action="/sandbox/oauth/authorize"`} {
		if !strings.Contains(html, want) {
			t.Fatalf("consent page lacks %q:\n%s", want, html)
		}
	}
	if strings.Contains(html, "accounts:read") {
		t.Fatal("consent page lists a scope that was not requested")
	}
	for _, k := range []string{"client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope", "response_type"} {
		if form.Get(k) == "" {
			t.Fatalf("form does not carry %s: %v", k, form)
		}
	}

	// Approve.
	approve := url.Values{}
	for k, vs := range form {
		approve[k] = vs
	}
	approve.Set("decision", "approve")
	q := e.redirectParams(e.postForm("/sandbox/oauth/authorize", approve, "", ""))
	if q.Get("code") == "" || q.Get("state") != "state-0123456789" {
		t.Fatalf("approve redirect = %v", q)
	}
	if _, err := e.oc.Exchange(e.ctx, q.Get("code"), oauth2.VerifierOption(v)); err != nil {
		t.Fatalf("exchange after approval: %v", err)
	}

	// Deny.
	_, form = page()
	form.Set("decision", "deny")
	q = e.redirectParams(e.postForm("/sandbox/oauth/authorize", form, "", ""))
	if q.Get("error") != "access_denied" || q.Get("code") != "" {
		t.Fatalf("deny redirect = %v", q)
	}
}

func TestAPIMeRejectsBadTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()

	// A refresh token is not an access token.
	e.assertAPI(tok.RefreshToken, http.StatusUnauthorized)
	e.assertAPI("ory_at_bogus.bogus", http.StatusUnauthorized)
	// Tampering with the signature part of a valid token.
	e.assertAPI(tok.AccessToken+"x", http.StatusUnauthorized)

	status, h, _ := e.me("", "")
	if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %q", status, h.Get("WWW-Authenticate"))
	}
}

func TestRevocationEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	secret := e.srv.ClientSecret()

	tok := e.grant()
	resp := e.postForm("/sandbox/oauth/revoke",
		url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}}, "tokenline-test", secret)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke = %d", resp.StatusCode)
	}
	_, err := e.refresh(tok.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
	e.assertAPI(tok.AccessToken, http.StatusUnauthorized) // revoking the refresh token revokes the grant

	// Revoking an access token (client_secret_post) revokes the grant too.
	tok = e.grant()
	resp = e.postForm("/sandbox/oauth/revoke", url.Values{"token": {tok.AccessToken},
		"client_id": {"tokenline-test"}, "client_secret": {secret}}, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke access token = %d", resp.StatusCode)
	}
	_, err = e.refresh(tok.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")

	// Unknown tokens get 200 (RFC 7009 section 2.2); bad credentials 401.
	if resp := e.postForm("/sandbox/oauth/revoke", url.Values{"token": {"nope"}}, "tokenline-test", secret); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke unknown = %d", resp.StatusCode)
	}
	if resp := e.postForm("/sandbox/oauth/revoke", url.Values{"token": {"nope"}}, "tokenline-test", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoke with wrong secret = %d", resp.StatusCode)
	}
	if st := e.srv.Stats(); st.Revocations != 2 {
		t.Fatalf("revocations = %d, want 2", st.Revocations)
	}
}

func TestIntrospection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()
	secret := e.srv.ClientSecret()

	in := decodeBody(t, e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.AccessToken}}, "tokenline-test", secret))
	if in["active"] != true || in["token_use"] != "access_token" || in["client_id"] != "tokenline-test" ||
		in["scope"] != "export-jobs:read users:read" || in["token_type"] != "Bearer" {
		t.Fatalf("introspection = %v", in)
	}
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	in = decodeBody(t, e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.AccessToken}}, "tokenline-test", secret))
	if in["active"] != false {
		t.Fatalf("rotated access token introspects as %v", in)
	}
	resp := e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.AccessToken}}, "tokenline-test", "wrong")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("introspection with wrong secret = %d", resp.StatusCode)
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	resp, err := e.httpc.Get(e.ts.URL + "/sandbox/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	md2 := decodeBody(t, resp)
	iss := e.ts.URL + "/sandbox"
	want := map[string]string{
		"issuer":                 iss,
		"authorization_endpoint": iss + "/oauth/authorize",
		"token_endpoint":         iss + "/oauth/token",
		"revocation_endpoint":    iss + "/oauth/revoke",
		"introspection_endpoint": iss + "/oauth/token/introspect",
	}
	for k, v := range want {
		if md2[k] != v {
			t.Fatalf("%s = %v, want %s", k, md2[k], v)
		}
	}
	list := func(k string) []string {
		var out []string
		for _, x := range md2[k].([]any) {
			out = append(out, x.(string))
		}
		return out
	}
	if got := list("code_challenge_methods_supported"); !slices.Equal(got, []string{"S256"}) {
		t.Fatalf("code_challenge_methods_supported = %v", got)
	}
	if got := list("token_endpoint_auth_methods_supported"); !slices.Contains(got, "client_secret_basic") || !slices.Contains(got, "client_secret_post") {
		t.Fatalf("token_endpoint_auth_methods_supported = %v", got)
	}
	if got := list("grant_types_supported"); !slices.Equal(got, []string{"authorization_code", "refresh_token"}) {
		t.Fatalf("grant_types_supported = %v", got)
	}
	// offline_access too: the grant mode scope:offline_access issues refresh
	// tokens only to grants with it, so a client must learn it exists.
	if got := list("scopes_supported"); !slices.Equal(got, append(slices.Clone(testScopes), "offline_access")) {
		t.Fatalf("scopes_supported = %v", got)
	}

	// The advertised endpoints are the ones that work.
	e.oc.Endpoint.AuthURL = want["authorization_endpoint"]
	e.oc.Endpoint.TokenURL = want["token_endpoint"]
	e.grant()
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/sandbox/oauth/token", http.StatusMethodNotAllowed},
		{http.MethodGet, "/sandbox/oauth/revoke", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/sandbox/oauth/authorize", http.StatusMethodNotAllowed},
		{http.MethodPost, "/sandbox/api/me", http.StatusMethodNotAllowed},
		{http.MethodGet, "/sandbox/admin/revoke-grants", http.StatusMethodNotAllowed},
		{http.MethodPost, "/sandbox/admin/stats", http.StatusMethodNotAllowed},
		{http.MethodGet, "/sandbox/nope", http.StatusNotFound},
		{http.MethodGet, "/sandbox/admin/nope", http.StatusNotFound},
		{http.MethodGet, "/elsewhere", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(c.method, e.ts.URL+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken()) // admin paths: past the token check
		resp, err := e.httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
}

func TestUnsupportedGrantType(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	resp := e.postForm("/sandbox/oauth/token", url.Values{"grant_type": {"client_credentials"}}, "tokenline-test", e.srv.ClientSecret())
	if body := decodeBody(t, resp); resp.StatusCode != http.StatusBadRequest || body["error"] != "unsupported_grant_type" {
		t.Fatalf("client_credentials: %d %v", resp.StatusCode, body)
	}
	resp = e.postForm("/sandbox/oauth/token", url.Values{"code": {"x"}}, "tokenline-test", e.srv.ClientSecret())
	if body := decodeBody(t, resp); resp.StatusCode != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Fatalf("missing grant_type: %d %v", resp.StatusCode, body)
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok, code, v := e.codeGrant()
	fresh, err := e.refresh(tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.refresh(tok.RefreshToken) // reuse: logged as a warning
	rotated := e.mustAdmin(http.MethodPost, "/sandbox/admin/rotate-client-secret", "")
	e.oc.ClientSecret = "initial-secret-0123456789abcdef"
	_, _ = e.refresh(fresh.RefreshToken) // invalid_client, logged

	logs := e.logBuf.String()
	if !strings.Contains(logs, "refresh token reuse detected") || !strings.Contains(logs, "invalid_client") {
		t.Fatalf("expected outcome records in logs:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"code": code, "verifier": v, "access token": tok.AccessToken, "refresh token": tok.RefreshToken,
		"new access token": fresh.AccessToken, "new refresh token": fresh.RefreshToken,
		"old client secret": "initial-secret-0123456789abcdef", "new client secret": rotated["client_secret"].(string),
		"challenge": oauth2.S256ChallengeFromVerifier(v),
	} {
		// Compare the signature part too: a token is key.signature.
		parts := strings.Split(secret, ".")
		for _, p := range parts {
			if len(p) >= 16 && strings.Contains(logs, p) {
				t.Fatalf("log output contains the %s", name)
			}
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	ok := sandbox.Config{RedirectURIs: []string{testRedirect}}
	for name, mutate := range map[string]func(*sandbox.Config){
		"no redirect":       func(c *sandbox.Config) { c.RedirectURIs = nil },
		"relative redirect": func(c *sandbox.Config) { c.RedirectURIs = []string{"/cb"} },
		"fragment":          func(c *sandbox.Config) { c.RedirectURIs = []string{"https://app.example/cb#x"} },
		"insecure remote":   func(c *sandbox.Config) { c.RedirectURIs = []string{"http://app.example/cb"} },
		"bad scope":         func(c *sandbox.Config) { c.Scopes = []string{"offline"} },
		"duplicate scope":   func(c *sandbox.Config) { c.Scopes = []string{"users:read", "users:read"} },
		"bad consent":       func(c *sandbox.Config) { c.Consent = "maybe" },
		"short lifetime":    func(c *sandbox.Config) { c.AccessTokenLifetime = time.Millisecond },
		"negative lifetime": func(c *sandbox.Config) { c.RefreshTokenLifetime = -time.Hour },
	} {
		c := ok
		mutate(&c)
		if _, err := sandbox.New(c); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
	s, err := sandbox.New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientID() != sandbox.DefaultClientID || len(s.ClientSecret()) < 32 {
		t.Fatalf("defaults: id %q, secret length %d", s.ClientID(), len(s.ClientSecret()))
	}
}
