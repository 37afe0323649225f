package sandbox_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

// grantRaw runs the code flow (with extra scopes requested, if any) and
// returns the token response as JSON fields, so that a field's absence
// shows (x/oauth2 would hide a missing expires_in and refresh_token).
func (e *env) grantRaw(scopes ...string) (fields map[string]any) {
	e.t.Helper()
	if len(scopes) > 0 {
		saved := e.oc.Scopes
		e.oc.Scopes = scopes // code() reads e.oc
		defer func() { e.oc.Scopes = saved }()
	}
	v := oauth2.GenerateVerifier()
	tok, err := e.oc.Exchange(e.ctx, e.code(v), oauth2.VerifierOption(v))
	if err != nil {
		e.t.Fatalf("exchange: %v", err)
	}
	return rawFields(tok)
}

// rawFields are the token response's fields as x/oauth2 saw them.
func rawFields(tok *oauth2.Token) map[string]any {
	out := map[string]any{"access_token": tok.AccessToken}
	for _, k := range []string{"refresh_token", "expires_in", "scope"} {
		if v := tok.Extra(k); v != nil {
			out[k] = v
		}
	}
	return out
}

func TestGrantModeNeverAndNonExpiring(t *testing.T) {
	t.Parallel()
	clock := newTestClock(time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	e := newEnv(t, func(c *sandbox.Config) { c.Now = clock.Now; c.AccessTokenLifetime = time.Minute })
	if got := e.mustAdmin(http.MethodGet, "/sandbox/admin/grant-mode", ""); got["refresh_token"] != "always" || got["access_ttl"] != "1m0s" {
		t.Fatalf("default mode %v", got)
	}

	// never: an expiring access token and no refresh token.
	if got := e.mustAdmin(http.MethodPost, "/sandbox/admin/grant-mode", `{"refresh_token":"never"}`); got["refresh_token"] != "never" || got["access_ttl"] != "1m0s" {
		t.Fatalf("never: %v", got)
	}
	f := e.grantRaw()
	if _, ok := f["refresh_token"]; ok || num(f["expires_in"]) != 60 {
		t.Fatalf("never: response %v", f)
	}
	e.assertAPI(f["access_token"].(string), http.StatusOK)
	clock.Advance(61 * time.Second)
	e.assertAPI(f["access_token"].(string), http.StatusUnauthorized)
	if st := e.srv.Stats(); st.RefreshTokensWithheld != 1 || st.Held.RefreshTokens != 0 {
		t.Fatalf("stats: withheld %d, held refresh tokens %d", st.RefreshTokensWithheld, st.Held.RefreshTokens)
	}

	// access_ttl 0s: no expires_in, and the token outlives any clock move.
	if got := e.mustAdmin(http.MethodPost, "/sandbox/admin/grant-mode", `{"access_ttl":"0s"}`); got["refresh_token"] != "never" || got["access_ttl"] != "0s" {
		t.Fatalf("0s: %v", got)
	}
	f = e.grantRaw()
	if _, ok := f["refresh_token"]; ok {
		t.Fatalf("non-expiring: response %v", f)
	}
	if _, ok := f["expires_in"]; ok {
		t.Fatalf("non-expiring: expires_in in %v", f)
	}
	clock.Advance(10 * 365 * 24 * time.Hour)
	e.assertAPI(f["access_token"].(string), http.StatusOK)
	// It dies when the grant is revoked.
	e.mustAdmin(http.MethodPost, "/sandbox/admin/revoke-grants", "")
	e.assertAPI(f["access_token"].(string), http.StatusUnauthorized)

	// Back to the default: expiring tokens with rotating refresh tokens.
	e.mustAdmin(http.MethodPost, "/sandbox/admin/grant-mode", `{"refresh_token":"always","access_ttl":"1m"}`)
	tok := e.grant()
	if tok.RefreshToken == "" || tok.Expiry.IsZero() {
		t.Fatalf("always: %+v", rawFields(tok))
	}
}

// scope:offline_access: a refresh token only for grants that asked for
// offline_access (which the client may always request), rotated on refresh.
func TestGrantModeScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) { c.RefreshTokens = "scope:" + sandbox.OfflineAccessScope })
	f := e.grantRaw("users:read")
	if _, ok := f["refresh_token"]; ok {
		t.Fatalf("without offline_access: %v", f)
	}
	f = e.grantRaw("users:read", sandbox.OfflineAccessScope)
	rt, _ := f["refresh_token"].(string)
	if rt == "" || !strings.Contains(f["scope"].(string), sandbox.OfflineAccessScope) {
		t.Fatalf("with offline_access: %v", f)
	}
	tok, err := e.refresh(rt)
	if err != nil || tok.RefreshToken == "" || tok.RefreshToken == rt {
		t.Fatalf("refresh: %v, rotated %v", err, tok != nil && tok.RefreshToken != rt)
	}
	// Not requested, not granted: a grant without scope gets the
	// registered scopes only.
	e.oc.Scopes = nil
	if f := rawFields(e.grant()); strings.Contains(f["scope"].(string), sandbox.OfflineAccessScope) || f["refresh_token"] != nil {
		t.Fatalf("default scopes: %v", f)
	}
}

