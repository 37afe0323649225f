package tests

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/domain"
)

// Grants without a refresh token (issue 10), end to end: the real Main
// (embedded NATS, JetStream store, vault, lifecycle, HTTP API) and the
// sandbox in its grant modes, over HTTP; the clock (shared by tokenline and
// the sandbox) is moved instead of waiting.

// grantMode sets the sandbox's grant mode for tokens issued from now on.
func grantMode(t *testing.T, in *instance, refreshToken, accessTTL string) {
	t.Helper()
	body := map[string]string{}
	if refreshToken != "" {
		body["refresh_token"] = refreshToken
	}
	if accessTTL != "" {
		body["access_ttl"] = accessTTL
	}
	var got map[string]string
	admin(t, in, "grant-mode", body, &got)
	want, _ := time.ParseDuration(accessTTL)
	have, _ := time.ParseDuration(got["access_ttl"])
	if (refreshToken != "" && got["refresh_token"] != refreshToken) || (accessTTL != "" && have != want) {
		t.Fatalf("grant mode %v, asked for %v", got, body)
	}
}

// apiCall calls tokenline's API with the API token and decodes the JSON
// answer into a map.
func apiCall(t *testing.T, in *instance, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, in.BaseURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+in.APIToken())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// tokenOverHTTP is GET /v1/connections/{id}/token.
func tokenOverHTTP(t *testing.T, in *instance, id string) (int, map[string]any) {
	t.Helper()
	return apiCall(t, in, http.MethodGet, "/v1/connections/"+id+"/token", nil)
}

// handedOut asserts that /token hands out the connection's access token
// with the expiry the events record (no expires_at for a token without
// expiry), and returns it.
func handedOut(t *testing.T, in *instance, id string) string {
	t.Helper()
	st, body := tokenOverHTTP(t, in, id)
	c := load(t, in, id)
	tok, _ := body["access_token"].(string)
	if st != http.StatusOK || tok == "" || body["access_token_fp"] != c.Tokens.AccessTokenFP {
		t.Fatalf("/token: %d %v", st, body)
	}
	exp, has := body["expires_at"].(string)
	switch want := c.Tokens.AccessTokenExpiresAt; {
	case want.IsZero() && has:
		t.Fatalf("/token: expires_at %q for a token without expiry", exp)
	case !want.IsZero() && exp != want.UTC().Format(time.RFC3339Nano):
		t.Fatalf("/token: expires_at %q, want %v", exp, want)
	}
	return tok
}

// connectWith creates a sandbox connection with the scopes and authorises
// it through the sandbox (consent approve).
func connectWith(t *testing.T, in *instance, scopes ...string) string {
	t.Helper()
	c, err := in.Lifecycle.Create(ctxT(t), "sandbox", scopes, map[string]string{"team": "finance"})
	if err != nil {
		t.Fatal(err)
	}
	authorise(t, in, c.ID)
	if c = load(t, in, c.ID); c.State != domain.StateActive {
		t.Fatalf("after the callback: %s %s (a grant without refresh token must connect)", c.State, c.Reason)
	}
	return c.ID
}

