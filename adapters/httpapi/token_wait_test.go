package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// appendCmd decides cmd against the stored connection and appends it, as
// the lifecycle would (the gate follows the store's appends).
func (e *env) appendCmd(id string, cmd domain.Command) {
	e.t.Helper()
	c, err := e.store.Load(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := domain.Decide(&c, cmd)
	if err != nil {
		e.t.Fatal(err)
	}
	ev := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: time.Now().UTC(), Actor: "instance/test", Payload: p}
	if _, err := e.store.Append(e.t.Context(), id, c.Version, ev); err != nil {
		e.t.Fatal(err)
	}
}

// While a refresh is in flight /token waits for it and hands out the
// token once it lands; when it does not land within ?wait= it answers 503
// refresh_in_progress with Retry-After, not 409. A bad wait is 400.
func TestTokenWaitsForRefresh(t *testing.T) {
	e := newEnvWith(t, envConfig{noScheduler: true})
	c := e.create("users:read")
	e.authorise(c.ID)
	want := e.token(c.ID)

	for _, bad := range []string{"abc", "-1s", "11s", "11", "1e9"} {
		seq := e.lastSeq()
		resp, body := e.request("GET", "/v1/connections/"+c.ID+"/token?wait="+bad, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_query") || e.lastSeq() != seq {
			t.Errorf("wait=%s: %d %s", bad, resp.StatusCode, body)
		}
	}

	e.appendCmd(c.ID, domain.StartRefresh{LeaseUntil: time.Now().Add(time.Minute), Trigger: domain.TriggerManual})
	resp, body := e.request("GET", "/v1/connections/"+c.ID+"/token?wait=50ms", nil)
	var ge apitypes.GateErrorBody
	e.expect(resp, body, http.StatusServiceUnavailable, &ge)
	if ge.Error != apitypes.GateErrorRefreshInProgress || ge.ActionBy != "" || ge.RetryAfter < 1 || resp.Header.Get("Retry-After") != strconv.Itoa(ge.RetryAfter) || ge.ReauthoriseURL != "" {
		t.Fatalf("refresh in flight: %s (Retry-After %q)", body, resp.Header.Get("Retry-After"))
	}

	// A request that waits (10 s) gets the token as soon as the refresh ends.
	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	go func() {
		resp, body := e.request("GET", "/v1/connections/"+c.ID+"/token?wait=10s", nil)
		got <- answer{resp.StatusCode, body}
	}()
	for i := 0; i < 1000 && e.gate.Waiters() == 0; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if e.gate.Waiters() != 1 {
		t.Fatalf("%d requests wait on the gate, want 1", e.gate.Waiters())
	}
	// The refresh fails transiently: the connection is active again with its token.
	e.appendCmd(c.ID, domain.FailRefresh{ErrorCode: "network", RetryAt: time.Now().Add(time.Minute), MaxAttempts: 5})
	a := <-got
	var tr apitypes.TokenResponse
	if a.status != http.StatusOK || json.Unmarshal(a.body, &tr) != nil || tr.AccessToken != want {
		t.Fatalf("waiting request: %d %s", a.status, a.body)
	}
}

// A client whose secret the provider no longer accepts is the operator's
// to fix: /token answers 409 operator_action_required without a
// reauthorise link, the status says action_by operator and what to do;
// once the operator installed the new secret the user is asked to
// reconnect.
func TestOperatorActionRequired(t *testing.T) {
	e := newEnvWith(t, envConfig{noScheduler: true})
	c := e.create("users:read")
	e.authorise(c.ID)
	resp, b := e.request("POST", "/sandbox/admin/rotate-client-secret", nil)
	var rot struct {
		ClientSecret string `json:"client_secret"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &rot) != nil || rot.ClientSecret == "" {
		t.Fatalf("rotate: %d %s", resp.StatusCode, b)
	}
	if err := e.life.Refresh(t.Context(), c.ID, domain.TriggerManual); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("refresh with the old secret: %v", err)
	}
	resp, body := e.request("GET", "/v1/connections/"+c.ID+"/token", nil)
	var ge apitypes.GateErrorBody
	e.expect(resp, body, http.StatusConflict, &ge)
	if ge.Error != apitypes.GateErrorOperatorAction || ge.ActionBy != domain.ActorOperator || ge.Reason != domain.ReasonInvalidClient ||
		ge.ReauthoriseURL != "" || !strings.Contains(ge.Message, "PUT /v1/providers/sandbox/client-secret") || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("invalid_client: %s", body)
	}
	st := e.get(c.ID)
	if st.ActionBy != domain.ActorOperator || !strings.Contains(st.OperatorText, "PUT /v1/providers/sandbox/client-secret") {
		t.Fatalf("status after invalid_client: action_by %q operator_text %q", st.ActionBy, st.OperatorText)
	}
	resp, body = e.request("PUT", "/v1/providers/sandbox/client-secret", map[string]string{"client_secret": rot.ClientSecret})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("install: %d %s", resp.StatusCode, body)
	}
	if st := e.get(c.ID); st.ActionBy != domain.ActorUser || st.OperatorText != "" || !st.NeedsReauthorisation {
		t.Fatalf("status after the new secret: action_by %q operator_text %q", st.ActionBy, st.OperatorText)
	}
	resp, body = e.request("GET", "/v1/connections/"+c.ID+"/token", nil)
	e.expect(resp, body, http.StatusConflict, &ge)
	if ge.Error != apitypes.GateErrorReauthorisation || ge.ActionBy != domain.ActorUser || ge.ReauthoriseURL == "" {
		t.Fatalf("after the new secret: %s", body)
	}
	e.authorise(c.ID)
	e.token(c.ID)
}
