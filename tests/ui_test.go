package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// uiArtifacts is where the browser test saves its screenshots (git-ignored).
const uiArtifacts = "artifacts/ui"

// TestBrowserConnectRevokeReconnect drives the web UI in a real headless
// Chromium: a browser without a login link gets the login page; one that
// opens the link is signed in (the link then works for nobody else); create a connection with the form, connect it through the
// sandbox's consent page, revoke the grants from the sandbox panel and watch
// the connection fall to unauthenticated with the reason in plain words, then
// reconnect it. It saves a screenshot after each step in tests/artifacts/ui.
func TestBrowserConnectRevokeReconnect(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the web UI browser test is skipped")
	}
	began := time.Now()

	in := start(t, func(c *app.Config) {
		c.SandboxConsent = "prompt"
		c.SandboxAccessTTL = 4 * time.Second // scheduled refresh ~3 s after each grant
		c.GateExpiryMargin = 200 * time.Millisecond
		c.Tick = 50 * time.Millisecond
	})

	dir := uiArtifacts
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}

	b := newBrowser(t, bin, dir, in)
	const (
		scopes   = "export-jobs:read users:read"
		cfgKey   = "company"
		cfgValue = "Acme ApS"
	)

	// 0. A browser without a login link (another user of this machine: its
	// own profile) gets the login page, and the API refuses its fetches.
	stranger := newBrowser(t, bin, dir, in)
	stranger.shots = 50 // its screenshots are 51-..., apart from the main flow's
	stranger.do("open /ui/ without a login link", 15*time.Second, chromedp.Navigate(in.BaseURL+"/ui/"))
	stranger.wait("the login page", 10*time.Second, `document.body.dataset.page + "|" + document.body.innerText`, func(s string) bool {
		return strings.HasPrefix(s, "login|") && strings.Contains(s, "tokenline ui")
	})
	if got, err := stranger.await(`fetch("/v1/connections").then(r => String(r.status))`); err != nil || got != "401" {
		stranger.fail("the API answered %q (%v) to a browser without a session, want 401", got, err)
	}
	stranger.shot("login-page")

	// 1. Sign in with a one-time login link (what `tokenline ui` prints).
	link, _ := in.LoginLink()
	b.do("open the login link", 15*time.Second, chromedp.Navigate(link))
	b.wait("the connections page", 15*time.Second, `location.pathname + "|" + document.body.dataset.page`,
		func(s string) bool { return s == "/ui/|connections" })
	if cookie := b.eval(`document.cookie`); cookie != "" {
		b.fail("the page's script can read cookies: %q (the session cookie must be HttpOnly)", cookie)
	}
	// The link worked once: opened again (by the other user), it signs in
	// nobody.
	stranger.do("open the used login link", 15*time.Second, chromedp.Navigate(link))
	stranger.wait("the bad-link page", 10*time.Second, `document.body.dataset.page + "|" + document.querySelector("[data-error]").dataset.error`,
		func(s string) bool { return s == "login|login_link_invalid" })
	if page := stranger.eval(`document.body.innerText`); strings.Contains(page, in.APIToken()) {
		stranger.fail("a page carries the API token")
	}

	// 2. The connections page: fill the create form and submit it.
	b.wait("the UI to be live", 15*time.Second, `document.querySelector("#live") && document.querySelector("#live").className`,
		func(s string) bool { return strings.Contains(s, "ok") })
	if got := b.eval(`document.querySelector("#create-provider").value`); got != "sandbox" {
		b.fail("provider preselected as %q, want sandbox", got)
	}
	b.do("fill the create form", 10*time.Second,
		chromedp.SendKeys(chromedp.ID("create-scopes"), scopes),
		chromedp.SendKeys(chromedp.ID("create-config-key"), cfgKey),
		chromedp.SendKeys(chromedp.ID("create-config-value"), cfgValue),
	)
	b.shot("form")
	b.do("submit the create form", 10*time.Second, chromedp.Click(chromedp.ID("create-submit")))
	id := b.wait("the new connection in the list", 15*time.Second,
		`Array.from(document.querySelectorAll("#connections .connection[data-id]")).map(li => li.dataset.id).join(",")`,
		func(s string) bool { return s != "" })
	if strings.Contains(id, ",") || !domain.ValidConnectionID(id) {
		b.fail("connections listed after one create: %q", id)
	}
	r := b.waitRow(id, "badge unauthenticated", 15*time.Second, func(r row) bool { return r.Badge == "unauthenticated" })
	if r.Reason != "never_authorised" || !r.Has("connect-button") {
		b.fail("new connection row: %+v, want reason never_authorised and a Connect button", r)
	}
	if want := "Settings: " + cfgKey + " = " + cfgValue; r.Config != want {
		b.fail("row shows %q, want %q", r.Config, want)
	}
	if want := "Scopes: " + scopes; r.Scopes != want {
		b.fail("row shows %q, want %q", r.Scopes, want)
	}
	b.shot("created")

	// 3. Connect: the sandbox's consent page, then approve.
	b.do("click Connect", 10*time.Second, chromedp.Click(chromedp.CSS(rowSel(id)+" .connect-button")))
	b.consent(scopes)
	b.shot("consent")
	b.do("click Approve", 10*time.Second, chromedp.Click(chromedp.ID("approve")))
	r = b.waitRow(id, "the connection page with badge active", 20*time.Second, func(r row) bool {
		return r.Path == "/ui/connections/"+id && r.Live && r.Badge == "active"
	})
	if !strings.HasPrefix(r.ReasonText, "Connected since") || r.Has("reconnect-button") || r.Has("connect-button") {
		b.fail("active connection page: %+v", r)
	}
	b.shot("active")

	// 4. Revoke every grant from the sandbox panel; the next scheduled refresh
	// gets invalid_grant and the page shows why in plain words.
	b.do("click Revoke all grants", 10*time.Second, chromedp.Click(chromedp.ID("sandbox-revoke-grants")))
	b.wait("the sandbox panel to confirm the revocation", 10*time.Second, `document.querySelector("#sandbox-result").textContent`,
		func(s string) bool { return strings.HasPrefix(s, "Revoked 1 grant") })
	info, _ := domain.ReasonInvalidGrant.Info()
	r = b.waitRow(id, "badge unauthenticated after the revocation", 25*time.Second, func(r row) bool {
		return r.Badge == "unauthenticated" && strings.Contains(r.ReasonText, info.UserText) &&
			strings.Contains(r.Timeline, "Renewal refused: "+info.UserText)
	})
	if r.Reason != string(domain.ReasonInvalidGrant) || !r.Has("reconnect-button") {
		b.fail("revoked connection: %+v, want reason invalid_grant and a Reconnect button", r)
	}
	t.Logf("reason shown: %q", r.ReasonText)
	b.shot("revoked")

	// 5. Reconnect through the consent page again.
	b.do("click Reconnect", 10*time.Second, chromedp.Click(chromedp.CSS(rowSel(id)+" .reconnect-button")))
	b.consent(scopes)
	b.shot("reconsent")
	b.do("click Approve", 10*time.Second, chromedp.Click(chromedp.ID("approve")))
	b.waitRow(id, "the connection page with badge active again", 20*time.Second, func(r row) bool {
		return r.Path == "/ui/connections/"+id && r.Live && r.Badge == "active" && strings.HasPrefix(r.ReasonText, "Connected since")
	})
	b.shot("reconnected")

	// The same connection, its configuration intact, and renewing again.
	c := load(t, in, id)
	if c.ID != id || c.State != domain.StateActive || c.Deleted {
		b.fail("stored connection: id %s state %s deleted %v, want %s active", c.ID, c.State, c.Deleted, id)
	}
	if c.Config[cfgKey] != cfgValue || len(c.Config) != 1 {
		b.fail("stored config %v, want %s=%s", c.Config, cfgKey, cfgValue)
	}
	if !slices.Equal(c.Scopes, strings.Fields(scopes)) {
		b.fail("stored scopes %v, want %s", c.Scopes, scopes)
	}
	eventually(t, 15*time.Second, "a scheduled refresh to succeed after reconnecting", func() bool {
		h := history(t, in, id)
		i := lastIndex(h, string(domain.EventAuthorisationCompleted))
		return i >= 0 && contains(h[i:], string(domain.EventRefreshSucceeded))
	})
	h := history(t, in, id)
	if n := count(h, string(domain.EventAuthorisationCompleted)); n != 2 {
		b.fail("history has %d authorisation.completed, want 2: %v", n, h)
	}
	if !contains(h, string(domain.EventRefreshFailed)+":terminal") {
		b.fail("history has no terminal refresh failure: %v", h)
	}

	// The list still has exactly this one connection.
	b.do("open /ui/", 15*time.Second, chromedp.Navigate(in.BaseURL+"/ui/"))
	b.waitRow(id, "the list with the connection active", 15*time.Second, func(r row) bool { return r.Live && r.Badge == "active" })
	if ids := b.eval(`Array.from(document.querySelectorAll("#connections .connection[data-id]")).map(li => li.dataset.id).join(",")`); ids != id {
		b.fail("connections listed: %q, want only %s", ids, id)
	}
	b.shot("list")
	t.Logf("browser flow took %s", time.Since(began).Round(time.Millisecond))
}

