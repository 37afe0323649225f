package sandbox_test

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

// Each dead-token mode answers a revoked token as the provider variant it
// reproduces; a live token is answered 200 in every mode.
func TestDeadTokenModes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	live := e.grant()
	dead := e.grant()
	e.postForm("/sandbox/oauth/revoke", url.Values{"token": {dead.RefreshToken}}, "tokenline-test", e.srv.ClientSecret())
	for _, c := range []struct {
		mode   string
		status int
		www    string
		body   map[string]any
	}{
		{sandbox.DeadToken401, 401, `Bearer error="invalid_token"`, map[string]any{"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked."}},
		{sandbox.DeadToken403Empty, 403, "", map[string]any{}},
		{sandbox.DeadToken403Bearer, 403, `Bearer error="invalid_token"`, map[string]any{"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked."}},
		{sandbox.DeadToken200Error, 200, "", map[string]any{"ok": false, "error": "invalid_auth"}},
		{sandbox.DeadToken400Error, 400, "", map[string]any{"error": map[string]any{"code": "invalid_access_token", "message": "The access token is invalid, expired or revoked."}}},
	} {
		if out := e.mustAdmin(http.MethodPost, "/sandbox/admin/api-mode", `{"dead_token":"`+c.mode+`"}`); out["dead_token"] != c.mode {
			t.Fatalf("api-mode %s: %v", c.mode, out)
		}
		status, h, body := e.me(dead.AccessToken, "")
		if status != c.status || h.Get("WWW-Authenticate") != c.www || !reflect.DeepEqual(body, c.body) {
			t.Errorf("%s: %d %q %v", c.mode, status, h.Get("WWW-Authenticate"), body)
		}
		if status, _, body := e.me(live.AccessToken, ""); status != 200 || body["client_id"] != "tokenline-test" {
			t.Errorf("%s: live token %d %v", c.mode, status, body)
		}
	}
	for _, bad := range []string{`{"dead_token":"418"}`, `{}`, `{"dead_token":"401","x":1}`} {
		if status, _ := e.admin(http.MethodPost, "/sandbox/admin/api-mode", bad); status != 400 {
			t.Errorf("%s: %d", bad, status)
		}
	}
	if _, err := sandbox.New(sandbox.Config{RedirectURIs: []string{"http://127.0.0.1/cb"}, DeadTokenAnswer: "nope"}); err == nil {
		t.Fatal("New accepted an unknown DeadTokenAnswer")
	}
}

// Introspection is for the client: its credentials, not a bearer token.
func TestIntrospectionNeedsClientCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.grant()
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/sandbox/oauth/token/introspect", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Body = http.NoBody
	resp, err := e.httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bearer-authenticated introspection = %d", resp.StatusCode)
	}
	// The refresh token of a revoked grant introspects as inactive.
	in := decodeBody(t, e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.RefreshToken}}, "tokenline-test", e.srv.ClientSecret()))
	if in["active"] != true {
		t.Fatalf("live refresh token: %v", in)
	}
	e.mustAdmin(http.MethodPost, "/sandbox/admin/revoke-grants", "")
	in = decodeBody(t, e.postForm("/sandbox/oauth/token/introspect", url.Values{"token": {tok.RefreshToken}}, "tokenline-test", e.srv.ClientSecret()))
	if in["active"] != false {
		t.Fatalf("revoked refresh token: %v", in)
	}
}
