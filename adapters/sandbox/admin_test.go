package sandbox_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

func TestAdminRevokeGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	a, b := e.grant(), e.grant()
	// A rotated grant counts once.
	b, err := e.refresh(b.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}

	out := e.mustAdmin(http.MethodPost, "/sandbox/admin/revoke-grants", "")
	if num(out["revoked"]) != 2 {
		t.Fatalf("revoked = %v, want 2", out["revoked"])
	}
	for _, tok := range []*oauth2.Token{a, b} {
		_, err := e.refresh(tok.RefreshToken)
		mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
		e.assertAPI(tok.AccessToken, http.StatusUnauthorized)
	}
	st := e.srv.Stats()
	if st.Revocations != 2 || st.RefreshTokenReuse != 0 {
		t.Fatalf("revocations = %d reuse = %d, want 2 and 0 (revoked is not reuse)", st.Revocations, st.RefreshTokenReuse)
	}
	// Nothing left to revoke; new grants work.
	if out := e.mustAdmin(http.MethodPost, "/sandbox/admin/revoke-grants", ""); num(out["revoked"]) != 0 {
		t.Fatalf("second revoke = %v", out)
	}
	e.assertAPI(e.grant().AccessToken, http.StatusOK)
}

func TestAdminRevokeGrantsKillsUnusedCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	v := oauth2.GenerateVerifier()
	code := e.code(v)
	if out := e.mustAdmin(http.MethodPost, "/sandbox/admin/revoke-grants", ""); num(out["revoked"]) != 1 {
		t.Fatalf("revoked = %v, want 1", out["revoked"])
	}
	_, err := e.oc.Exchange(e.ctx, code, oauth2.VerifierOption(v))
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestAdminRotateClientSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	old := e.srv.ClientSecret()
	tok := e.grant()

	out := e.mustAdmin(http.MethodPost, "/sandbox/admin/rotate-client-secret", "")
	secret, _ := out["client_secret"].(string)
	if secret == "" || secret == old || secret != e.srv.ClientSecret() {
		t.Fatalf("rotate returned %q (old %q, ClientSecret() %q)", secret, old, e.srv.ClientSecret())
	}

	// The old secret fails at once, with invalid_client and 401 ...
	_, err := e.refresh(tok.RefreshToken)
	re := mustFailWith(t, err, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(re.Response.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("401 without Basic challenge: %q", re.Response.Header.Get("WWW-Authenticate"))
	}
	// ... and did not consume the refresh token: the new secret refreshes.
	e.oc.ClientSecret = secret
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatalf("refresh with new secret: %v", err)
	}
	if st := e.srv.Stats(); st.Errors["invalid_client"] != 1 {
		t.Fatalf("errors = %v", st.Errors)
	}
}

func TestAdminExpireRefreshTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()
	out := e.mustAdmin(http.MethodPost, "/sandbox/admin/expire-refresh-tokens", "")
	if num(out["expired"]) != 1 {
		t.Fatalf("expired = %v, want 1", out["expired"])
	}
	_, err := e.refresh(tok.RefreshToken)
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
	// Access tokens are untouched; tokens issued later are fine.
	e.assertAPI(tok.AccessToken, http.StatusOK)
	if _, err := e.refresh(e.grant().RefreshToken); err != nil {
		t.Fatalf("new grant after expiry: %v", err)
	}
	if out := e.mustAdmin(http.MethodPost, "/sandbox/admin/expire-refresh-tokens", ""); num(out["expired"]) != 1 {
		t.Fatalf("second expire = %v, want 1 (only the new token)", out["expired"])
	}
}

func TestAdminFaults503ThenSuccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()
	e.mustAdmin(http.MethodPost, "/sandbox/admin/reset-stats", "")

	out := e.mustAdmin(http.MethodPost, "/sandbox/admin/faults", `{"status":503,"count":3}`)
	if num(out["status"]) != 503 || num(out["count"]) != 3 {
		t.Fatalf("faults answer = %v", out)
	}
	for i := range 3 {
		_, err := e.refresh(tok.RefreshToken)
		re := mustFailWith(t, err, http.StatusServiceUnavailable, "temporarily_unavailable")
		if re.Response.Header.Get("Retry-After") != "" {
			t.Fatalf("attempt %d: unexpected Retry-After", i)
		}
	}
	// The faults did not consume the refresh token.
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatalf("4th refresh: %v", err)
	}
	st := e.srv.Stats()
	if st.FaultsInjected != 3 || st.Failures != 3 || st.Successes != 1 ||
		st.Errors["temporarily_unavailable"] != 3 || st.TokenRequests.RefreshToken != 4 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestAdminFaults429CarriesRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()
	e.mustAdmin(http.MethodPost, "/sandbox/admin/faults", `{"status":429,"count":2,"retry_after":7}`)
	for range 2 {
		_, err := e.refresh(tok.RefreshToken)
		re := mustFailWith(t, err, http.StatusTooManyRequests, "temporarily_unavailable")
		if got := re.Response.Header.Get("Retry-After"); got != "7" {
			t.Fatalf("Retry-After = %q, want 7", got)
		}
	}
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatalf("after faults: %v", err)
	}

	// 429 without retry_after still says when to come back; a custom error
	// code is passed through.
	e.mustAdmin(http.MethodPost, "/sandbox/admin/faults", `{"status":429,"count":1}`)
	_, err := e.tryGrant()
	if re := mustFailWith(t, err, http.StatusTooManyRequests, "temporarily_unavailable"); re.Response.Header.Get("Retry-After") != "1" {
		t.Fatalf("default Retry-After = %q", re.Response.Header.Get("Retry-After"))
	}
	e.mustAdmin(http.MethodPost, "/sandbox/admin/faults", `{"status":400,"count":1,"error":"invalid_grant"}`)
	_, err = e.tryGrant()
	mustFailWith(t, err, http.StatusBadRequest, "invalid_grant")
}

func TestAdminFaultsValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, body := range []string{
		``,
		`{`,
		`not json`,
		`{"status":503,"count":3,"extra":1}`,
		`{"status":200,"count":1}`,
		`{"status":399,"count":1}`,
		`{"status":600,"count":1}`,
		`{"count":1}`,
		`{"status":503}`,
		`{"status":503,"count":0}`,
		`{"status":503,"count":-1}`,
		`{"status":503,"count":10001}`,
		`{"status":"503","count":1}`,
		`{"status":503,"count":1,"retry_after":-1}`,
		`{"status":503,"count":1,"error":"bad error"}`,
		`{"status":503,"count":1} {"status":503,"count":1}`,
		`[]`,
	} {
		status, out := e.admin(http.MethodPost, "/sandbox/admin/faults", body)
		if status != http.StatusBadRequest || out["error"] != "invalid_request" {
			t.Errorf("body %q: %d %v, want 400 invalid_request", body, status, out)
		}
	}
	// None of them armed a fault.
	if _, err := e.tryGrant(); err != nil {
		t.Fatalf("grant after rejected fault requests: %v", err)
	}
	if st := e.srv.Stats(); st.FaultsInjected != 0 {
		t.Fatalf("faults injected = %d", st.FaultsInjected)
	}
	for _, ok := range []string{`{"status":500,"count":10000}`, `{"status":400,"count":1}`} {
		if status, out := e.admin(http.MethodPost, "/sandbox/admin/faults", ok); status != http.StatusOK {
			t.Errorf("body %q: %d %v", ok, status, out)
		}
	}
}

func TestAdminConsentValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, body := range []string{`{"mode":"maybe"}`, `{}`, `{"mode":"deny","x":1}`, `nope`} {
		if status, _ := e.admin(http.MethodPost, "/sandbox/admin/consent", body); status != http.StatusBadRequest {
			t.Errorf("consent %q = %d, want 400", body, status)
		}
	}
	e.mustAdmin(http.MethodPost, "/sandbox/admin/consent", `{"mode":"deny"}`)
	e.authorizeRefused("after consent=deny", "access_denied")
}

// Every admin path and method needs the admin token: without it, with a
// wrong one or with another scheme the caller gets 401 (with a
// WWW-Authenticate challenge), from loopback or not, and nothing changes.
func TestAdminRequiresToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sandbox.Config) { c.AdminToken = "admin-token-0123456789" })
	if e.srv.AdminToken() != "admin-token-0123456789" {
		t.Fatalf("AdminToken() = %q", e.srv.AdminToken())
	}
	h := e.srv.Handler()
	secret := e.srv.ClientSecret()
	tok := e.grant()

	paths := []struct{ method, path, body string }{
		{http.MethodPost, "/sandbox/admin/revoke-grants", ""},
		{http.MethodPost, "/sandbox/admin/rotate-client-secret", ""},
		{http.MethodPost, "/sandbox/admin/expire-refresh-tokens", ""},
		{http.MethodPost, "/sandbox/admin/faults", `{"status":503,"count":5}`},
		{http.MethodPost, "/sandbox/admin/consent", `{"mode":"deny"}`},
		{http.MethodPost, "/sandbox/admin/grant-mode", `{"refresh_token":"never"}`},
		{http.MethodGet, "/sandbox/admin/grant-mode", ""},
		{http.MethodGet, "/sandbox/admin/stats", ""},
		{http.MethodPost, "/sandbox/admin/reset-stats", ""},
		{http.MethodGet, "/sandbox/admin/revoke-grants", ""}, // wrong method: still 401
		{http.MethodGet, "/sandbox/admin/unknown", ""},
	}
	auths := []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer admin-token-012345678", "Basic admin-token-0123456789",
		"Bearer admin-token-0123456789x"}
	for _, remote := range []string{"127.0.0.1:5555", "[::1]:5555", "192.0.2.1:1234"} {
		for _, auth := range auths {
			for _, p := range paths {
				req := httptest.NewRequest(p.method, p.path, strings.NewReader(p.body))
				req.RemoteAddr = remote
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s from %s with %q = %d %q, want 401 with a Bearer challenge",
						p.method, p.path, remote, auth, rec.Code, rec.Header().Get("WWW-Authenticate"))
				}
				var body map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != "unauthorized" {
					t.Errorf("%s %s: body %q", p.method, p.path, rec.Body)
				}
				if strings.Contains(rec.Body.String(), "client_secret") {
					t.Errorf("%s %s: refused answer mentions the secret", p.method, p.path)
				}
			}
		}
	}
	// None of the refused calls had an effect.
	if e.srv.ClientSecret() != secret {
		t.Fatal("secret rotated without the admin token")
	}
	e.assertAPI(tok.AccessToken, http.StatusOK)
	if _, err := e.refresh(tok.RefreshToken); err != nil {
		t.Fatalf("refresh after refused admin calls: %v", err)
	}
	if tok, err := e.tryGrant(); err != nil || tok.RefreshToken == "" {
		t.Fatalf("grant after refused admin calls (consent/faults/grant mode changed?): %v", err)
	}

	// With the token, from any address, the scheme in any case.
	for _, remote := range []string{"127.0.0.1:5555", "192.0.2.1:1234"} {
		for _, scheme := range []string{"Bearer", "bearer"} {
			req := httptest.NewRequest(http.MethodGet, "/sandbox/admin/stats", nil)
			req.RemoteAddr = remote
			req.Header.Set("Authorization", scheme+" admin-token-0123456789")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Errorf("stats from %s (%s) = %d, want 200", remote, scheme, rec.Code)
			}
		}
	}
}

