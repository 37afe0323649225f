package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

func TestAPIRequiresBearerToken(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	routes := [][2]string{
		{"GET", "/v1/connections"},
		{"POST", "/v1/connections"},
		{"GET", "/v1/connections/" + c.ID},
		{"PATCH", "/v1/connections/" + c.ID},
		{"DELETE", "/v1/connections/" + c.ID},
		{"POST", "/v1/connections/" + c.ID + "/authorize"},
		{"GET", "/v1/connections/" + c.ID + "/token"},
		{"POST", "/v1/connections/" + c.ID + "/rejections"},
		{"GET", "/v1/connections/" + c.ID + "/events"},
		{"GET", "/v1/connections/" + c.ID + "/state?at=2030-01-01T00:00:00Z"},
		{"GET", "/v1/events/timeline"},
		{"GET", "/v1/nothing-here"},
	}
	auths := map[string]string{
		"none":         "",
		"wrong token":  "Bearer tl_wrong",
		"prefix":       "Bearer " + apiToken[:len(apiToken)-1],
		"longer":       "Bearer " + apiToken + "x",
		"basic scheme": "Basic " + apiToken,
		"empty bearer": "Bearer ",
	}
	before := e.lastSeq()
	for _, r := range routes {
		for name, auth := range auths {
			resp, body := e.request(r[0], r[1], `{"config":{"a":"b"}}`, "Authorization", auth)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s %s with %s: status %d, want 401", r[0], r[1], name, resp.StatusCode)
			}
			var eb apitypes.ErrorBody
			if json.Unmarshal(body, &eb) != nil || eb.Error != "unauthorized" {
				t.Fatalf("%s %s: body %s", r[0], r[1], body)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("no WWW-Authenticate challenge")
			}
		}
	}
	if got := e.lastSeq(); got != before {
		t.Fatalf("unauthenticated requests changed the stream: %d -> %d", before, got)
	}
	// The token is accepted with any case of the scheme.
	resp, body := e.request("GET", "/v1/connections", nil, "Authorization", "bearer "+apiToken)
	e.expect(resp, body, http.StatusOK, nil)
}

func TestCreateListGet(t *testing.T) {
	e := newEnv(t)
	var st apitypes.ConnectionStatus
	resp, body := e.request("POST", "/v1/connections", map[string]any{
		"provider": "sandbox", "scopes": []string{"users:read", "export-jobs:read"}, "config": map[string]string{"company": "acme"},
	})
	e.expect(resp, body, http.StatusCreated, &st)
	if !domain.ValidConnectionID(st.ID) || st.Provider != "sandbox" {
		t.Fatalf("created %s", body)
	}
	if st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonNeverAuthorised {
		t.Fatalf("new connection is %s/%s, want unauthenticated/never_authorised", st.State, st.Reason)
	}
	if st.ReasonText != "This connection has not been connected yet" || !st.NeedsReauthorisation {
		t.Errorf("reason_text %q, needs_reauthorisation %v", st.ReasonText, st.NeedsReauthorisation)
	}
	if st.ReauthoriseURL != e.base+"/v1/connections/"+st.ID+"/authorize" {
		t.Errorf("reauthorise_url %q", st.ReauthoriseURL)
	}
	if resp.Header.Get("Location") != e.base+"/v1/connections/"+st.ID {
		t.Errorf("Location %q", resp.Header.Get("Location"))
	}
	if st.Config["company"] != "acme" || len(st.Scopes) != 2 || st.Since.IsZero() || st.HasTokens {
		t.Errorf("status %s", body)
	}
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	for _, k := range []string{"id", "provider", "state", "reason", "reason_text", "since", "created_at", "scopes", "config", "has_tokens", "needs_reauthorisation", "reauthorise_url", "transient_failures", "deleted", "version", "events"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if _, ok := raw[k]; ok {
			t.Errorf("status carries %q", k)
		}
	}

	other := e.create()
	var list apitypes.ListResponse
	resp, body = e.request("GET", "/v1/connections", nil)
	e.expect(resp, body, http.StatusOK, &list)
	if len(list.Connections) != 2 || list.Connections[0].ID != st.ID || list.Connections[1].ID != other.ID {
		t.Fatalf("list (oldest first) %s", body)
	}
	got := e.get(st.ID)
	if got.ID != st.ID || got.State != st.State || got.Version != st.Version {
		t.Fatalf("get %+v, want %+v", got, st)
	}
	resp, body = e.request("GET", "/v1/connections/00000000-0000-4000-8000-000000000000", nil)
	e.expect(resp, body, http.StatusNotFound, nil)
	if !strings.Contains(string(body), `"error":"not_found"`) {
		t.Errorf("404 body %s", body)
	}
}