// keep: the code exchange issues a refresh token; refreshes answer without
// one and the presented token stays valid (no rotation, no reuse).
func TestGrantModeKeep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) { c.RefreshTokens = sandbox.RefreshTokensKeep })
	first := e.grant()
	if first.RefreshToken == "" {
		t.Fatal("keep: no refresh token with the code exchange")
	}
	prev := first.AccessToken
	for i := range 3 {
		tok, err := e.oc.TokenSource(e.ctx, &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
		if err != nil {
			t.Fatalf("refresh %d with the kept token: %v", i+1, err)
		}
		if tok.Extra("refresh_token") != nil || tok.AccessToken == prev {
			t.Fatalf("refresh %d: %v", i+1, rawFields(tok))
		}
		e.assertAPI(tok.AccessToken, http.StatusOK)
		e.assertAPI(prev, http.StatusUnauthorized) // the previous access token is replaced
		prev = tok.AccessToken
	}
	st := e.srv.Stats()
	if st.RefreshTokenReuse != 0 || st.RefreshTokensKept != 3 || st.Revocations != 0 {
		t.Fatalf("stats: reuse %d kept %d revocations %d", st.RefreshTokenReuse, st.RefreshTokensKept, st.Revocations)
	}
	// Revoking the kept refresh token revokes the grant.
	if resp := e.postForm("/sandbox/oauth/revoke", map[string][]string{"token": {first.RefreshToken}}, e.oc.ClientID, e.oc.ClientSecret); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if _, err := e.refresh(first.RefreshToken); err == nil {
		t.Fatal("refresh after revocation succeeded")
	}
}

// A bad grant-mode body gets 400 and changes nothing.
func TestGrantModeValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, body := range []string{
		``, `{`, `[]`, `{}`, `null`,
		`{"refresh_token":"sometimes"}`,
		`{"refresh_token":"scope:"}`,
		`{"refresh_token":"scope:payments:write"}`, // not a scope the client may request
		`{"refresh_token":"` + strings.Repeat("x", 5000) + `"}`,
		`{"refresh_token":1}`,
		`{"access_ttl":"-1s"}`,
		`{"access_ttl":"500ms"}`,
		`{"access_ttl":"9000h"}`,
		`{"access_ttl":"soon"}`,
		`{"access_ttl":"` + strings.Repeat("1", 40) + `s"}`,
		`{"access_ttl":15}`,
		`{"refresh_token":"never","access_ttl":"bad"}`,
		`{"refresh_token":"never","x":1}`,
		`{"refresh_token":"never"} {}`,
	} {
		status, out := e.admin(http.MethodPost, "/sandbox/admin/grant-mode", body)
		if status != http.StatusBadRequest || out["error"] != "invalid_request" {
			t.Errorf("body %.60q: %d %v, want 400 invalid_request", body, status, out)
		}
	}
	if got := e.mustAdmin(http.MethodGet, "/sandbox/admin/grant-mode", ""); got["refresh_token"] != "always" || got["access_ttl"] != "15m0s" {
		t.Fatalf("mode changed by refused requests: %v", got)
	}
	if tok := e.grant(); tok.RefreshToken == "" || tok.Expiry.IsZero() {
		t.Fatal("tokens changed by refused requests")
	}
	for _, ok := range []string{`{"refresh_token":"scope:users:read"}`, `{"access_ttl":"8760h"}`, `{"access_ttl":"1s"}`} {
		if status, out := e.admin(http.MethodPost, "/sandbox/admin/grant-mode", ok); status != http.StatusOK {
			t.Errorf("body %q: %d %v", ok, status, out)
		}
	}
	if _, err := sandbox.New(sandbox.Config{RedirectURIs: []string{testRedirect}, RefreshTokens: "sometimes"}); err == nil {
		t.Fatal("New accepted RefreshTokens \"sometimes\"")
	}
}