// An access token without expiry and without refresh token is an active
// connection whose token is handed out with no expiry, and for which
// nothing is ever scheduled: a second connection, whose token expires,
// ends (refresh_not_granted, one event, tokens destroyed) when the clock
// passes its expiry, which shows the scheduler ran after the move, while
// the first has no new event and never a refresh request. A 401 against
// the first's token ends it at once (access_token_rejected).
func TestGrantsWithoutRefreshToken(t *testing.T) {
	in := start(t, nil)

	grantMode(t, in, sandbox.RefreshTokensNever, "0s")
	forever := connectWith(t, in, "export-jobs:read", "users:read")
	if c := load(t, in, forever); c.Tokens.RefreshTokenFP != "" || !c.Tokens.AccessTokenExpiresAt.IsZero() {
		t.Fatalf("non-expiring grant: %+v", c.Tokens)
	}
	grantMode(t, in, "", "10m")
	expiring := connectWith(t, in, "export-jobs:read", "users:read")
	c := load(t, in, expiring)
	exp := c.Tokens.AccessTokenExpiresAt
	if c.Tokens.RefreshTokenFP != "" || exp.IsZero() {
		t.Fatalf("expiring grant: %+v", c.Tokens)
	}
	foreverTok := handedOut(t, in, forever)
	expTok := handedOut(t, in, expiring)
	if st, _ := callAPI(t, in, expTok); st != http.StatusOK {
		t.Fatalf("API with the expiring token: %d", st)
	}

	// Shortly before its expiry (outside the gate's 10 s margin) the
	// expiring token is still handed out, the connection still active.
	in.advance(time.Until(exp) - 30*time.Second)
	if got := handedOut(t, in, expiring); got != expTok {
		t.Fatal("another token handed out before expiry")
	}
	// Past it: unauthenticated with refresh_not_granted.
	in.advance(31 * time.Second)
	eventually(t, 10*time.Second, "refresh_not_granted", func() bool {
		c := load(t, in, expiring)
		return c.State == domain.StateUnauthenticated && !c.TokensHeld
	})
	if got, want := history(t, in, expiring), append(append([]string{}, authorised...), "refresh.failed:terminal", "tokens.invalidated"); !equalSeq(got, want) {
		t.Fatalf("expiring grant's events %v, want %v", got, want)
	}
	h, _ := in.Store.History(ctxT(t), expiring)
	if rf := h[3].Payload.(domain.RefreshFailed); rf.Reason != domain.ReasonRefreshNotGranted || rf.ErrorCode != domain.ErrorCodeNoRefreshToken || rf.Class != "terminal" {
		t.Fatalf("refresh.failed %+v", rf)
	}
	if !vaultEmpty(t, in, expiring) {
		t.Fatal("the vault still holds the expired grant's tokens")
	}
	st, body := tokenOverHTTP(t, in, expiring)
	if st != http.StatusConflict || body["reason"] != string(domain.ReasonRefreshNotGranted) || !strings.Contains(body["reason_text"].(string), "offline access") {
		t.Fatalf("/token after expiry: %d %v", st, body)
	}
	st, body = apiCall(t, in, http.MethodGet, "/v1/connections/"+expiring, nil)
	if st != http.StatusOK || body["reason"] != string(domain.ReasonRefreshNotGranted) || body["needs_reauthorisation"] != true {
		t.Fatalf("status after expiry: %d %v", st, body)
	}

	// The clock moved ten minutes; now a year more: nothing for forever.
	in.advance(365 * 24 * time.Hour)
	if got := history(t, in, forever); !equalSeq(got, authorised) {
		t.Fatalf("non-expiring grant's events %v", got)
	}
	if got := handedOut(t, in, forever); got != foreverTok {
		t.Fatal("the non-expiring token changed")
	}
	if s := stats(t, in); s.TokenRequests.RefreshToken != 0 || s.RefreshTokensWithheld != 2 {
		t.Fatalf("sandbox: %d refresh requests (want 0: nothing to present), %d withheld", s.TokenRequests.RefreshToken, s.RefreshTokensWithheld)
	}
	if st, _ := callAPI(t, in, foreverTok); st != http.StatusOK {
		t.Fatalf("API with the non-expiring token a year on: %d", st)
	}

	// Its death shows as an API rejection: a 401 reported ends it.
	admin(t, in, "revoke-grants", nil, nil)
	st, www := callAPI(t, in, foreverTok)
	if st != http.StatusUnauthorized {
		t.Fatalf("API after revocation: %d", st)
	}
	st, body = apiCall(t, in, http.MethodPost, "/v1/connections/"+forever+"/rejections",
		map[string]any{"status": st, "www_authenticate": www, "access_token_fp": domain.Fingerprint(foreverTok)})
	if st != http.StatusOK || body["state"] != string(domain.StateUnauthenticated) || body["reason"] != string(domain.ReasonAccessTokenRejected) {
		t.Fatalf("rejection: %d %v", st, body)
	}
	if got, want := history(t, in, forever), append(append([]string{}, authorised...), "access.rejected:terminal", "tokens.invalidated"); !equalSeq(got, want) {
		t.Fatalf("non-expiring grant's events %v, want %v", got, want)
	}
	if s := stats(t, in); s.TokenRequests.RefreshToken != 0 {
		t.Fatalf("sandbox: %d refresh requests", s.TokenRequests.RefreshToken)
	}
	if st, _ := tokenOverHTTP(t, in, forever); st != http.StatusConflict {
		t.Fatalf("/token after the rejection: %d", st)
	}

	// Reconnecting with a mode that grants a refresh token brings it back.
	grantMode(t, in, sandbox.RefreshTokensAlways, "1h")
	authorise(t, in, expiring)
	if c := load(t, in, expiring); c.State != domain.StateActive || c.Tokens.RefreshTokenFP == "" {
		t.Fatalf("after reconnecting: %+v", c)
	}
}