// Without Config.AdminToken, New generates one: the admin API is never open.
func TestAdminTokenGenerated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	if len(e.srv.AdminToken()) < 32 {
		t.Fatalf("generated admin token %q too short", e.srv.AdminToken())
	}
	resp, err := http.Get(e.ts.URL + "/sandbox/admin/stats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stats without token = %d, want 401", resp.StatusCode)
	}
	e.mustAdmin(http.MethodGet, "/sandbox/admin/stats", "")
}

func TestStatsCountCorrectly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()                          // authorization_code: success
	fresh, err := e.refresh(tok.RefreshToken) // refresh_token: success
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.refresh("ory_rt_bogus.bogus") // refresh_token: invalid_grant
	_, _ = e.refresh(tok.RefreshToken)     // refresh_token: invalid_grant, reuse, revokes grant
	e.oc.ClientSecret = "wrong"
	_, _ = e.refresh(fresh.RefreshToken)                                               // refresh_token: invalid_client
	e.postForm("/sandbox/oauth/token", url.Values{"grant_type": {"password"}}, "", "") // other: unsupported_grant_type
	e.mustAdmin(http.MethodPost, "/sandbox/admin/faults", `{"status":502,"count":1}`)
	_, _ = e.refresh(fresh.RefreshToken) // refresh_token: fault (server_error)

	status, raw := e.admin(http.MethodGet, "/sandbox/admin/stats", "")
	if status != http.StatusOK {
		t.Fatalf("stats = %d", status)
	}
	b, _ := json.Marshal(raw)
	var got struct {
		TokenRequests struct {
			AuthorizationCode int64 `json:"authorization_code"`
			RefreshToken      int64 `json:"refresh_token"`
			Other             int64 `json:"other"`
		} `json:"token_requests"`
		Successes         int64            `json:"successes"`
		Failures          int64            `json:"failures"`
		Errors            map[string]int64 `json:"errors"`
		FaultsInjected    int64            `json:"faults_injected"`
		Revocations       int64            `json:"revocations"`
		RefreshTokenReuse int64            `json:"refresh_token_reuse"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	tr := got.TokenRequests
	if tr.AuthorizationCode != 1 || tr.RefreshToken != 5 || tr.Other != 1 ||
		got.Successes != 2 || got.Failures != 5 || got.FaultsInjected != 1 ||
		got.Revocations != 1 || got.RefreshTokenReuse != 1 ||
		got.Errors["invalid_grant"] != 2 || got.Errors["invalid_client"] != 1 ||
		got.Errors["unsupported_grant_type"] != 1 || got.Errors["server_error"] != 1 || len(got.Errors) != 4 {
		t.Fatalf("stats = %s", b)
	}
	if st := e.srv.Stats(); st.Successes != got.Successes || st.Failures != got.Failures {
		t.Fatalf("Stats() %+v disagrees with endpoint %s", st, b)
	}

	out := e.mustAdmin(http.MethodPost, "/sandbox/admin/reset-stats", "")
	if num(out["successes"]) != 0 || num(out["failures"]) != 0 {
		t.Fatalf("reset answer = %v", out)
	}
	st := e.srv.Stats()
	if st.Successes != 0 || st.Failures != 0 || st.TokenRequests.RefreshToken != 0 || len(st.Errors) != 0 || st.Errors == nil {
		t.Fatalf("after reset: %+v", st)
	}
}
