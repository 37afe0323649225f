package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// twoProviders runs tokenline with two providers from a providers file:
// "sandbox" (the in-process sandbox preset) and "second", another sandbox
// on its own loopback port (explicit endpoints, its secret by environment
// variable). Both approve consent at once.
func twoProviders(t *testing.T) (*instance, *sandbox.Server, string) {
	t.Helper()
	second, addr, base := sandboxOnLoopback(t, "client-second", "second-admin")
	t.Setenv("TL_TEST_SECOND_SECRET", second.ClientSecret())
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n  - preset: sandbox\n  - name: second\n" +
		"    authorization_url: " + base + "/sandbox/oauth/authorize\n" +
		"    token_url: " + base + "/sandbox/oauth/token\n" +
		"    revocation_url: " + base + "/sandbox/oauth/revoke\n" +
		"    client_id: client-second\n    client_secret_env: TL_TEST_SECOND_SECRET\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	in := start(t, func(c *app.Config) {
		c.HTTPAddr = addr
		c.ProvidersFile = file
	})
	return in, second, base
}

// putSecret installs a provider's client secret over the API.
func putSecret(t *testing.T, in *instance, name, secret string) {
	t.Helper()
	b, _ := json.Marshal(apitypes.ClientSecretRequest{ClientSecret: secret})
	req, _ := http.NewRequest(http.MethodPut, in.BaseURL+apitypes.Path(apitypes.RouteClientSecret, name), bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+in.APIToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT %s's client secret: %d", name, resp.StatusCode)
	}
}

// PUT /v1/providers/{name}/client-secret is per provider: rotating the
// second provider's secret (at the provider, then installed for it) keeps
// both providers' connections refreshing; a wrong secret installed for the
// sandbox breaks the sandbox's refreshes only.
func TestClientSecretPerProvider(t *testing.T) {
	in, second, base := twoProviders(t)
	ids := map[string]string{}
	for _, name := range []string{"sandbox", "second"} {
		c, err := in.Lifecycle.Create(ctxT(t), name, []string{"users:read"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		authorise(t, in, c.ID)
		ids[name] = c.ID
	}
	refresh := func(name string) error { return in.Lifecycle.Refresh(ctxT(t), ids[name], domain.TriggerManual) }

	// The second provider rotates its secret; it is installed for it.
	req, _ := http.NewRequest(http.MethodPost, base+"/sandbox/admin/rotate-client-secret", nil)
	req.Header.Set("Authorization", "Bearer second-admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("rotate the second provider's secret: %v %v", resp, err)
	}
	resp.Body.Close()
	putSecret(t, in, "second", second.ClientSecret())
	for _, name := range []string{"second", "sandbox"} {
		if err := refresh(name); err != nil {
			t.Fatalf("refresh on %s after the second's rotation: %v", name, err)
		}
	}
	// A wrong secret installed for the sandbox: only the sandbox refuses.
	putSecret(t, in, "sandbox", "not-the-sandbox-secret")
	if err := refresh("second"); err != nil {
		t.Fatalf("refresh on second after the sandbox's secret changed: %v", err)
	}
	var te *lifecycle.TerminalError
	if err := refresh("sandbox"); !errors.As(err, &te) || te.Reason != domain.ReasonInvalidClient {
		t.Fatalf("refresh on sandbox with a wrong secret: %v, want invalid_client", err)
	}
	if st := second.Stats(); st.TokenRequests.RefreshToken != 2 || st.Failures != 0 {
		t.Fatalf("second provider: %d refreshes, %d failures; want 2 and 0", st.TokenRequests.RefreshToken, st.Failures)
	}
}

// The web UI's create form offers the configured providers in a select
// (both, the first preselected); creating a connection with the second
// makes a connection of that provider, and connecting it goes through the
// second provider (its code exchange, none at the in-process sandbox).
func TestBrowserCreateFormOffersProviders(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the web UI browser test is skipped")
	}
	in, second, _ := twoProviders(t)
	b := newBrowser(t, bin, t.TempDir(), in)
	link, _ := in.LoginLink()
	b.do("open the login link", 15*time.Second, chromedp.Navigate(link))
	b.wait("the UI to be live", 15*time.Second, `document.querySelector("#live") && document.querySelector("#live").className`,
		func(s string) bool { return strings.Contains(s, "ok") })
	got := b.eval(`(() => { const s = document.querySelector("#create-provider");
		return s.tagName + "|" + s.value + "|" + Array.from(s.options).map(o => o.value).join(","); })()`)
	if got != "SELECT|sandbox|sandbox,second" {
		b.fail("create form provider control %q, want a select of sandbox,second with sandbox selected", got)
	}
	b.do("choose the second provider and fill the form", 10*time.Second,
		chromedp.SetValue(chromedp.ID("create-provider"), "second"),
		chromedp.SendKeys(chromedp.ID("create-scopes"), "users:read"),
	)
	b.do("submit the create form", 10*time.Second, chromedp.Click(chromedp.ID("create-submit")))
	id := b.wait("the new connection in the list", 15*time.Second,
		`Array.from(document.querySelectorAll("#connections .connection[data-id]")).map(li => li.dataset.id).join(",")`,
		func(s string) bool { return s != "" })
	if !domain.ValidConnectionID(id) {
		b.fail("connections listed after one create: %q", id)
	}
	if c := load(t, in, id); c.Provider != "second" {
		b.fail("the connection's provider is %q, want second", c.Provider)
	}
	if v := b.eval(`document.querySelector("#create-provider").value`); v != "second" {
		b.fail("after creating, the select shows %q, want the provider just used (second)", v)
	}
	b.waitRow(id, "the Connect button", 15*time.Second, func(r row) bool { return r.Has("connect-button") })
	b.do("click Connect", 10*time.Second, chromedp.Click(chromedp.CSS(rowSel(id)+" .connect-button")))
	b.waitRow(id, "badge active", 20*time.Second, func(r row) bool { return r.Badge == "active" })
	if n, m := second.Stats().TokenRequests.AuthorizationCode, in.Sandbox.Stats().TokenRequests.AuthorizationCode; n != 1 || m != 0 {
		b.fail("code exchanges: second %d, in-process sandbox %d; want 1 and 0", n, m)
	}
}

// sandboxOnLoopback serves a sandbox (consent approved, 1 h access tokens)
// on a loopback port of its own, for a tokenline that will listen on addr
// (a free loopback address, returned), and returns its base URL.
func sandboxOnLoopback(t *testing.T, clientID, adminToken string) (sb *sandbox.Server, addr, base string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	sb, err = sandbox.New(sandbox.Config{RedirectURIs: []string{"http://" + addr + "/oauth/callback"},
		Consent: sandbox.ConsentApprove, AccessTokenLifetime: time.Hour, ClientID: clientID, AdminToken: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base = "http://" + sl.Addr().String()
	sb.SetIssuer(base)
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(sl) }()
	t.Cleanup(func() { srv.Close() })
	return sb, addr, base
}
