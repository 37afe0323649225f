package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
)

// webhookRow is what the Webhooks page shows of one subscription.
type webhookRow struct {
	ID      string   `json:"id"`
	State   string   `json:"state"`
	Text    string   `json:"text"`
	Buttons []string `json:"buttons"`
}

func (r webhookRow) Has(class string) bool { return slices.Contains(r.Buttons, class) }

// webhookRows reads the page's list of subscriptions.
const webhookRowsJS = `JSON.stringify(Array.from(document.querySelectorAll("#webhooks li.webhook")).map(li => ({
	id: li.dataset.id || "",
	state: (li.querySelector(".state") || {}).textContent || "",
	text: li.innerText,
	buttons: Array.from(li.querySelectorAll(".actions button")).map(b => b.className.split(" ")[0]),
})))`

func (b *browser) waitWebhooks(what string, timeout time.Duration, ok func([]webhookRow) bool) []webhookRow {
	b.t.Helper()
	var rows []webhookRow
	b.wait(what, timeout, webhookRowsJS, func(s string) bool {
		rows = nil
		return json.Unmarshal([]byte(s), &rows) == nil && ok(rows)
	})
	return rows
}

func findRow(rows []webhookRow, id string) (webhookRow, bool) {
	for _, r := range rows {
		if r.ID == id {
			return r, true
		}
	}
	return webhookRow{}, false
}

var shownSecret = regexp.MustCompile(`^Signing secret of (\S+) \(shown once[^)]*\): (whsec_\S+)$`)