// A provider that grants a refresh token only with offline_access: the
// connection that requests it gets one and is refreshed by the scheduler
// (rotated); the one that does not is used until its token expires and
// then ends with refresh_not_granted.
func TestRefreshTokenOnlyWithOfflineAccess(t *testing.T) {
	in := start(t, nil)
	grantMode(t, in, "scope:"+sandbox.OfflineAccessScope, "20m")
	offline := connectWith(t, in, "export-jobs:read", "users:read", sandbox.OfflineAccessScope)
	online := connectWith(t, in, "export-jobs:read", "users:read")
	co, cn := load(t, in, offline), load(t, in, online)
	if co.Tokens.RefreshTokenFP == "" || cn.Tokens.RefreshTokenFP != "" {
		t.Fatalf("refresh tokens: with offline_access %q, without %q", co.Tokens.RefreshTokenFP, cn.Tokens.RefreshTokenFP)
	}
	if !contains(co.Tokens.Scopes, sandbox.OfflineAccessScope) {
		t.Fatalf("granted scopes %v", co.Tokens.Scopes)
	}
	oldTok := handedOut(t, in, offline)
	handedOut(t, in, online)

	in.advance(20*time.Minute + time.Second) // past both expiries (and the refresh lead)
	eventually(t, 15*time.Second, "the refresh and the end", func() bool {
		return contains(history(t, in, offline), "refresh.succeeded") && load(t, in, online).State == domain.StateUnauthenticated
	})
	if c := load(t, in, online); c.Reason != domain.ReasonRefreshNotGranted {
		t.Fatalf("without offline_access: %s", c.Reason)
	}
	c := load(t, in, offline)
	if c.State != domain.StateActive || c.Tokens.RefreshTokenFP == co.Tokens.RefreshTokenFP || !c.LastRefreshOK {
		t.Fatalf("with offline_access: %+v", c)
	}
	if tok := handedOut(t, in, offline); tok == oldTok {
		t.Fatal("the refreshed connection hands out the old token")
	}
	if s := stats(t, in); s.TokenRequests.RefreshToken < 1 || s.RefreshTokenReuse != 0 || s.RefreshTokensWithheld != 1 {
		t.Fatalf("sandbox: %d refresh requests, %d reuse, %d withheld", s.TokenRequests.RefreshToken, s.RefreshTokenReuse, s.RefreshTokensWithheld)
	}
}

// A provider that keeps the refresh token (refresh responses without
// refresh_token, RFC 6749 §6): tokenline keeps presenting the one it has,
// records the refreshes as not rotated, and the connection stays active
// over several cycles, manual and scheduled.
func TestProviderKeepsRefreshToken(t *testing.T) {
	in := start(t, nil)
	grantMode(t, in, sandbox.RefreshTokensKeep, "20m")
	id := connectWith(t, in, "export-jobs:read", "users:read")
	first, err := in.Vault.Get(ctxT(t), id)
	if err != nil || first.RefreshToken == "" {
		t.Fatalf("vault: %v", err)
	}
	fp := load(t, in, id).Tokens.RefreshTokenFP
	if err := refreshNow(t, in, id); err != nil {
		t.Fatal(err)
	}
	in.advance(20*time.Minute + time.Second) // the scheduler refreshes again
	eventually(t, 15*time.Second, "a scheduled refresh", func() bool {
		n := 0
		for _, e := range history(t, in, id) {
			if e == "refresh.succeeded" {
				n++
			}
		}
		return n == 2
	})
	h, err := in.Store.History(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if rs, ok := e.Payload.(domain.RefreshSucceeded); ok && (rs.Rotated || (rs.Tokens.RefreshTokenFP != "" && rs.Tokens.RefreshTokenFP != fp)) {
			t.Fatalf("refresh.succeeded %+v: the provider kept the refresh token", rs)
		}
	}
	c := load(t, in, id)
	now, err := in.Vault.Get(ctxT(t), id)
	if err != nil || c.State != domain.StateActive || c.Tokens.RefreshTokenFP != fp || !c.RefreshTokenKept ||
		now.RefreshToken != first.RefreshToken || now.AccessToken == first.AccessToken {
		t.Fatalf("after two refreshes: %+v (vault %v)", c, err)
	}
	if tok := handedOut(t, in, id); tok != now.AccessToken {
		t.Fatal("/token does not hand out the refreshed access token")
	}
	if s := stats(t, in); s.RefreshTokensKept != 2 || s.RefreshTokenReuse != 0 || s.Revocations != 0 {
		t.Fatalf("sandbox: kept %d, reuse %d, revocations %d", s.RefreshTokensKept, s.RefreshTokenReuse, s.Revocations)
	}
}