// browser is one headless Chromium tab bound to a test.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab
	dir   string
	shots int
	in    *instance
}

func newBrowser(t *testing.T, bin, dir string, in *instance) *browser {
	t.Helper()
	userData := t.TempDir()
	out := &porttest.LogBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(userData),
		chromedp.CombinedOutput(out),
	}
	// Everything the browser does is bounded by this context.
	root, cancelRoot := context.WithTimeout(context.Background(), 90*time.Second)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	// Cleanups run last-in first-out: the browser stops (and releases its
	// user data directory) before t.TempDir removes it and before tokenline
	// stops.
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		cancelRoot()
		if t.Failed() {
			t.Logf("chromium output:\n%s", tail(out.String(), 40))
		}
	})
	b := &browser{t: t, ctx: ctx, dir: dir, in: in}
	// Start the browser now, so that a browser that cannot start fails here.
	// The first action must run on the tab's own context: chromedp ties the
	// browser's lifetime to the context of the action that starts it, so a
	// per-step timeout there would stop the browser at the end of the step.
	// root bounds it instead.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium %s: %v\n%s", bin, err, tail(out.String(), 40))
	}
	return b
}

// fail saves a screenshot of the page, logs what the page says and what
// tokenline logged last, and fails the test.
func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		p := filepath.Join(b.dir, "failure.png")
		if os.WriteFile(p, png, 0o644) == nil {
			b.t.Logf("screenshot of the failure: tests/%s", p)
		}
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		b.t.Logf("page: %s", loc)
	}
	if text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)); err == nil {
		b.t.Logf("page text:\n%s", head(text, 50))
	}
	b.t.Logf("tokenline log (last lines):\n%s", tail(b.in.logs.String(), 30))
	b.t.Fatalf(format, args...)
}