// TestBrowserWebhooksPage drives the UI's Webhooks page in a real headless
// Chromium against a real loopback receiver that verifies every signature:
// the page is reached from the connections page; a subscription created
// with the form is listed with its URL, filter and secret fingerprint, its
// secret shown once (gone after a reload, never in the API's list);
// Pause and Resume change its state (an event stored while it was paused
// arrives after Resume); the delivery log shows the attempt; Rotate secret
// shows the new secret once and the next delivery verifies with it;
// Delete (after the browser's confirmation) removes it. Screenshots of each
// step go to tests/artifacts/ui-webhooks.
func TestBrowserWebhooksPage(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the webhooks page browser test is skipped")
	}
	in := start(t, hooksOn)
	r := newHookReceiver(t)
	dir := filepath.Join("artifacts", "ui-webhooks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	b := newBrowser(t, bin, dir, in)

	// Every dialog the page opens is accepted and its message kept.
	var (
		dialogMu sync.Mutex
		dialogs  []string
	)
	go func() {
		for ev, err := range chromedp.Events(b.ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			dialogMu.Lock()
			dialogs = append(dialogs, ev.Message)
			dialogMu.Unlock()
			_, _ = chromedp.Call(b.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()

	// 1. Sign in, then follow the header's Webhooks link.
	link, _ := in.LoginLink()
	b.do("open the login link", 15*time.Second, chromedp.Navigate(link))
	b.wait("the connections page", 15*time.Second, `location.pathname + "|" + document.body.dataset.page`,
		func(s string) bool { return s == "/ui/|connections" })
	b.do("click Webhooks", 10*time.Second, chromedp.Click(chromedp.ID("nav-webhooks")))
	b.wait("the webhooks page, live and empty", 15*time.Second,
		`location.pathname + "|" + document.body.dataset.page + "|" + document.querySelector("#live").className + "|" + document.querySelector("#webhooks-empty").hidden`,
		func(s string) bool { return s == "/ui/webhooks|webhooks|live ok|false" })
	b.shot("empty")

	// 2. Create a subscription with the form.
	url := r.srv.URL + "/hook"
	b.do("fill the form", 10*time.Second,
		chromedp.SendKeys(chromedp.ID("webhook-url"), url),
		chromedp.SendKeys(chromedp.ID("webhook-events"), "connection.created"),
	)
	b.do("submit the form", 10*time.Second, chromedp.Click(chromedp.ID("webhook-submit")))
	notice := b.wait("the secret shown", 15*time.Second, `document.querySelector("#webhook-secret").hidden ? "" : document.querySelector("#webhook-secret").textContent`,
		func(s string) bool { return s != "" })
	m := shownSecret.FindStringSubmatch(notice)
	if m == nil {
		b.fail("the secret notice says %q", notice)
	}
	id, secret := m[1], m[2]
	r.secret.Store(&secret)
	if e := b.eval(`document.querySelector("#webhook-error").hidden ? "" : document.querySelector("#webhook-error").textContent`); e != "" {
		b.fail("the form shows an error: %q", e)
	}
	if v := b.eval(`document.querySelector("#webhook-url").value`); v != "" {
		b.fail("the form was not reset: URL %q", v)
	}
	rows := b.waitWebhooks("the subscription listed", 15*time.Second, func(rows []webhookRow) bool {
		w, ok := findRow(rows, id)
		return ok && w.State == "active"
	})
	w, _ := findRow(rows, id)
	if len(rows) != 1 || !strings.Contains(w.Text, url) || !strings.Contains(w.Text, "Events: tokenline.connection.created") ||
		!strings.Contains(w.Text, webhook.Fingerprint(secret)) || strings.Contains(w.Text, secret) {
		b.fail("listed: %+v (want one row with the URL, the event filter and the secret's fingerprint, not the secret)", rows)
	}
	if !w.Has("webhook-pause") || w.Has("webhook-resume") || !w.Has("webhook-rotate") || !w.Has("webhook-deliveries") || !w.Has("webhook-delete") {
		b.fail("an active subscription's buttons: %v", w.Buttons)
	}
	if got, err := in.Webhooks.Get(id); err != nil || got.URL != url || got.State != domain.WebhookActive ||
		len(got.EventTypes) != 1 || got.EventTypes[0] != domain.EventConnectionCreated {
		b.fail("stored subscription: %+v, %v", got, err)
	}
	b.shot("created")

	// The secret was shown once: not after a reload, not in the API's list.
	b.do("reload", 15*time.Second, chromedp.Navigate(in.BaseURL+"/ui/webhooks"))
	b.waitWebhooks("the list after the reload", 15*time.Second, func(rows []webhookRow) bool { _, ok := findRow(rows, id); return ok })
	if s := b.eval(`document.body.innerText + "|" + document.querySelector("#webhook-secret").hidden`); strings.Contains(s, secret) || !strings.HasSuffix(s, "|true") {
		b.fail("the secret is still shown after a reload")
	}
	if got, err := b.await(`fetch("/v1/webhooks").then(r => r.text())`); err != nil || strings.Contains(got, secret) || !strings.Contains(got, id) {
		b.fail("GET /v1/webhooks from the page: %v %q", err, got)
	}

	// 3. Pause; an event stored meanwhile is delivered after Resume.
	sel := `#webhooks li.webhook[data-id="` + id + `"]`
	b.do("click Pause", 10*time.Second, chromedp.Click(chromedp.CSS(sel+" .webhook-pause")))
	rows = b.waitWebhooks("the subscription paused", 15*time.Second, func(rows []webhookRow) bool {
		w, ok := findRow(rows, id)
		return ok && w.State == "paused"
	})
	if w, _ := findRow(rows, id); !w.Has("webhook-resume") || w.Has("webhook-pause") {
		b.fail("a paused subscription's buttons: %v", w.Buttons)
	}
	if got, _ := in.Webhooks.Get(id); got.State != domain.WebhookPaused {
		b.fail("stored state after Pause: %s", got.State)
	}
	b.shot("paused")
	whilePaused := create(t, in, nil)
	b.do("click Resume", 10*time.Second, chromedp.Click(chromedp.CSS(sel+" .webhook-resume")))
	b.waitWebhooks("the subscription active again", 15*time.Second, func(rows []webhookRow) bool {
		w, ok := findRow(rows, id)
		return ok && w.State == "active" && w.Has("webhook-pause")
	})
	b.eventually("the event stored while paused to arrive", 20*time.Second, func() bool {
		return slices.Equal(r.got(whilePaused), []string{"connection.created"})
	})

	// 4. The delivery log shows the attempt.
	b.do("click Deliveries", 10*time.Second, chromedp.Click(chromedp.CSS(sel+" .webhook-deliveries")))
	rowsJS := `document.querySelector("#deliveries-card").hidden ? "" : document.querySelector("#deliveries-id").textContent + "\n" +
		Array.from(document.querySelectorAll("#deliveries tr")).map(tr => Array.from(tr.cells).map(td => td.textContent).join("|")).join("\n")`
	b.wait("the delivery of the event stored while paused", 20*time.Second, rowsJS, func(s string) bool {
		return strings.HasPrefix(s, id+"\n") && strings.Contains(s, "|connection.created|"+whilePaused+"|1|delivered|200|")
	})
	if dl := b.eval(`document.querySelector("#dead-letters").innerText`); dl != "none" {
		b.fail("dead letters: %q, want none", dl)
	}
	b.shot("deliveries")

	// 5. Rotate the secret: the new one is shown once, the fingerprint
	// changes, the next delivery verifies with it.
	b.do("click Rotate secret", 10*time.Second, chromedp.Click(chromedp.CSS(sel+" .webhook-rotate")))
	notice = b.wait("the new secret shown", 15*time.Second, `document.querySelector("#webhook-secret").hidden ? "" : document.querySelector("#webhook-secret").textContent`,
		func(s string) bool { return s != "" && !strings.Contains(s, secret) })
	m = shownSecret.FindStringSubmatch(notice)
	if m == nil || m[1] != id {
		b.fail("the rotated secret notice says %q", notice)
	}
	secret2 := m[2]
	r.secret.Store(&secret2)
	b.waitWebhooks("the new fingerprint listed", 15*time.Second, func(rows []webhookRow) bool {
		w, ok := findRow(rows, id)
		return ok && strings.Contains(w.Text, webhook.Fingerprint(secret2)) && !strings.Contains(w.Text, webhook.Fingerprint(secret))
	})
	if got, _ := in.Webhooks.Get(id); got.SecretFingerprint != webhook.Fingerprint(secret2) {
		b.fail("stored fingerprint %s, want the new secret's", got.SecretFingerprint)
	}
	b.shot("rotated")
	afterRotation := create(t, in, nil)
	b.eventually("the event after the rotation to arrive, verified with the new secret", 20*time.Second, func() bool {
		return slices.Equal(r.got(afterRotation), []string{"connection.created"})
	})
	b.wait("the delivery after the rotation in the log", 20*time.Second, rowsJS, func(s string) bool {
		return strings.Contains(s, "|connection.created|"+afterRotation+"|1|delivered|200|")
	})

	// 6. Delete, after the browser's confirmation.
	b.do("click Delete", 10*time.Second, chromedp.Click(chromedp.CSS(sel+" .webhook-delete")))
	b.wait("the list empty", 15*time.Second,
		`document.querySelectorAll("#webhooks li.webhook").length + "|" + document.querySelector("#webhooks-empty").hidden`,
		func(s string) bool { return s == "0|false" })
	dialogMu.Lock()
	asked := slices.Clone(dialogs)
	dialogMu.Unlock()
	if !slices.Equal(asked, []string{"Delete webhook " + id + "?"}) {
		b.fail("dialogs: %q, want one confirmation of the delete", asked)
	}
	if got, err := in.Webhooks.Get(id); err == nil && got.State != domain.WebhookDeleted {
		b.fail("stored after Delete: %+v", got)
	}
	// The page stays live (it no longer asks for the deleted one's log).
	b.wait("the page live after the delete", 10*time.Second, `document.querySelector("#live").className + "|" + document.querySelector("#deliveries-card").hidden`,
		func(s string) bool { return s == "live ok|true" })
	b.shot("deleted")

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != 0 {
		b.fail("%d deliveries failed verification", r.bad)
	}
}

// eventually polls cond (every 50 ms, at most timeout) and fails with the
// page's screenshot and tokenline's log when it never holds.
func (b *browser) eventually(what string, timeout time.Duration, cond func() bool) {
	b.t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.fail("timed out after %s waiting for %s", timeout, what)
		}
	}
}
