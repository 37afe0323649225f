package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

// A connection that went unauthenticated because the provider no longer
// accepts tokenline's client secret is the operator's to fix: the UI says
// what the operator must do and does not offer Reconnect; the landing of
// an attempt whose code exchange failed that way tells the user they
// approved, not that the request was declined.
func TestBrowserOperatorAction(t *testing.T) {
	bin := chromium(t)
	e := newEnvWith(t, envConfig{noScheduler: true})
	c := e.create("users:read")
	e.authorise(c.ID)
	e.sandboxAdmin("rotate-client-secret", nil)
	if err := e.life.Refresh(t.Context(), c.ID, domain.TriggerManual); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("refresh with the rotated secret: %v", err)
	}
	dom := render(t, bin, e.loginLink()+"&next=/ui/", "operator.png")
	li := connectionHTML(t, dom, c.ID)
	if !strings.Contains(li, "the operator must act: ") || !strings.Contains(li, "client-secret") {
		t.Errorf("the operator's instruction is missing: %s", li)
	}
	if strings.Contains(li, "reconnect-button") || strings.Contains(li, "reconnect to restore") {
		t.Errorf("Reconnect offered for an operator problem: %s", li)
	}
	// The user tries anyway, approves at the provider, and the code
	// exchange fails for the client's credentials: the landing says so.
	cb := e.followToCallback(e.startAuthorize(c.ID))
	resp, body := e.request("GET", cb, nil, "Authorization", "")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(loc, "/ui/connections/"+c.ID+"?authorisation=denied") {
		t.Fatalf("callback: %d %q %s", resp.StatusCode, loc, body)
	}
	if st := e.get(c.ID); st.Reason != domain.ReasonInvalidClient || st.ActionBy != domain.ActorOperator {
		t.Fatalf("after the failed exchange: %s %s action_by %q", st.State, st.Reason, st.ActionBy)
	}
	page := render(t, bin, e.loginLink()+"&next="+url.QueryEscape(strings.TrimPrefix(loc, e.base)), "operator-landing.png")
	if !strings.Contains(page, `id="notice" class="notice" role="status">You approved access, but the provider refused tokenline's own client credentials`) ||
		strings.Contains(page, "the request was declined") {
		t.Errorf("landing after an invalid_client exchange:\n%s", page)
	}
}