// do runs steps with a timeout.
func (b *browser) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression that yields a string.
func (b *browser) eval(js string) string {
	b.t.Helper()
	s, err := b.tryEval(js)
	if err != nil {
		b.fail("evaluate %s: %v", js, err)
	}
	return s
}

func (b *browser) tryEval(js string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[string](`String((() => { try { return (`+js+`) ?? "" } catch (e) { return "" } })())`))
}

// await evaluates a JavaScript expression that yields a promise of a
// string.
func (b *browser) await(js string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
}

// wait polls a JavaScript expression until ok accepts its value, for at
// most timeout. Errors (a page that is navigating) are retried.
func (b *browser) wait(what string, timeout time.Duration, js string, ok func(string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	var lastErr error
	for {
		s, err := b.tryEval(js)
		if err == nil && ok(s) {
			return s
		}
		last, lastErr = s, err
		if time.Now().After(deadline) {
			b.fail("timed out after %s waiting for %s; last value %q, error %v", timeout, what, last, lastErr)
		}
		select {
		case <-b.ctx.Done():
			b.fail("waiting for %s: %v", what, b.ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// row is what the page shows of one connection.
type row struct {
	Path       string   `json:"path"`
	Live       bool     `json:"live"`
	Badge      string   `json:"badge"`
	State      string   `json:"state"`
	Reason     string   `json:"reason"`
	ReasonText string   `json:"reasonText"`
	Scopes     string   `json:"scopes"`
	Config     string   `json:"config"`
	Buttons    []string `json:"buttons"`
	Timeline   string   `json:"timeline"`
}

// Has reports whether the row has a button of that class.
func (r row) Has(class string) bool { return slices.Contains(r.Buttons, class) }

func rowSel(id string) string { return `.connection[data-id="` + id + `"]` }

func (b *browser) waitRow(id, what string, timeout time.Duration, ok func(row) bool) row {
	b.t.Helper()
	sel, _ := json.Marshal(rowSel(id))
	js := `JSON.stringify((() => {
		const li = document.querySelector(` + string(sel) + `);
		const text = (q) => { const n = li && li.querySelector(q); return n ? n.textContent : ""; };
		const live = document.querySelector("#live");
		const tl = document.querySelector("#timeline");
		return {
			path: location.pathname,
			live: !!live && live.classList.contains("ok"),
			badge: text(".state-badge"),
			state: li ? (li.dataset.state || "") : "",
			reason: li ? (li.dataset.reason || "") : "",
			reasonText: text(".reason-text"),
			scopes: text(".scopes"),
			config: text(".config"),
			buttons: li ? Array.from(li.querySelectorAll(".actions button")).map(b => b.className.split(" ")[0]) : [],
			timeline: tl ? tl.innerText : "",
		};
	})())`
	var r row
	b.wait(what, timeout, js, func(s string) bool {
		r = row{}
		return json.Unmarshal([]byte(s), &r) == nil && ok(r)
	})
	return r
}

// consent waits for the sandbox's consent page and checks it asks for the
// scopes.
func (b *browser) consent(scopes string) {
	b.t.Helper()
	b.wait("the sandbox consent page", 15*time.Second,
		`location.pathname + "|" + (document.querySelector("#approve") ? "approve" : "") + "|" + document.body.innerText`,
		func(s string) bool {
			return strings.HasPrefix(s, "/sandbox/oauth/authorize|approve|")
		})
	text := b.eval(`document.body.innerText`)
	for _, sc := range strings.Fields(scopes) {
		if !strings.Contains(text, sc) {
			b.fail("the consent page does not name scope %s:\n%s", sc, text)
		}
	}
}

// shot saves a full-page PNG as NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot %s: %v", name, err)
	}
	b.shots++
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.shots, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: tests/%s", p)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func head(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append(l[:lines], "…")
	}
	return strings.Join(l, "\n")
}

func lastIndex(s []string, v string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == v {
			return i
		}
	}
	return -1
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
