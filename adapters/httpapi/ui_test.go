package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// loginLink asks the API for a one-time login link and returns it.
func (e *env) loginLink() string {
	e.t.Helper()
	var ll apitypes.LoginLinkResponse
	resp, body := e.request("POST", "/v1/ui/login-links", nil)
	e.expect(resp, body, http.StatusCreated, &ll)
	if !strings.HasPrefix(ll.URL, e.base+"/ui/login?code=") || ll.ExpiresAt.IsZero() {
		e.t.Fatalf("login link %+v", ll)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		e.t.Errorf("login link answer is cacheable: %v", resp.Header)
	}
	return ll.URL
}

// login opens a fresh login link and returns the session cookie it set.
func (e *env) login() *http.Cookie {
	e.t.Helper()
	resp, body := e.request("GET", e.loginLink(), nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		e.t.Fatalf("login: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	cs := resp.Cookies()
	if len(cs) != 1 {
		e.t.Fatalf("login set cookies %v", resp.Header["Set-Cookie"])
	}
	return cs[0]
}

// asBrowser are the headers of a same-origin fetch by a UI page with the
// session cookie c (and no API token).
func asBrowser(c *http.Cookie, more ...string) []string {
	return append([]string{"Authorization", "", "Cookie", c.Name + "=" + c.Value, "Sec-Fetch-Site", "same-origin"}, more...)
}

func TestUIPagesCarryNoTokenAndNeedASession(t *testing.T) {
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

	// Without a session: the login page, whoever asks (loopback or not,
	// with the API token or not), and never the token.
	for name, hdr := range map[string][]string{
		"no cookie":        {"Authorization", ""},
		"api token":        nil,
		"unknown session":  {"Authorization", "", "Cookie", "tokenline_session=forged"},
		"rebinding host":   {"Authorization", "", "Host", "evil.example" + port},
		"through a proxy":  {"Authorization", "", "X-Forwarded-For", "203.0.113.9"},
		"same-origin only": {"Authorization", "", "Sec-Fetch-Site", "same-origin"},
	} {
		for _, path := range []string{"/ui/", "/ui/connections/" + c.ID, "/ui/login"} {
			resp, body := e.request("GET", path, nil, hdr...)
			page := string(body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-page="login"`) || !strings.Contains(page, "tokenline ui") ||
				strings.Contains(page, `id="create-form"`) || strings.Contains(page, `id="timeline"`) {
				t.Errorf("%s %s: %d, want the login page: %s", name, path, resp.StatusCode, page)
			}
			if strings.Contains(page, apiToken) || strings.Contains(page, "api-token\"") || strings.Contains(page, "<input") {
				t.Errorf("%s %s: the login page carries or asks for the API token", name, path)
			}
		}
	}
	resp, body := e.request("GET", "/ui/connections/"+c.ID+"?authorisation=denied", nil, "Authorization", "")
	if !strings.Contains(string(body), "The provider did not grant access") || !strings.Contains(string(body), "tokenline ui") {
		t.Errorf("denied callback landing without a session: %d %s", resp.StatusCode, body)
	}

	// With a session: the pages, still without the token.
	sc := e.login()
	resp, body = e.request("GET", "/ui/", nil, "Authorization", "", "Cookie", sc.Name+"="+sc.Value)
	e.expect(resp, body, http.StatusOK, nil)
	page := string(body)
	for _, want := range []string{
		`id="create-form"`, `id="create-provider"`, `id="create-scopes"`, `id="create-config-key"`, `id="create-config-value"`, `id="create-submit"`,
		`id="connections"`, `id="sandbox-panel"`, `id="sandbox-revoke-grants"`, `id="sandbox-rotate-secret"`,
		`id="sandbox-expire-refresh"`, `id="sandbox-inject-503"`, `id="sandbox-stats"`, `id="sandbox-consent"`,
		`<script src="/ui/static/app.js" defer></script>`, `value="sandbox"`, `action="/ui/logout"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("/ui/ lacks %s", want)
		}
	}
	if strings.Contains(page, apiToken) || strings.Contains(page, "tokenline-api-token") || strings.Contains(page, sc.Value) {
		t.Error("the page carries the API token or the session")
	}
	h := resp.Header
	if h.Get("Cache-Control") != "no-store" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" ||
		!strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("UI headers %v", h)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "onclick=") {
		t.Error("the page has inline script (the CSP forbids it)")
	}
	resp, body = e.request("GET", "/ui/connections/"+c.ID, nil, "Authorization", "", "Cookie", sc.Name+"="+sc.Value)
	e.expect(resp, body, http.StatusOK, nil)
	if !strings.Contains(string(body), `data-connection-id="`+c.ID+`"`) || !strings.Contains(string(body), `id="timeline"`) ||
		!strings.Contains(string(body), `class="connection" data-id="`+c.ID+`"`) {
		t.Errorf("connection page %s", body)
	}
	// Back from the provider (a cross-site navigation: SameSite=Strict
	// sends no cookie): the page, which carries nothing secret.
	resp, body = e.request("GET", "/ui/connections/"+c.ID, nil, "Authorization", "", "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="timeline"`) || strings.Contains(string(body), apiToken) {
		t.Errorf("callback landing: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request("GET", "/ui/connections/not-an-id", nil, "Authorization", "")
	e.expect(resp, body, http.StatusNotFound, nil)

	for path, ctype := range map[string]string{"/ui/static/app.js": "javascript", "/ui/static/app.css": "text/css"} {
		resp, body = e.request("GET", path, nil, "Authorization", "")
		e.expect(resp, body, http.StatusOK, nil)
		if !strings.Contains(resp.Header.Get("Content-Type"), ctype) || len(body) < 500 {
			t.Errorf("%s: %q, %d bytes", path, resp.Header.Get("Content-Type"), len(body))
		}
		if strings.Contains(string(body), apiToken) {
			t.Errorf("%s carries the API token", path)
		}
	}
	resp, _ = e.request("GET", "/ui/static/nope.js", nil, "Authorization", "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %d", resp.StatusCode)
	}
}

// The login link works once; its cookie has the flags; the API accepts the
// session from a same-origin fetch only, never for access tokens or login
// links; logout ends it.
func TestUILoginSession(t *testing.T) {
	e := newEnv(t)
	c := e.create()
	e.authorise(c.ID)
	link := e.loginLink()
	var ll apitypes.LoginLinkResponse
	resp, body := e.request("POST", "/v1/ui/login-links", nil)
	e.expect(resp, body, http.StatusCreated, &ll)
	if d := time.Until(ll.ExpiresAt); d > httpapi.LoginCodeTTL || d < httpapi.LoginCodeTTL-time.Minute {
		t.Fatalf("login link expires in %s, want %s", d, httpapi.LoginCodeTTL)
	}
	code := queryOf(t, link).Get("code")
	resp, _ = e.request("HEAD", link, nil, "Authorization", "")
	if len(resp.Cookies()) != 0 {
		t.Fatalf("HEAD of a login link signed in: %v", resp.Header["Set-Cookie"])
	}
	resp, body = e.request("GET", link+"&next=/ui/connections/"+c.ID, nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/connections/"+c.ID {
		t.Fatalf("login: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	sc := resp.Cookies()[0]
	if sc.Name != "tokenline_session" || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.Secure ||
		sc.Domain != "" || sc.MaxAge != int(httpapi.SessionTTL/time.Second) || len(sc.Value) < 43 {
		t.Fatalf("session cookie %+v (%s)", sc, resp.Header.Get("Set-Cookie"))
	}
	if sc.Value == code || strings.Contains(sc.Value, apiToken) {
		t.Fatal("the session is the code or holds the API token")
	}
	// Single use.
	resp, body = e.request("GET", link, nil, "Authorization", "")
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(string(body), "login_link_invalid") {
		t.Fatalf("second use of a login link: %d %v %s", resp.StatusCode, resp.Cookies(), body)
	}
	for _, bad := range []string{"x", code[:len(code)-1], code + "A"} {
		resp, _ = e.request("GET", "/ui/login?code="+url.QueryEscape(bad), nil, "Authorization", "")
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Errorf("code %q: %d %v", bad, resp.StatusCode, resp.Cookies())
		}
	}
	// The code never reaches the log (the access log records the path only).
	assertNoSecrets(t, "log", e.logs.String(), code, sc.Value)

	// The API with the session, as the UI's fetches send it.
	resp, body = e.request("GET", "/v1/connections", nil, asBrowser(sc)...)
	e.expect(resp, body, http.StatusOK, nil)
	resp, body = e.request("POST", "/v1/connections", map[string]any{"provider": "sandbox"}, asBrowser(sc, "Origin", e.base)...)
	e.expect(resp, body, http.StatusCreated, nil)
	refused := map[string][]string{
		"no Sec-Fetch-Site":  {"Authorization", "", "Cookie", sc.Name + "=" + sc.Value},
		"cross-site":         {"Authorization", "", "Cookie", sc.Name + "=" + sc.Value, "Sec-Fetch-Site", "cross-site"},
		"same-site":          {"Authorization", "", "Cookie", sc.Name + "=" + sc.Value, "Sec-Fetch-Site", "same-site"},
		"typed in (none)":    {"Authorization", "", "Cookie", sc.Name + "=" + sc.Value, "Sec-Fetch-Site", "none"},
		"wrong bearer":       asBrowser(sc, "Authorization", "Bearer nope"),
		"forged session":     {"Authorization", "", "Cookie", sc.Name + "=" + flip(sc.Value), "Sec-Fetch-Site", "same-origin"},
		"session as bearer":  {"Authorization", "Bearer " + sc.Value},
		"code as the cookie": {"Authorization", "", "Cookie", sc.Name + "=" + code, "Sec-Fetch-Site", "same-origin"},
	}
	for name, hdr := range refused {
		resp, body = e.request("GET", "/v1/connections", nil, hdr...)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	// A session gets no access token and no login link.
	for _, r := range []struct{ method, path string }{{"GET", "/v1/connections/" + c.ID + "/token"}, {"POST", "/v1/ui/login-links"}} {
		resp, body = e.request(r.method, r.path, nil, asBrowser(sc, "Origin", e.base)...)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "api_token_required") || strings.Contains(string(body), "access_token\"") {
			t.Errorf("%s %s with a session: %d %s", r.method, r.path, resp.StatusCode, body)
		}
	}
	if tok := e.token(c.ID); tok == "" {
		t.Fatal("the API token no longer reads the token")
	}

	// Logout from another origin is refused; from the UI it ends the session.
	resp, _ = e.request("POST", "/ui/logout", nil, "Authorization", "", "Cookie", sc.Name+"="+sc.Value, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site logout: %d", resp.StatusCode)
	}
	resp, body = e.request("GET", "/v1/connections", nil, asBrowser(sc)...)
	e.expect(resp, body, http.StatusOK, nil)
	resp, _ = e.request("POST", "/ui/logout", nil, "Authorization", "", "Cookie", sc.Name+"="+sc.Value, "Origin", e.base, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %v", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	resp, _ = e.request("GET", "/v1/connections", nil, asBrowser(sc)...)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API after logout: %d", resp.StatusCode)
	}
	resp, body = e.request("GET", "/ui/", nil, "Authorization", "", "Cookie", sc.Name+"="+sc.Value)
	if !strings.Contains(string(body), `data-page="login"`) {
		t.Fatalf("UI after logout: %d %s", resp.StatusCode, body)
	}
	// Only the API token mints login links.
	resp, _ = e.request("POST", "/v1/ui/login-links", nil, "Authorization", "")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login link without the token: %d", resp.StatusCode)
	}
}

// flip changes the first character of s.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// On an https public URL the cookie is Secure with the __Host- prefix, and
// the link is absolute on that URL.
func TestUILoginCookieSecureOnHTTPS(t *testing.T) {
	e := newEnv(t, func(_ *env, c *httpapi.Config) { c.BaseURL = "https://tokenline.example" })
	var ll apitypes.LoginLinkResponse
	resp, body := e.request("POST", "/v1/ui/login-links", nil)
	e.expect(resp, body, http.StatusCreated, &ll)
	if !strings.HasPrefix(ll.URL, "https://tokenline.example/ui/login?code=") {
		t.Fatalf("link %s", ll.URL)
	}
	resp, _ = e.request("GET", "/ui/login?code="+queryOf(t, ll.URL).Get("code"), nil, "Authorization", "")
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cs) != 1 || cs[0].Name != "__Host-tokenline_session" || !cs[0].Secure ||
		!cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
		t.Fatalf("https login: %d %v", resp.StatusCode, resp.Header["Set-Cookie"])
	}
}

// Login codes and sessions expire (Config.Now moves the clock).
func TestUILoginExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, func(_ *env, c *httpapi.Config) { c.Now = clock })
	stale := e.loginLink()
	advance(httpapi.LoginCodeTTL)
	resp, _ := e.request("GET", stale, nil, "Authorization", "")
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("expired link: %d", resp.StatusCode)
	}
	sc := e.login()
	advance(httpapi.SessionTTL - time.Second)
	resp, body := e.request("GET", "/v1/connections", nil, asBrowser(sc)...)
	e.expect(resp, body, http.StatusOK, nil)
	advance(time.Second)
	resp, _ = e.request("GET", "/v1/connections", nil, asBrowser(sc)...)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired session: %d", resp.StatusCode)
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
