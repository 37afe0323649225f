package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium finds a headless-capable Chromium (TOKENLINE_CHROMIUM wins).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TOKENLINE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium installed (apt-get install chromium); browser test skipped")
	return ""
}

// render loads url in headless Chromium, lets the page's JavaScript run,
// and returns the resulting DOM. With TOKENLINE_UI_SCREENSHOTS=dir it also
// saves a screenshot there.
func render(t *testing.T, bin, url, shot string) string {
	t.Helper()
	args := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000", "--window-size=1100,1400"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", url, err)
	}
	if dir := os.Getenv("TOKENLINE_UI_SCREENSHOTS"); dir != "" && shot != "" {
		p, _ := filepath.Abs(filepath.Join(dir, shot))
		if err := exec.CommandContext(ctx, bin, append(args, "--screenshot="+p, url)...).Run(); err != nil {
			t.Logf("screenshot %s: %v", shot, err)
		}
	}
	return string(out)
}

// connectionHTML returns the rendered <li> of one connection.
func connectionHTML(t *testing.T, dom, id string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<li [^>]*data-id="` + id + `"[^>]*>.*?</li>`)
	m := re.FindString(dom)
	if m == "" {
		t.Fatalf("connection %s not rendered in:\n%s", id, dom)
	}
	return m
}

// TestBrowserRendersStates checks, in a real browser, that a login link
// signs the browser in, that the UI's JavaScript then fetches the API with
// the session cookie and renders each state with its badge, plain-words
// reason and the right button, and that a browser without the link (another
// user of the machine: a fresh profile) gets only the login page.
func TestBrowserRendersStates(t *testing.T) {
	bin := chromium(t)
	e := newEnv(t)

	fresh := e.create("users:read")
	active := e.create("users:read")
	e.authorise(active.ID)
	revoked := e.create("users:read")
	e.authorise(revoked.ID)
	waiting := e.create("users:read")
	e.startAuthorize(waiting.ID)
	e.sandboxAdmin("revoke-grants", nil)
	resp, body := e.request("POST", "/v1/connections/"+revoked.ID+"/rejections", map[string]any{"status": 401})
	e.expect(resp, body, http.StatusOK, nil)
	// active's grant was revoked too, but nothing has noticed yet: it is
	// still active until its next refresh or rejected call.

	stranger := render(t, bin, e.base+"/ui/", "login.png")
	if !strings.Contains(stranger, `data-page="login"`) || !strings.Contains(stranger, "tokenline ui") ||
		strings.Contains(stranger, "connections") && strings.Contains(stranger, fresh.ID) || strings.Contains(stranger, apiToken) {
		t.Errorf("a browser without a login link got:\n%s", stranger)
	}

	dom := render(t, bin, e.loginLink()+"&next=/ui/", "connections.png")
	if !strings.Contains(dom, `class="live ok"`) {
		t.Errorf("the page did not reach the API (live indicator):\n%s", dom)
	}
	checks := []struct {
		id, state, button string
		text              []string
	}{
		{fresh.ID, "unauthenticated", "connect-button", []string{"This connection has not been connected yet — connect to start."}},
		{active.ID, "active", "", []string{"Connected since ", "Access token valid until "}},
		{revoked.ID, "unauthenticated", "reconnect-button", []string{"The provider rejected this connection's access on ", " — reconnect to restore."}},
		{waiting.ID, "reauthorising", "connect-button", []string{"Waiting for you to finish connecting"}},
	}
	for _, c := range checks {
		li := connectionHTML(t, dom, c.id)
		if !strings.Contains(li, `data-state="`+c.state+`"`) || !strings.Contains(li, `class="state-badge state-`+c.state+`">`+c.state+`</span>`) {
			t.Errorf("%s: want badge %s in %s", c.id, c.state, li)
		}
		for _, txt := range c.text {
			if !strings.Contains(li, txt) {
				t.Errorf("%s: missing %q in %s", c.id, txt, li)
			}
		}
		if c.button != "" && !strings.Contains(li, `class="`+c.button+`"`) {
			t.Errorf("%s: no %s in %s", c.id, c.button, li)
		}
		if c.button == "" && (strings.Contains(li, "connect-button") || strings.Contains(li, "reconnect-button")) {
			t.Errorf("%s: active connection offers to connect: %s", c.id, li)
		}
		if !strings.Contains(li, `class="delete-button"`) || !strings.Contains(li, `class="reason-text"`) {
			t.Errorf("%s: no delete button or reason text", c.id)
		}
	}
	if !strings.Contains(dom, `data-stat="Grants revoked"`) {
		t.Errorf("sandbox stats not rendered")
	}

	page := render(t, bin, e.loginLink()+"&next="+url.QueryEscape("/ui/connections/"+revoked.ID+"?authorisation=denied"), "connection.png")
	for _, want := range []string{
		`class="timeline-event state-change" data-type="connection.created"`,
		`data-type="authorisation.completed"`,
		`data-type="access.rejected"`,
		`data-type="refresh.failed"`,
		`data-type="tokens.invalidated"`,
		`Renewal refused: The provider rejected this connection's access (invalid_grant, HTTP 400) → unauthenticated`,
		`class="reconnect-button"`,
		// ?authorisation=denied on a connection whose reason is not a
		// refusal: the notice says what happened, not "declined".
		`id="notice" class="notice" role="status">You approved access, but completing the connection failed`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("connection page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("connection page:\n%s", page)
	}
}
