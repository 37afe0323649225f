package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

// After the client secret is rotated at the provider, refreshes fail with
// invalid_client; the operator installs the new secret with
// PUT /v1/providers/{name}/client-secret and the user reconnects.
func TestInstallRotatedClientSecret(t *testing.T) {
	e := newEnv(t)
	c := e.create("users:read")
	e.authorise(c.ID)

	resp, b := e.request("POST", "/sandbox/admin/rotate-client-secret", nil)
	var rot struct {
		ClientSecret string `json:"client_secret"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &rot) != nil || rot.ClientSecret == "" {
		t.Fatalf("rotate: %d %s", resp.StatusCode, b)
	}
	if err := e.life.Refresh(t.Context(), c.ID, domain.TriggerManual); !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("refresh with the old secret: %v", err)
	}
	seq := e.lastSeq()
	for _, bad := range []struct {
		path, body string
		status     int
	}{
		{"/v1/providers/nope/client-secret", `{"client_secret":"x"}`, http.StatusNotFound},
		{"/v1/providers/sandbox/client-secret", `{"client_secret":""}`, http.StatusBadRequest},
		{"/v1/providers/sandbox/client-secret", `{"secret":"x"}`, http.StatusBadRequest},
		{"/v1/providers/sandbox/client-secret", `not json`, http.StatusBadRequest},
	} {
		resp, body := e.request("PUT", bad.path, bad.body)
		if resp.StatusCode != bad.status {
			t.Errorf("PUT %s %s: %d %s, want %d", bad.path, bad.body, resp.StatusCode, body, bad.status)
		}
	}
	if resp, _ := e.request("POST", "/v1/providers/sandbox/client-secret", `{"client_secret":"x"}`); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	if resp, _ := e.request("PUT", "/v1/providers/sandbox/client-secret", `{"client_secret":"x"}`, "Authorization", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the API token: %d, want 401", resp.StatusCode)
	}
	if e.lastSeq() != seq {
		t.Fatal("a refused request changed the stream")
	}
	resp, body := e.request("PUT", "/v1/providers/sandbox/client-secret", map[string]string{"client_secret": rot.ClientSecret})
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("install: %d %s", resp.StatusCode, body)
	}
	if got := e.get(c.ID); got.State != domain.StateUnauthenticated || got.Reason != domain.ReasonInvalidClient {
		t.Fatalf("connection %s %s", got.State, got.Reason)
	}
	tok := e.authorise(c.ID) // the code exchange authenticates with the new secret
	if e.callAPI(tok) != http.StatusOK {
		t.Fatal("reconnected token does not work")
	}
	assertNoSecrets(t, "logs", e.logs.String(), rot.ClientSecret)
}