func TestMalformedRequestsChangeNothing(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	id := c.ID
	big := `{"provider":"sandbox","config":{"k":"` + strings.Repeat("x", 70<<10) + `"}}`
	cases := []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		code               string
	}{
		{"malformed json", "POST", "/v1/connections", `{"provider":`, nil, 400, "invalid_json"},
		{"not an object", "POST", "/v1/connections", `[1,2]`, nil, 400, "invalid_json"},
		{"unknown field", "POST", "/v1/connections", `{"provider":"sandbox","scopez":["a:b"]}`, nil, 400, "unknown_field"},
		{"trailing data", "POST", "/v1/connections", `{"provider":"sandbox"} {"provider":"sandbox"}`, nil, 400, "invalid_json"},
		{"empty body", "POST", "/v1/connections", ``, nil, 400, "invalid_json"},
		{"wrong type", "POST", "/v1/connections", `{"provider":"sandbox","scopes":"users:read"}`, nil, 400, "invalid_json"},
		{"body too large", "POST", "/v1/connections", big, nil, 413, "body_too_large"},
		{"wrong content type", "POST", "/v1/connections", `{"provider":"sandbox"}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"missing provider", "POST", "/v1/connections", `{"scopes":[]}`, nil, 400, "invalid_command"},
		{"unknown provider", "POST", "/v1/connections", `{"provider":"nope"}`, nil, 400, "unknown_provider"},
		{"invalid scope", "POST", "/v1/connections", `{"provider":"sandbox","scopes":["has space"]}`, nil, 400, "invalid_command"},
		{"bad id get", "GET", "/v1/connections/not-a-uuid", nil, nil, 400, "invalid_id"},
		{"uppercase id", "GET", "/v1/connections/" + strings.ToUpper(id), nil, nil, 400, "invalid_id"},
		{"bad id patch", "PATCH", "/v1/connections/x", `{"config":{}}`, nil, 400, "invalid_id"},
		{"bad id delete", "DELETE", "/v1/connections/a.b", nil, nil, 400, "invalid_id"},
		{"bad id authorize", "POST", "/v1/connections/abc/authorize", nil, nil, 400, "invalid_id"},
		{"bad id token", "GET", "/v1/connections/abc/token", nil, nil, 400, "invalid_id"},
		{"wildcard id", "GET", "/v1/connections/%2A/events", nil, nil, 400, "invalid_id"},
		{"patch unknown field", "PATCH", "/v1/connections/" + id, `{"config":{"a":"b"},"state":"active"}`, nil, 400, "unknown_field"},
		{"patch nothing", "PATCH", "/v1/connections/" + id, `{}`, nil, 400, "invalid_command"},
		{"patch malformed", "PATCH", "/v1/connections/" + id, `{"config":`, nil, 400, "invalid_json"},
		{"rejection bad status", "POST", "/v1/connections/" + id + "/rejections", `{"status":500}`, nil, 400, "invalid_command"},
		{"rejection unknown field", "POST", "/v1/connections/" + id + "/rejections", `{"status":401,"token":"x"}`, nil, 400, "unknown_field"},
		{"rejection body twice", "POST", "/v1/connections/" + id + "/rejections", `{"status":403,"body":"{}","body_base64":"e30="}`, nil, 400, "invalid_command"},
		{"rejection bad base64", "POST", "/v1/connections/" + id + "/rejections", `{"status":403,"body_base64":"e30"}`, nil, 400, "invalid_command"},
		{"rejection body too long", "POST", "/v1/connections/" + id + "/rejections", `{"status":403,"body":"` + strings.Repeat("x", domain.MaxRejectionBody+1) + `"}`, nil, 400, "invalid_command"},
		{"rejection 200 no rule", "POST", "/v1/connections/" + id + "/rejections", `{"status":200,"body":"{\"ok\":false,\"error\":\"invalid_auth\"}"}`, nil, 400, "invalid_command"},
		{"wrong method collection", "PUT", "/v1/connections", `{}`, nil, 405, "method_not_allowed"},
		{"wrong method delete all", "DELETE", "/v1/connections", nil, nil, 405, "method_not_allowed"},
		{"wrong method item", "POST", "/v1/connections/" + id, `{}`, nil, 405, "method_not_allowed"},
		{"wrong method authorize", "GET", "/v1/connections/" + id + "/authorize", nil, nil, 405, "method_not_allowed"},
		{"wrong method token", "POST", "/v1/connections/" + id + "/token", nil, nil, 405, "method_not_allowed"},
		{"wrong method events", "DELETE", "/v1/connections/" + id + "/events", nil, nil, 405, "method_not_allowed"},
		{"wrong method callback", "POST", "/oauth/callback", nil, nil, 405, "method_not_allowed"},
		{"wrong method healthz", "POST", "/healthz", nil, nil, 405, "method_not_allowed"},
		{"unknown route", "GET", "/v1/connections/" + id + "/secrets", nil, nil, 404, "not_found"},
		{"bad type filter", "GET", "/v1/connections/" + id + "/events?type=nope", nil, nil, 400, "invalid_type"},
		{"bad since", "GET", "/v1/connections/" + id + "/events?since=yesterday", nil, nil, 400, "invalid_time"},
		{"bad format", "GET", "/v1/connections/" + id + "/events?format=xml", nil, nil, 400, "invalid_format"},
		{"state without at", "GET", "/v1/connections/" + id + "/state", nil, nil, 400, "invalid_time"},
		{"timeline reversed", "GET", "/v1/events/timeline?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", nil, nil, 400, "invalid_time"},
		{"timeline window too large", "GET", "/v1/events/timeline?from=2030-01-01T00:00:00Z&to=2030-01-08T00:00:00.001Z", nil, nil, 400, "window_too_large"},
		{"timeline window too large from only", "GET", "/v1/events/timeline?from=2000-01-01T00:00:00Z", nil, nil, 400, "window_too_large"},
		{"update unknown", "PATCH", "/v1/connections/00000000-0000-4000-8000-000000000000", `{"config":{}}`, nil, 404, "not_found"},
		{"delete unknown", "DELETE", "/v1/connections/00000000-0000-4000-8000-000000000000", nil, nil, 404, "not_found"},
		{"authorize unknown", "POST", "/v1/connections/00000000-0000-4000-8000-000000000000/authorize", nil, nil, 404, "not_found"},
		{"token unknown", "GET", "/v1/connections/00000000-0000-4000-8000-000000000000/token", nil, nil, 404, "not_found"},
		{"events unknown", "GET", "/v1/connections/00000000-0000-4000-8000-000000000000/events", nil, nil, 404, "not_found"},
		{"events unknown jsonl", "GET", "/v1/connections/00000000-0000-4000-8000-000000000000/events?format=jsonl", nil, nil, 404, "not_found"},
		{"state unknown", "GET", "/v1/connections/00000000-0000-4000-8000-000000000000/state?at=2030-01-01T00:00:00Z", nil, nil, 404, "not_found"},
	}
	before := e.lastSeq()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.request(tc.method, tc.path, tc.body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var eb apitypes.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error != tc.code || eb.Message == "" {
				t.Fatalf("body %s, want error %q with a message", body, tc.code)
			}
			if tc.status == 405 && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
		})
	}
	if after := e.lastSeq(); after != before {
		t.Fatalf("refused requests changed the stream: last seq %d -> %d", before, after)
	}
	if got := e.get(id); got.Version != c.Version || got.State != domain.StateUnauthenticated {
		t.Fatalf("connection changed: %+v", got)
	}
}

func TestTokenRefusedWhileUnauthenticated(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	resp, body := e.request("GET", "/v1/connections/"+c.ID+"/token", nil)
	var ge apitypes.GateErrorBody
	e.expect(resp, body, http.StatusConflict, &ge)
	if ge.Error != apitypes.GateErrorReauthorisation || ge.ActionBy != domain.ActorUser || ge.State != domain.StateUnauthenticated || ge.Reason != domain.ReasonNeverAuthorised || ge.Detail == "" {
		t.Fatalf("gate answer %s", body)
	}
	if ge.ReauthoriseURL == "" || ge.ReasonText == "" {
		t.Errorf("gate answer lacks reauthorise_url or reason_text: %s", body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	if strings.Contains(string(body), "access_token") {
		t.Errorf("refusal mentions access_token: %s", body)
	}
	_, metrics := e.request("GET", "/metrics", nil)
	if !strings.Contains(string(metrics), `tokenline_gate_denials_total{detail="`+ge.Detail+`"} 1`) {
		t.Errorf("gate denial not counted for detail %q", ge.Detail)
	}
}

func TestAuthorisationFlowAndAudit(t *testing.T) {
	e := newEnv(t)
	c := e.create("users:read")
	created := time.Now()
	time.Sleep(20 * time.Millisecond)

	authURL := e.startAuthorize(c.ID)
	if !strings.HasPrefix(authURL, e.base+"/sandbox/oauth/authorize?") {
		t.Fatalf("authorize URL %q", authURL)
	}
	q := queryOf(t, authURL)
	if q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("redirect_uri") != e.base+"/oauth/callback" {
		t.Fatalf("authorize URL lacks PKCE, state or redirect: %v", q)
	}
	if st := e.get(c.ID); st.State != domain.StateReauthorising || st.AuthorisationExpiresAt.IsZero() {
		t.Fatalf("after authorize: %+v", st)
	}
	cb := e.followToCallback(authURL)
	cq := queryOf(t, cb)
	state, code := cq.Get("state"), cq.Get("code")
	resp, body := e.request("GET", cb, nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != e.base+"/ui/connections/"+c.ID {
		t.Fatalf("callback: %d Location %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}

	var tr apitypes.TokenResponse
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/token", nil)
	e.expect(resp, body, http.StatusOK, &tr)
	if tr.TokenType != "Bearer" || tr.AccessToken == "" || time.Until(tr.ExpiresAt) < 10*time.Minute {
		t.Fatalf("token answer %+v", tr)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	if code := e.callAPI(tr.AccessToken); code != http.StatusOK {
		t.Fatalf("the handed-out token does not work at the provider: %d", code)
	}
	st := e.get(c.ID)
	if st.State != domain.StateActive || st.Reason != "" || !st.HasTokens || st.AccessTokenExpiresAt.IsZero() || st.NeedsReauthorisation || st.ReauthoriseURL != "" {
		t.Fatalf("after callback: %+v", st)
	}
	statusJSON, _ := json.Marshal(st)
	assertNoSecrets(t, "status", string(statusJSON), tr.AccessToken)

	// Audit trail: CloudEvents array.
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events", nil)
	e.expect(resp, body, http.StatusOK, nil)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/cloudevents-batch+json") {
		t.Errorf("events Content-Type %q", resp.Header.Get("Content-Type"))
	}
	var evs []map[string]any
	if err := json.Unmarshal(body, &evs); err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"tokenline.connection.created", "tokenline.authorisation.started", "tokenline.authorisation.completed"}
	if len(evs) != len(wantTypes) {
		t.Fatalf("events %s", body)
	}
	for i, ev := range evs {
		if ev["type"] != wantTypes[i] || ev["specversion"] != "1.0" || ev["subject"] != c.ID {
			t.Errorf("event %d: %v", i, ev)
		}
	}
	assertNoSecrets(t, "events", string(body), tr.AccessToken, state, code)

	// Filters and JSON Lines.
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events?type=authorisation.completed&format=jsonl", nil)
	e.expect(resp, body, http.StatusOK, nil)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/jsonl") {
		t.Errorf("jsonl Content-Type %q", resp.Header.Get("Content-Type"))
	}
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev["type"] != "tokenline.authorisation.completed" {
			t.Fatalf("jsonl line %q", sc.Text())
		}
		lines++
	}
	if lines != 1 {
		t.Fatalf("jsonl with type filter: %d lines", lines)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events?type=tokenline.connection.created,authorisation.started&until="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), nil)
	evs = nil
	e.expect(resp, body, http.StatusOK, &evs)
	if len(evs) != 2 {
		t.Fatalf("type filter: %s", body)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), nil)
	e.expect(resp, body, http.StatusOK, nil)
	if strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("since in the future: %s", body)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events?format=jsonl&type=connection.deleted", nil)
	e.expect(resp, body, http.StatusOK, nil)
	if len(body) != 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/jsonl") {
		t.Fatalf("jsonl without a match: %q %s", resp.Header.Get("Content-Type"), body)
	}
	// until is inclusive: the creation's own time finds it.
	var first []map[string]any
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events?until="+url.QueryEscape(evs[0]["time"].(string)), nil)
	e.expect(resp, body, http.StatusOK, &first)
	if len(first) != 1 || first[0]["type"] != "tokenline.connection.created" {
		t.Fatalf("until the creation's time: %s", body)
	}

	// State at an instant: right after creation it was unauthenticated.
	var sa httpapi.StateAtResponse
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/state?at="+created.UTC().Format(time.RFC3339Nano), nil)
	e.expect(resp, body, http.StatusOK, &sa)
	if sa.Status.State != domain.StateUnauthenticated || sa.Status.Reason != domain.ReasonNeverAuthorised || len(sa.Events) != 1 {
		t.Fatalf("state at creation: %s", body)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/state?at="+time.Now().UTC().Format(time.RFC3339Nano), nil)
	e.expect(resp, body, http.StatusOK, &sa)
	if sa.Status.State != domain.StateActive || len(sa.Events) != 3 {
		t.Fatalf("state now: %s", body)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/state?at=2000-01-01T00:00:00Z", nil)
	e.expect(resp, body, http.StatusNotFound, nil)

	// Incident timeline.
	var tl projections.TimelineReport
	resp, body = e.request("GET", "/v1/events/timeline?from="+created.Add(-time.Minute).UTC().Format(time.RFC3339)+"&to="+time.Now().Add(time.Minute).UTC().Format(time.RFC3339), nil)
	e.expect(resp, body, http.StatusOK, &tl)
	if tl.Events != 3 || len(tl.Transitions) != 3 || tl.Truncated || len(tl.Counts) != 3 {
		t.Fatalf("timeline %s", body)
	}
	if first := tl.Transitions[0]; first.From != "" || first.To != domain.StateUnauthenticated || first.Reason != domain.ReasonNeverAuthorised {
		t.Fatalf("first transition %+v", first)
	}
	if last := tl.Transitions[2]; last.From != domain.StateReauthorising || last.To != domain.StateActive || last.ConnectionID != c.ID || last.Type != domain.EventAuthorisationCompleted {
		t.Fatalf("last transition %+v", last)
	}
	for _, n := range tl.Counts {
		if n.Connections != 1 || n.Transitions != 1 {
			t.Fatalf("timeline counts %+v", tl.Counts)
		}
	}

	// Nothing secret was ever logged (the callback's query included).
	logs := e.logs.String()
	assertNoSecrets(t, "logs", logs, tr.AccessToken, state, code, apiToken, e.sb.ClientSecret())
	if strings.Contains(logs, "code=") || strings.Contains(logs, "state=") {
		t.Errorf("a query string was logged")
	}
	if !strings.Contains(logs, `"route":"GET /oauth/callback"`) {
		t.Errorf("the callback request was not access-logged")
	}
}

func TestCallbackRefusesBadStateWithoutTransition(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	first := e.followToCallback(e.startAuthorize(c.ID))
	second := e.followToCallback(e.startAuthorize(c.ID)) // a newer attempt supersedes the first

	check := func(name, u string, accept string, wantCode string) {
		t.Helper()
		before := e.lastSeq()
		resp, body := e.request("GET", u, nil, "Authorization", "", "Accept", accept)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: status %d, want 400: %s", name, resp.StatusCode, body)
		}
		if accept == "application/json" {
			var eb apitypes.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error != wantCode {
				t.Fatalf("%s: JSON %s, want %s", name, body, wantCode)
			}
		} else {
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), `data-error="`+wantCode+`"`) ||
				!strings.Contains(strings.ToLower(string(body)), "nothing was changed") {
				t.Fatalf("%s: page %s", name, body)
			}
			if strings.Contains(string(body), "tokenline-api-token") {
				t.Fatalf("%s: error page carries the API token", name)
			}
		}
		q := queryOf(t, u)
		assertNoSecrets(t, name+" answer", string(body), q.Get("state"), q.Get("code"))
		if after := e.lastSeq(); after != before {
			t.Fatalf("%s: the stream changed (%d -> %d)", name, before, after)
		}
	}
	check("forged state", e.base+"/oauth/callback?state=forged-state-value-123&code=abc", "text/html", "state_unknown")
	check("forged state json", e.base+"/oauth/callback?state=another-forged-state&code=abc", "application/json", "state_unknown")
	check("missing state", e.base+"/oauth/callback?code=abc", "", "state_missing")
	check("superseded attempt", first, "text/html", "state_mismatch")
	if st := e.get(c.ID); st.State != domain.StateReauthorising {
		t.Fatalf("after refused callbacks: %s", st.State)
	}

	// The current attempt still completes; replaying it is refused.
	resp, body := e.request("GET", second, nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("valid callback: %d %s", resp.StatusCode, body)
	}
	check("replayed state", second, "text/html", "state_unknown")
	check("replayed state json", second, "application/json", "state_unknown")
	if st := e.get(c.ID); st.State != domain.StateActive {
		t.Fatalf("after replay: %s", st.State)
	}
	assertNoSecrets(t, "logs", e.logs.String(), queryOf(t, second).Get("state"), queryOf(t, second).Get("code"), queryOf(t, first).Get("state"))
}

func TestCallbackExpiredStateChangesNothing(t *testing.T) {
	e := newEnvWith(t, envConfig{noScheduler: true})
	c := e.create()
	cb := e.followToCallback(e.startAuthorize(c.ID))
	e.clock.Advance(11 * time.Minute) // past the 10-minute attempt lifetime
	before := e.lastSeq()
	resp, body := e.request("GET", cb, nil, "Authorization", "", "Accept", "application/json")
	var eb apitypes.ErrorBody
	e.expect(resp, body, http.StatusBadRequest, &eb)
	if eb.Error != "state_expired" {
		t.Fatalf("expired state: %s", body)
	}
	if e.lastSeq() != before {
		t.Fatal("an expired callback changed the stream")
	}
	if st := e.get(c.ID); st.State != domain.StateReauthorising || st.HasTokens {
		t.Fatalf("after expired callback: %+v", st)
	}
}

func TestCallbackDeniedShowsReason(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	e.sandboxAdmin("consent", map[string]string{"mode": "deny"})
	cb := e.followToCallback(e.startAuthorize(c.ID))
	if queryOf(t, cb).Get("error") != "access_denied" {
		t.Fatalf("sandbox did not deny: %s", cb)
	}
	resp, body := e.request("GET", cb, nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), e.base+"/ui/connections/"+c.ID) {
		t.Fatalf("denied callback: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	st := e.get(c.ID)
	if st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonAuthorisationDenied || st.ReasonText != "Authorisation was declined" || !st.NeedsReauthorisation {
		t.Fatalf("after denial: %+v", st)
	}
	// The UI page it lands on is served to this (loopback) browser.
	resp, body = e.request("GET", resp.Header.Get("Location"), nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	// Reconnecting after a denial works.
	e.sandboxAdmin("consent", map[string]string{"mode": "approve"})
	e.authorise(c.ID)
}

func TestRejectionDetectionPath(t *testing.T) {
	e := newEnv(t)

	t.Run("403 insufficient_scope is recorded, stays active", func(t *testing.T) {
		c := e.create("users:read")
		tok := e.authorise(c.ID)
		var st apitypes.ConnectionStatus
		resp, body := e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 403, "www_authenticate": `Bearer error="insufficient_scope", scope="accounts:read"`})
		e.expect(resp, body, http.StatusOK, &st)
		if st.State != domain.StateActive || e.token(c.ID) != tok {
			t.Fatalf("after 403: %s", body)
		}
	})

	t.Run("401 after the user revoked access", func(t *testing.T) {
		c := e.create("users:read")
		tok := e.authorise(c.ID)
		e.sandboxAdmin("revoke-grants", nil)
		if e.callAPI(tok) != http.StatusUnauthorized {
			t.Fatal("revoked token still accepted by the provider")
		}
		var st apitypes.ConnectionStatus
		resp, body := e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 401, "www_authenticate": `Bearer error="invalid_token"`})
		e.expect(resp, body, http.StatusOK, &st)
		// The refresh the rejection triggered got invalid_grant: access
		// could not be restored.
		if st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonAccessTokenRejected || !st.NeedsReauthorisation || st.HasTokens ||
			st.LastRefresh == nil || st.LastRefresh.ErrorCode != "invalid_grant" {
			t.Fatalf("after 401 with a revoked grant: %s", body)
		}
		var ge apitypes.GateErrorBody
		resp, body = e.request("GET", "/v1/connections/"+c.ID+"/token", nil)
		e.expect(resp, body, http.StatusConflict, &ge)
		if ge.Reason != domain.ReasonAccessTokenRejected || ge.State != domain.StateUnauthenticated {
			t.Fatalf("gate after revocation: %s", body)
		}
		e.authorise(c.ID) // reconnecting restores access
	})

	t.Run("401 again after a refresh: access_token_rejected", func(t *testing.T) {
		c := e.create("users:read")
		tok := e.authorise(c.ID)
		var st apitypes.ConnectionStatus
		resp, body := e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 401, "www_authenticate": `Bearer error="invalid_token"`})
		e.expect(resp, body, http.StatusOK, &st)
		if st.State != domain.StateActive || st.LastRefresh == nil || !st.LastRefresh.OK {
			t.Fatalf("first 401 should refresh: %s", body)
		}
		tok2 := e.token(c.ID)
		if tok2 == tok {
			t.Fatal("the refresh did not replace the token")
		}
		// Without a fingerprint a late 401 could be about the old token: it
		// is recorded and changes nothing.
		resp, body = e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 401})
		e.expect(resp, body, http.StatusOK, &st)
		if st.State != domain.StateActive {
			t.Fatalf("fingerprint-less 401 after the refresh: %s", body)
		}
		// With the fresh token's fingerprint it is terminal.
		resp, body = e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 401, "access_token_fp": domain.Fingerprint(tok2)})
		e.expect(resp, body, http.StatusOK, &st)
		if st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonAccessTokenRejected {
			t.Fatalf("second 401: %s", body)
		}
	})
}

func TestPatchKeepsTokens(t *testing.T) {
	e := newEnv(t)
	c := e.create("users:read")
	tok := e.authorise(c.ID)
	before := e.get(c.ID)
	var st apitypes.ConnectionStatus
	resp, body := e.request("PATCH", "/v1/connections/"+c.ID, map[string]any{"config": map[string]string{"company": "globex", "region": "eu"}, "scopes": []string{"users:read", "accounts:read"}})
	e.expect(resp, body, http.StatusOK, &st)
	if st.State != domain.StateActive || st.Config["company"] != "globex" || st.Config["region"] != "eu" || len(st.Scopes) != 2 {
		t.Fatalf("after patch: %s", body)
	}
	if !st.HasTokens || !st.AccessTokenExpiresAt.Equal(before.AccessTokenExpiresAt) || st.Since != before.Since {
		t.Fatalf("patch touched the grant: before %+v after %+v", before, st)
	}
	if got := e.token(c.ID); got != tok {
		t.Fatal("patch changed the access token")
	}
	if e.callAPI(tok) != http.StatusOK {
		t.Fatal("token no longer works after patch")
	}
	// Config only: scopes unchanged.
	resp, body = e.request("PATCH", "/v1/connections/"+c.ID, map[string]any{"config": map[string]string{"company": "initech"}})
	e.expect(resp, body, http.StatusOK, &st)
	if len(st.Scopes) != 2 || st.Config["company"] != "initech" {
		t.Fatalf("config-only patch: %s", body)
	}
}

func TestDeleteKeepsHistory(t *testing.T) {
	e := newEnv(t)
	c := e.create("users:read")
	tok := e.authorise(c.ID)
	resp, body := e.request("DELETE", "/v1/connections/"+c.ID, nil)
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if e.callAPI(tok) != http.StatusUnauthorized {
		t.Error("the token was not revoked at the provider")
	}
	st := e.get(c.ID)
	if !st.Deleted || st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonConnectionDeleted || st.HasTokens || st.NeedsReauthorisation {
		t.Fatalf("after delete: %+v", st)
	}
	var list apitypes.ListResponse
	resp, body = e.request("GET", "/v1/connections", nil)
	e.expect(resp, body, http.StatusOK, &list)
	if len(list.Connections) != 0 {
		t.Fatalf("deleted connection listed: %s", body)
	}
	before := e.lastSeq()
	for _, r := range [][2]string{
		{"DELETE", "/v1/connections/" + c.ID},
		{"POST", "/v1/connections/" + c.ID + "/authorize"},
		{"GET", "/v1/connections/" + c.ID + "/token"},
	} {
		resp, body = e.request(r[0], r[1], nil)
		if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), `"error":"deleted"`) {
			t.Fatalf("%s %s after delete: %d %s", r[0], r[1], resp.StatusCode, body)
		}
	}
	resp, body = e.request("PATCH", "/v1/connections/"+c.ID, map[string]any{"config": map[string]string{}})
	e.expect(resp, body, http.StatusGone, nil)
	if e.lastSeq() != before {
		t.Fatal("requests on a deleted connection changed the stream")
	}
	var evs []map[string]any
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/events", nil)
	e.expect(resp, body, http.StatusOK, &evs)
	var types []string
	for _, ev := range evs {
		types = append(types, ev["type"].(string))
	}
	got := strings.Join(types, " ")
	if !strings.Contains(got, "tokenline.connection.deleted") || !strings.Contains(got, "tokenline.tokens.invalidated") || !strings.HasPrefix(got, "tokenline.connection.created") {
		t.Fatalf("history after delete: %s", got)
	}
}

// With MetricsPublic, /metrics is served without the token.
func TestMetricsPublic(t *testing.T) {
	e := newEnv(t, func(_ *env, c *httpapi.Config) { c.MetricsPublic = true })
	resp, body := e.request("GET", "/metrics", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	if !strings.Contains(string(body), httpapi.MetricConnections) {
		t.Errorf("/metrics: %s", body)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	e.authorise(c.ID)
	e.request("POST", "/v1/connections/"+c.ID+"/rejections", map[string]any{"status": 401}) // one refresh
	// By default /metrics needs the API token (and a UI session is not it).
	for name, hdr := range map[string][]string{
		"no token":    {"Authorization", ""},
		"wrong token": {"Authorization", "Bearer nope"},
		"ui session":  asBrowser(e.login()),
	} {
		resp, body := e.request("GET", "/metrics", nil, hdr...)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "tokenline_") {
			t.Errorf("/metrics with %s: %d %s", name, resp.StatusCode, body)
		}
	}
	resp, body := e.request("GET", "/metrics", nil)
	e.expect(resp, body, http.StatusOK, nil)
	text := string(body)
	for _, name := range []string{
		httpapi.MetricTransitions, httpapi.MetricRefreshes, httpapi.MetricRefreshDuration + "_bucket",
		httpapi.MetricGateDenials, httpapi.MetricNearExpiry, httpapi.MetricConnections,
	} {
		if !strings.Contains(text, "\n"+name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, want := range []string{
		`tokenline_transitions_total{type="authorisation.completed"} 1`,
		`tokenline_transitions_total{type="refresh.succeeded"} 1`,
		`tokenline_refreshes_total{class="none",outcome="success"} 1`,
		`tokenline_refresh_duration_seconds_count 1`,
		`tokenline_connections{state="active"} 1`,
		`tokenline_connections{state="unauthenticated"} 0`,
		`tokenline_tokens_near_expiry 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, c.ID) {
		t.Error("a metric carries a connection id")
	}
	// The registry is the server's own, not the global one.
	if strings.Contains(text, "go_goroutines") {
		t.Error("/metrics serves the global registry")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var broken atomic.Bool
	e := newEnv(t, func(_ *env, c *httpapi.Config) {
		c.Ready = append(c.Ready, httpapi.Check{Name: "projections", Probe: httpapi.ReadinessFunc(func(ctxArg context.Context) error {
			if broken.Load() {
				return errors.New("catching up")
			}
			return nil
		})})
	})
	var h apitypes.HealthResponse
	resp, body := e.request("GET", "/healthz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, &h)
	if h.Status != "ok" {
		t.Fatalf("healthz %s", body)
	}
	resp, body = e.request("GET", "/readyz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, &h)
	if h.Status != "ready" {
		t.Fatalf("readyz %s", body)
	}
	broken.Store(true)
	resp, body = e.request("GET", "/readyz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusServiceUnavailable, &h)
	if h.Status != "not_ready" || len(h.Reasons) != 1 || h.Reasons[0] != "projections: catching up" {
		t.Fatalf("readyz %s", body)
	}
	broken.Store(false)
	e.nc.Close()
	resp, body = e.request("GET", "/readyz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusServiceUnavailable, &h)
	if len(h.Reasons) != 1 || !strings.HasPrefix(h.Reasons[0], "nats: not connected") {
		t.Fatalf("readyz with NATS closed: %s", body)
	}
	// healthz stays up: the process still serves.
	resp, body = e.request("GET", "/healthz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
}

// TestServedFromProjections wires the server as cmd/tokenline does: reads
// from the projections runner's Status (fed by the stream, and by the
// store's append hook for read-your-own-writes), readiness and lag from the
// runner.
func TestServedFromProjections(t *testing.T) {
	var runner *projections.Runner
	e := newEnv(t, func(e *env, c *httpapi.Config) {
		ctx := context.Background()
		st := projections.NewStatus()
		cp, err := e.store.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		runner, err = projections.NewRunner(projections.RunnerConfig{Source: e.store, Checkpoints: cp, Status: st, SnapshotInterval: -1, SnapshotEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		e.store.OnAppend(func(ev domain.Event) { _, _ = st.Apply(ev) })
		if err := runner.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = runner.Close(context.Background()) })
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := runner.WaitReady(wctx); err != nil {
			t.Fatal(err)
		}
		c.Status = httpapi.StatusFromProjection{Status: st}
		c.ProjectionLag = runner.Lag
		c.Ready = append(c.Ready, httpapi.Check{Name: "projections", Probe: httpapi.ProjectionsReady(runner.Ready, runner.Lag, 100)})
	})

	c := e.create("users:read")
	if got := e.get(c.ID); got.State != domain.StateUnauthenticated {
		t.Fatalf("read-your-own-write from the projection: %+v", got)
	}
	tok := e.authorise(c.ID)
	if e.callAPI(tok) != http.StatusOK {
		t.Fatal("token does not work")
	}
	var list apitypes.ListResponse
	resp, body := e.request("GET", "/v1/connections", nil)
	e.expect(resp, body, http.StatusOK, &list)
	if len(list.Connections) != 1 || list.Connections[0].State != domain.StateActive {
		t.Fatalf("list from the projection: %s", body)
	}

	resp, body = e.request("GET", "/readyz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = e.request("GET", "/metrics", nil)
		if strings.Contains(string(body), "\ntokenline_projection_lag 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection lag never reached 0:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(body), `tokenline_connections{state="active"} 1`) {
		t.Errorf("connections gauge from the projection:\n%s", body)
	}
}
