package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/httpapi"
)

func TestUIServedToLoopbackOnly(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	port := e.ts.Listener.Addr().String()[strings.LastIndex(e.ts.Listener.Addr().String(), ":"):]

	resp, _ := e.request("GET", "/", nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = e.request("GET", "/ui", nil, "Authorization", "")
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, body := e.request("GET", "/ui/", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	page := string(body)
	for _, want := range []string{
		`<meta name="tokenline-api-token" content="` + apiToken + `">`,
		`id="create-form"`, `id="create-provider"`, `id="create-scopes"`, `id="create-config-key"`, `id="create-config-value"`, `id="create-submit"`,
		`id="connections"`, `id="sandbox-panel"`, `id="sandbox-revoke-grants"`, `id="sandbox-rotate-secret"`,
		`id="sandbox-expire-refresh"`, `id="sandbox-inject-503"`, `id="sandbox-stats"`, `id="sandbox-consent"`,
		`<script src="/ui/static/app.js" defer></script>`, `value="sandbox"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("/ui/ lacks %s", want)
		}
	}
	h := resp.Header
	if h.Get("Cache-Control") != "no-store" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" ||
		!strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("UI headers %v", h)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "onclick=") {
		t.Error("the page has inline script (the CSP forbids it)")
	}

	resp, body = e.request("GET", "/ui/connections/"+c.ID, nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	if !strings.Contains(string(body), `data-connection-id="`+c.ID+`"`) || !strings.Contains(string(body), `id="timeline"`) ||
		!strings.Contains(string(body), `class="connection" data-id="`+c.ID+`"`) {
		t.Errorf("connection page %s", body)
	}
	resp, body = e.request("GET", "/ui/connections/not-an-id", nil, "Authorization", "")
	e.expect(resp, body, http.StatusNotFound, nil)
	if strings.Contains(string(body), apiToken) {
		t.Error("404 page carries the token")
	}

	allowedHosts := []string{"localhost" + port, "127.0.0.1" + port, "app.localhost" + port}
	for _, host := range allowedHosts {
		resp, body = e.request("GET", "/ui/", nil, "Authorization", "", "Host", host)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), apiToken) {
			t.Errorf("Host %s: %d, page carries the API token: %v", host, resp.StatusCode, strings.Contains(string(body), apiToken))
		}
	}
	refused := map[string][]string{
		"DNS rebinding host": {"Host", "evil.example" + port},
		"forwarded":          {"X-Forwarded-For", "203.0.113.9"},
		"forwarded rfc7239":  {"Forwarded", "for=203.0.113.9"},
	}
	for name, hdr := range refused {
		for _, path := range []string{"/ui/", "/ui/connections/" + c.ID} {
			resp, body = e.request("GET", path, nil, append([]string{"Authorization", ""}, hdr...)...)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s: %d, want 403", name, path, resp.StatusCode)
			}
			if strings.Contains(string(body), apiToken) {
				t.Errorf("%s %s: the refusal carries the API token", name, path)
			}
		}
	}

	for path, ctype := range map[string]string{"/ui/static/app.js": "javascript", "/ui/static/app.css": "text/css"} {
		resp, body = e.request("GET", path, nil, "Authorization", "")
		e.expect(resp, body, http.StatusOK, nil)
		if !strings.Contains(resp.Header.Get("Content-Type"), ctype) || len(body) < 500 {
			t.Errorf("%s: %q, %d bytes", path, resp.Header.Get("Content-Type"), len(body))
		}
	}
	resp, _ = e.request("GET", "/ui/static/nope.js", nil, "Authorization", "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %d", resp.StatusCode)
	}
}

func TestCrossOriginPostsRefused(t *testing.T) {
	e := newEnv(t)
	for name, hdr := range map[string][]string{
		"sec-fetch-site": {"Sec-Fetch-Site", "cross-site"},
		"origin":         {"Origin", "http://evil.example"},
	} {
		before := e.sb.Stats().Revocations
		resp, body := e.request("POST", "/sandbox/admin/revoke-grants", nil, hdr...)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "cross_origin") {
			t.Errorf("%s: forged admin POST got %d %s", name, resp.StatusCode, body)
		}
		if e.sb.Stats().Revocations != before {
			t.Errorf("%s: forged POST revoked grants", name)
		}
		resp, body = e.request("POST", "/v1/connections", map[string]any{"provider": "sandbox"}, hdr...)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: cross-origin API POST got %d %s", name, resp.StatusCode, body)
		}
	}
	// Same-origin requests from the UI pass.
	resp, body := e.request("POST", "/v1/connections", map[string]any{"provider": "sandbox"}, "Sec-Fetch-Site", "same-origin", "Origin", e.base)
	e.expect(resp, body, http.StatusCreated, nil)
}

func TestUIWithoutSandbox(t *testing.T) {
	e := newEnv(t, func(_ *env, c *httpapi.Config) { c.Sandbox, c.SandboxMetadata = nil, nil })
	resp, body := e.request("GET", "/ui/", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	if strings.Contains(string(body), "sandbox-panel") {
		t.Error("sandbox panel shown without a sandbox")
	}
	resp, _ = e.request("GET", "/sandbox/admin/stats", nil, "Authorization", "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/sandbox/ without sandbox: %d", resp.StatusCode)
	}
}

func TestSandboxMetadataMounted(t *testing.T) {
	e := newEnv(t)
	resp, body := e.request("GET", "/.well-known/oauth-authorization-server/sandbox", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)
	var md map[string]any
	e.expect(resp, body, http.StatusOK, &md)
	if md["issuer"] != e.base+"/sandbox" {
		t.Errorf("metadata issuer %v", md["issuer"])
	}
	if u, err := url.Parse(md["authorization_endpoint"].(string)); err != nil || u.Path != "/sandbox/oauth/authorize" {
		t.Errorf("metadata %s", body)
	}
}

// Behind a same-host reverse proxy every request comes from loopback: proxy
// headers make the UI refuse, and with UIWithoutToken (a public URL) the
// pages never carry the API token, whatever the request looks like.
func TestUITokenNotGivenThroughAProxy(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"Via", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		resp, body := e.request("GET", "/ui/", nil, "Authorization", "", h, "1.1 proxy")
		if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), apiToken) {
			t.Errorf("%s: %d, token in page %v", h, resp.StatusCode, strings.Contains(string(body), apiToken))
		}
	}
	e2 := newEnv(t, func(_ *env, c *httpapi.Config) { c.UIWithoutToken = true })
	resp, body := e2.request("GET", "/ui/", nil, "Authorization", "")
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), apiToken) || strings.Contains(string(body), "tokenline-api-token") {
		t.Fatalf("UIWithoutToken page: %d, carries token %v", resp.StatusCode, strings.Contains(string(body), apiToken))
	}
}

// DNS rebinding cannot drive the sandbox's admin endpoints: a loopback peer
// with a foreign Host is refused.
func TestSandboxAdminRefusesForeignHost(t *testing.T) {
	e := newEnv(t)
	resp, body := e.request("POST", "/sandbox/admin/rotate-client-secret", nil, "Host", "evil.example:8080")
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(body), "client_secret") {
		t.Fatalf("rebinding request: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.request("GET", "/sandbox/admin/stats", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("loopback request: %d", resp.StatusCode)
	}
	// The admin endpoints take the API token: a local caller without it
	// gets 401 and no secret.
	for _, auth := range []string{"", "Bearer wrong"} {
		resp, body = e.request("POST", "/sandbox/admin/rotate-client-secret", nil, "Authorization", auth)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "client_secret") {
			t.Fatalf("rotate with Authorization %q: %d %s", auth, resp.StatusCode, body)
		}
	}
}
