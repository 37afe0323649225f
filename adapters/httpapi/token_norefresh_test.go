package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// connectWithout authorises a new connection while the sandbox issues no
// refresh token and access tokens living ttl ("0s": without expiry).
func (e *env) connectWithout(ttl string) string {
	e.t.Helper()
	e.sandboxAdmin("grant-mode", map[string]string{"refresh_token": "never", "access_ttl": ttl})
	c := e.create("users:read")
	cb := e.followToCallback(e.startAuthorize(c.ID))
	if resp, body := e.request("GET", cb, nil, "Authorization", ""); resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	return c.ID
}

// An expiring access token without a refresh token is handed out until
// shortly before its expiry; then /token answers 409
// reauthorisation_required (refresh_not_granted) at once, even with
// ?wait=: no refresh will come, so it never answers 503
// refresh_in_progress. (The scheduler is off: nothing else changes the
// connection meanwhile.)
func TestTokenWithoutRefreshTokenNearExpiry(t *testing.T) {
	e := newEnvWith(t, envConfig{noScheduler: true})
	id := e.connectWithout("2s")
	var resp *http.Response
	var body []byte
	for range 100 { // the token lives 2 s: it is handed out, then refused
		resp, body = e.request("GET", "/v1/connections/"+id+"/token?wait=5s", nil)
		if resp.StatusCode != http.StatusOK {
			break
		}
		var tr apitypes.TokenResponse
		if err := json.Unmarshal(body, &tr); err != nil || tr.ExpiresAt.IsZero() {
			t.Fatalf("token: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var ge apitypes.GateErrorBody
	e.expect(resp, body, http.StatusConflict, &ge)
	if ge.Error != apitypes.GateErrorReauthorisation || ge.Reason != domain.ReasonRefreshNotGranted || ge.ActionBy != domain.ActorUser ||
		ge.RetryAfter != 0 || resp.Header.Get("Retry-After") != "" || !strings.Contains(ge.Message, "reconnect") {
		t.Fatalf("near expiry: %s (Retry-After %q)", body, resp.Header.Get("Retry-After"))
	}
}

// An access token without expiry and without refresh token is handed out
// without expires_at.
func TestTokenWithoutExpiry(t *testing.T) {
	e := newEnvWith(t, envConfig{noScheduler: true})
	id := e.connectWithout("0s")
	resp, body := e.request("GET", "/v1/connections/"+id+"/token", nil)
	e.expect(resp, body, http.StatusOK, nil)
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["expires_at"]; ok || raw["access_token"] == "" {
		t.Fatalf("token without expiry: %v", raw)
	}
}
