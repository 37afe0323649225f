package apitypes_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

const id = "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d"

func TestStatusOfActive(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, paris)
	tok := domain.Tokens{AccessToken: "at-secret-value", RefreshToken: "rt-secret-value", Expiry: t0.Add(time.Hour), Scopes: []string{"users:read"}}
	c := domain.Connection{ID: id, Provider: "sandbox", State: domain.StateActive, Since: t0, Created: t0.Add(-time.Hour),
		Scopes: []string{"users:read"}, Config: map[string]string{"team": "x"}, Tokens: tok.Info(), TokensHeld: true,
		LastRefreshAt: t0, LastErrorCode: "temporarily_unavailable", TransientFailures: 1, RetryAt: t0.Add(time.Minute),
		Version: 7, Events: 5}
	s := apitypes.StatusOf(&c)
	if s.ID != id || s.State != domain.StateActive || s.AccessTokenFP != tok.Info().AccessTokenFP || !s.HasTokens ||
		!s.AccessTokenExpiresAt.Equal(tok.Expiry) || s.AccessTokenExpiresAt.Location() != time.UTC || s.Since.Location() != time.UTC ||
		s.LastRefresh == nil || s.LastRefresh.OK || s.LastRefresh.ErrorCode != "temporarily_unavailable" ||
		s.TransientFailures != 1 || s.RetryAt.IsZero() || s.Version != 7 || s.Events != 5 ||
		s.NeedsReauthorisation || s.ReauthoriseURL != "" || s.Config["team"] != "x" || len(s.GrantedScopes) != 1 {
		t.Fatalf("status %+v", s)
	}
	// The JSON form is snake_case, has every key and holds no token.
	b, _ := json.Marshal(s)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for k := range m {
		if !snake.MatchString(k) {
			t.Errorf("JSON key %q is not snake_case", k)
		}
	}
	for _, k := range []string{"id", "provider", "state", "reason", "reason_text", "since", "created_at", "scopes", "config", "has_tokens", "access_token_fp", "access_token_expires_at", "last_refresh", "transient_failures", "retry_at", "needs_reauthorisation", "deleted", "version", "events"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if strings.Contains(string(b), tok.AccessToken) || strings.Contains(string(b), tok.RefreshToken) {
		t.Fatal("status JSON holds a token")
	}
	// A copy: changing the status does not change the aggregate.
	s.Config["team"], s.Scopes[0] = "y", "z"
	if c.Config["team"] != "x" || c.Scopes[0] != "users:read" {
		t.Fatal("StatusOf shares the aggregate's map or slice")
	}
}

func TestStatusOfNeverAuthorised(t *testing.T) {
	c := domain.Connection{ID: id, Provider: "sandbox", State: domain.StateUnauthenticated, Reason: domain.ReasonNeverAuthorised,
		Since: time.Now(), Created: time.Now()}
	s := apitypes.StatusOf(&c)
	ri, _ := domain.ReasonNeverAuthorised.Info()
	if !s.NeedsReauthorisation || s.ReasonText != ri.UserText || s.ReauthoriseURL != "/v1/connections/"+id+"/authorize" ||
		s.HasTokens || s.LastRefresh != nil || s.AccessTokenFP != "" {
		t.Fatalf("status %+v", s)
	}
	// Never null: the API and the UI read scopes and config as they are.
	b, _ := json.Marshal(s)
	for _, want := range []string{`"scopes":[]`, `"config":{}`, `"reason":"never_authorised"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s: %s", want, b)
		}
	}
	for _, absent := range []string{"access_token_expires_at", "last_refresh", "retry_at", "lease_until", "granted_scopes"} {
		if strings.Contains(string(b), absent) {
			t.Errorf("status JSON has %s: %s", absent, b)
		}
	}
}

func TestPath(t *testing.T) {
	for _, tc := range []struct{ route, value, want string }{
		{apitypes.RouteConnection, id, "/v1/connections/" + id},
		{apitypes.RouteEvents, id, "/v1/connections/" + id + "/events"},
		{apitypes.RouteConnection, "../../healthz", "/v1/connections/..%2F..%2Fhealthz"},
		{apitypes.RouteConnection, "a b?c", "/v1/connections/a%20b%3Fc"},
		{apitypes.RouteClientSecret, "sandbox", "/v1/providers/sandbox/client-secret"},
		{apitypes.RouteConnections, "ignored", "/v1/connections"},
	} {
		if got := apitypes.Path(tc.route, tc.value); got != tc.want {
			t.Errorf("Path(%q, %q) = %q, want %q", tc.route, tc.value, got, tc.want)
		}
	}
	if got := apitypes.ReauthorisePath(id); got != "/v1/connections/"+id+"/authorize" {
		t.Errorf("ReauthorisePath = %q", got)
	}
}
