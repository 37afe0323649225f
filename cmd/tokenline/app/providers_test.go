package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/domain"
)

// provSandbox is a fosite sandbox served over HTTP on its own loopback
// port, as a separate provider would be. While down, the listener accepts
// connections and closes them at once (the provider is unreachable); the
// requests to its token and revocation endpoints are recorded.
type provSandbox struct {
	*sandbox.Server
	Base   string // http://127.0.0.1:port
	Issuer string // Base + "/sandbox"
	up     atomic.Bool

	mu       sync.Mutex
	requests []provRequest
}

// provRequest is what a client sent to the token or revocation endpoint.
type provRequest struct {
	Path          string
	Authorization string
	Form          map[string][]string
}

const provAdminToken = "provider-test-admin-token"

func startProvSandbox(t *testing.T, redirect string, up bool, mod func(*sandbox.Config)) *provSandbox {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &provSandbox{Base: "http://" + ln.Addr().String()}
	ps.Issuer = ps.Base + "/sandbox"
	ps.up.Store(up)
	cfg := sandbox.Config{RedirectURIs: []string{redirect}, Consent: sandbox.ConsentApprove, AccessTokenLifetime: time.Hour, AdminToken: provAdminToken}
	if mod != nil {
		mod(&cfg)
	}
	if ps.Server, err = sandbox.New(cfg); err != nil {
		t.Fatal(err)
	}
	ps.SetIssuer(ps.Base)
	h := ps.Handler()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sandbox/oauth/token" || r.URL.Path == "/sandbox/oauth/revoke" {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
			r.Body = io.NopCloser(bytes.NewReader(body))
			form := map[string][]string{}
			for _, kv := range strings.Split(string(body), "&") {
				k, v, _ := strings.Cut(kv, "=")
				form[k] = append(form[k], v)
			}
			ps.mu.Lock()
			ps.requests = append(ps.requests, provRequest{Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Form: form})
			ps.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(&provGate{Listener: ln, up: &ps.up}) }()
	t.Cleanup(func() { srv.Close() })
	return ps
}

func (ps *provSandbox) recorded() []provRequest {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]provRequest(nil), ps.requests...)
}

// provGate closes every connection it accepts while up is false.
type provGate struct {
	net.Listener
	up *atomic.Bool
}

func (g *provGate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil || g.up.Load() {
			return c, err
		}
		c.Close()
	}
}

func provFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProvMain runs tokenline on addr with the given providers file.
func startProvMain(t *testing.T, addr, file string) (*Main, *porttest.LogBuffer) {
	t.Helper()
	m := NewMain()
	c := &m.Config
	c.DataDir = t.TempDir()
	c.NATSListen = "127.0.0.1:0"
	c.HTTPAddr = addr
	c.Tick = 50 * time.Millisecond
	c.BackoffBase = 20 * time.Millisecond
	c.ProvidersFile = filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(c.ProvidersFile, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	m.DiscoveryRetry = 50 * time.Millisecond
	logs := &porttest.LogBuffer{}
	m.LogOutput = logs
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, logs
}

// provAPI calls tokenline's API with the API token and decodes the JSON
// answer into out (if non-nil); it returns the status and the raw body.
func provAPI(t *testing.T, m *Main, method, path string, body, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, m.BaseURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+m.APIToken())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// provConnect creates a connection of the provider, authorises it through
// that provider's sandbox and the HTTP callback, and refreshes it once.
func provConnect(t *testing.T, m *Main, providerName string) string {
	t.Helper()
	var st apitypes.ConnectionStatus
	if code, body := provAPI(t, m, "POST", "/v1/connections", apitypes.CreateRequest{Provider: providerName}, &st); code != 201 {
		t.Fatalf("create on %s: %d %s", providerName, code, body)
	}
	var az apitypes.AuthorizeResponse
	if code, body := provAPI(t, m, "POST", apitypes.Path(apitypes.RouteAuthorize, st.ID), nil, &az); code != 200 {
		t.Fatalf("authorize on %s: %d %s", providerName, code, body)
	}
	porttest.CompleteAuthorisation(t, m.BaseURL, az.AuthorizeURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Lifecycle.Refresh(ctx, st.ID, domain.TriggerManual); err != nil {
		t.Fatalf("refresh on %s: %v", providerName, err)
	}
	c, ok := m.Proj.Status.Connection(st.ID)
	if !ok || c.State != domain.StateActive || c.Provider != providerName {
		t.Fatalf("connection on %s: %+v", providerName, c)
	}
	return st.ID
}

func provList(t *testing.T, m *Main) map[string]apitypes.Provider {
	t.Helper()
	var out apitypes.ProvidersResponse
	if code, body := provAPI(t, m, "GET", apitypes.RouteProviders, nil, &out); code != 200 {
		t.Fatalf("GET /v1/providers: %d %s", code, body)
	}
	byName := map[string]apitypes.Provider{}
	for _, p := range out.Providers {
		byName[p.Name] = p
	}
	return byName
}

// Two providers in one instance, each a sandbox on its own loopback port:
// one found by discovery (with an explicit revocation endpoint that
// discovery does not override), one by explicit endpoints with
// client_secret_post and a secret file. A connection on each is authorised
// and refreshed through its own provider only (each sandbox counts one code
// exchange and one refresh); GET /v1/providers shows both without a secret;
// a client secret installed for one provider leaves the other alone; an
// unknown provider is a clear 400.
func TestTwoProvidersInOneInstance(t *testing.T) {
	addr := provFreeAddr(t)
	redirect := "http://" + addr + "/oauth/callback"
	a := startProvSandbox(t, redirect, true, nil)
	b := startProvSandbox(t, redirect, true, func(c *sandbox.Config) { c.ClientID = "client-b" })
	t.Setenv("PROV_TEST_A_SECRET", a.ClientSecret())
	secretFile := filepath.Join(t.TempDir(), "b-secret")
	if err := os.WriteFile(secretFile, []byte(b.ClientSecret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	explicitRevoke := a.Base + "/sandbox/oauth/revoke?explicit=1"
	m, _ := startProvMain(t, addr, `
# two providers
providers:
  - name: alpha
    issuer: `+a.Issuer+`
    revocation_url: `+explicitRevoke+`
    client_id: `+a.ClientID()+`
    client_secret_env: PROV_TEST_A_SECRET
    scopes: ["users:read"]
  - name: beta
    authorization_url: `+b.Base+`/sandbox/oauth/authorize
    token_url: `+b.Base+`/sandbox/oauth/token
    revocation_url: `+b.Base+`/sandbox/oauth/revoke
    client_id: client-b
    client_secret_file: `+secretFile+`
    client_auth: client_secret_post
`)
	ids := map[string]string{"alpha": provConnect(t, m, "alpha"), "beta": provConnect(t, m, "beta")}
	for name, sb := range map[string]*provSandbox{"alpha": a, "beta": b} {
		st := sb.Stats()
		if st.TokenRequests.AuthorizationCode != 1 || st.TokenRequests.RefreshToken != 1 || st.Failures != 0 {
			t.Errorf("sandbox of %s: %+v, want one code exchange and one refresh", name, st.TokenRequests)
		}
	}
	if c, _ := m.Proj.Status.Connection(ids["alpha"]); !strings.Contains(strings.Join(c.Tokens.Scopes, " "), "users:read") || len(c.Tokens.Scopes) != 1 {
		t.Errorf("alpha's default scope: %v", c.Tokens.Scopes)
	}
	for _, r := range b.recorded() {
		if r.Authorization != "" || len(r.Form["client_secret"]) != 1 || r.Form["client_id"][0] != "client-b" {
			t.Errorf("client_secret_post request %s: Authorization header %v, client_id %v", r.Path, r.Authorization != "", r.Form["client_id"])
		}
	}
	for _, r := range a.recorded() {
		if !strings.HasPrefix(r.Authorization, "Basic ") || len(r.Form["client_secret"]) != 0 {
			t.Errorf("client_secret_basic request %s: no Basic header or a client_secret in the body", r.Path)
		}
	}

	ps := provList(t, m)
	al, be := ps["alpha"], ps["beta"]
	if len(ps) != 2 || al.Status != provider.StatusDiscovered || al.Kind != "custom" || al.Issuer != a.Issuer ||
		al.Endpoints.Token != a.Issuer+"/oauth/token" || al.Endpoints.Revocation != explicitRevoke || al.ClientAuth != provider.AuthBasic {
		t.Errorf("alpha: %+v", al)
	}
	if be.Status != provider.StatusConfigured || be.ClientAuth != provider.AuthPost || be.Endpoints.Token != b.Base+"/sandbox/oauth/token" || be.Error != "" {
		t.Errorf("beta: %+v", be)
	}
	_, raw := provAPI(t, m, "GET", apitypes.RouteProviders, nil, nil)
	if strings.Contains(raw, a.ClientSecret()) || strings.Contains(raw, b.ClientSecret()) {
		t.Fatal("GET /v1/providers shows a client secret")
	}
	var out bytes.Buffer
	printProviders(&out, m)
	for _, want := range []string{"alpha (custom, client_secret_basic, discovered)", a.Issuer + "/oauth/token", explicitRevoke + " (explicit, not discovered)",
		"beta (custom, client_secret_post, configured)", b.Base + "/sandbox/oauth/token"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve's provider lines lack %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), a.ClientSecret()) || strings.Contains(out.String(), b.ClientSecret()) {
		t.Fatal("serve prints a client secret")
	}

	// A rotated secret at beta, installed for beta: beta refreshes again,
	// alpha never saw a request with it.
	req, _ := http.NewRequest("POST", b.Base+"/sandbox/admin/rotate-client-secret", nil)
	req.Header.Set("Authorization", "Bearer "+provAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("rotate at beta: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, body := provAPI(t, m, "PUT", apitypes.Path(apitypes.RouteClientSecret, "beta"), apitypes.ClientSecretRequest{ClientSecret: b.ClientSecret()}, nil); code != 204 {
		t.Fatalf("PUT beta's client secret: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"beta", "alpha"} {
		if err := m.Lifecycle.Refresh(ctx, ids[name], domain.TriggerManual); err != nil {
			t.Fatalf("refresh %s after beta's rotation: %v", name, err)
		}
	}
	if code, body := provAPI(t, m, "PUT", apitypes.Path(apitypes.RouteClientSecret, "gamma"), apitypes.ClientSecretRequest{ClientSecret: "x"}, nil); code != 404 {
		t.Errorf("PUT an unknown provider's secret: %d %s", code, body)
	}
	if code, body := provAPI(t, m, "POST", "/v1/connections", apitypes.CreateRequest{Provider: "gamma"}, nil); code != 400 || !strings.Contains(body, "unknown_provider") || !strings.Contains(body, "gamma") {
		t.Errorf("create with an unknown provider: %d %s", code, body)
	}
}

// A provider unreachable at start-up does not stop tokenline: the instance
// starts and stays ready, GET /v1/providers and /readyz say which provider
// is down and list every discovery URL tried, authorising one of its
// connections answers 503 provider_unavailable, and the other provider's
// connection works. Once the provider comes up, background discovery finds
// it and its connection is authorised and refreshed.
func TestProviderUnreachableThenReachable(t *testing.T) {
	addr := provFreeAddr(t)
	redirect := "http://" + addr + "/oauth/callback"
	ok := startProvSandbox(t, redirect, true, nil)
	late := startProvSandbox(t, redirect, false, nil)
	t.Setenv("PROV_TEST_OK_SECRET", ok.ClientSecret())
	t.Setenv("PROV_TEST_LATE_SECRET", late.ClientSecret())
	m, logs := startProvMain(t, addr, `
providers:
  - name: steady
    issuer: `+ok.Issuer+`
    client_id: `+ok.ClientID()+`
    client_secret_env: PROV_TEST_OK_SECRET
  - name: late
    issuer: `+late.Issuer+`
    client_id: `+late.ClientID()+`
    client_secret_env: PROV_TEST_LATE_SECRET
`)
	ps := provList(t, m)
	down := ps["late"]
	wantTried, _ := provider.DiscoveryURLs(late.Issuer)
	if down.Status != provider.StatusUnavailable || len(down.Tried) != 3 || strings.Join(down.Tried, " ") != strings.Join(wantTried, " ") || down.Endpoints.Token != "" {
		t.Fatalf("late before it is up: %+v", down)
	}
	for _, u := range wantTried {
		if !strings.Contains(down.Error, u) {
			t.Errorf("the error does not name %s: %s", u, down.Error)
		}
	}
	var ready apitypes.HealthResponse
	resp, err := http.Get(m.BaseURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(ready.Degraded) != 1 || !strings.HasPrefix(ready.Degraded[0], "provider late: unavailable") || !strings.Contains(ready.Degraded[0], wantTried[0]) {
		t.Fatalf("/readyz with late down: %d %+v", resp.StatusCode, ready)
	}
	if !strings.Contains(logs.String(), `"msg":"provider unavailable: discovery failed; retrying in the background"`) {
		t.Error("no log line says the provider is unavailable")
	}
	var st apitypes.ConnectionStatus
	if code, body := provAPI(t, m, "POST", "/v1/connections", apitypes.CreateRequest{Provider: "late"}, &st); code != 201 {
		t.Fatalf("create on late: %d %s", code, body)
	}
	if code, body := provAPI(t, m, "POST", apitypes.Path(apitypes.RouteAuthorize, st.ID), nil, nil); code != 503 || !strings.Contains(body, "provider_unavailable") || !strings.Contains(body, `\"late\"`) {
		t.Fatalf("authorize while late is down: %d %s", code, body)
	}
	if got := provMetric(t, m, `tokenline_provider_up{provider="late"}`); got != "0" {
		t.Errorf("tokenline_provider_up for late while down: %q", got)
	}
	if got := provMetric(t, m, `tokenline_provider_up{provider="steady"}`); got != "1" {
		t.Errorf("tokenline_provider_up for steady: %q", got)
	}
	if c, _ := m.Proj.Status.Connection(st.ID); c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonNeverAuthorised {
		t.Fatalf("a refused authorisation changed the connection: %+v", c)
	}
	provConnect(t, m, "steady") // the other provider is unaffected

	late.up.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; provList(t, m)["late"].Status != provider.StatusDiscovered; i++ {
		if i > 600 || time.Now().After(deadline) {
			t.Fatalf("late was not discovered: %+v", provList(t, m)["late"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	var az apitypes.AuthorizeResponse
	if code, body := provAPI(t, m, "POST", apitypes.Path(apitypes.RouteAuthorize, st.ID), nil, &az); code != 200 {
		t.Fatalf("authorize once late is up: %d %s", code, body)
	}
	porttest.CompleteAuthorisation(t, m.BaseURL, az.AuthorizeURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Lifecycle.Refresh(ctx, st.ID, domain.TriggerManual); err != nil {
		t.Fatalf("refresh on late: %v", err)
	}
	if c, _ := m.Proj.Status.Connection(st.ID); c.State != domain.StateActive {
		t.Fatalf("late's connection: %s %s", c.State, c.Reason)
	}
	resp, err = http.Get(m.BaseURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready = apitypes.HealthResponse{}
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(ready.Degraded) != 0 {
		t.Fatalf("/readyz once late is up: %d %+v", resp.StatusCode, ready)
	}
	if got := provMetric(t, m, `tokenline_provider_up{provider="late"}`); got != "1" {
		t.Errorf("tokenline_provider_up for late once up: %q", got)
	}
}

// provMetric returns the value of one series of /metrics.
func provMetric(t *testing.T, m *Main, series string) string {
	t.Helper()
	code, body := provAPI(t, m, "GET", "/metrics", nil, nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// Metadata that names another issuer is refused (RFC 8414 §3.3) with a
// message naming both issuers; the provider stays unavailable.
func TestIssuerMismatchRefused(t *testing.T) {
	addr := provFreeAddr(t)
	evil := startProvSandbox(t, "http://"+addr+"/oauth/callback", true, func(c *sandbox.Config) { c.MetadataIssuer = "https://impostor.example/sandbox" })
	t.Setenv("PROV_TEST_EVIL_SECRET", evil.ClientSecret())
	m, _ := startProvMain(t, addr, `
providers:
  - name: evil
    issuer: `+evil.Issuer+`
    client_id: `+evil.ClientID()+`
    client_secret_env: PROV_TEST_EVIL_SECRET
`)
	p := provList(t, m)["evil"]
	want := `metadata issuer "https://impostor.example/sandbox" does not match the configured issuer "` + evil.Issuer + `"`
	if p.Status != provider.StatusUnavailable || !strings.Contains(p.Error, want) || !strings.Contains(p.Error, "RFC 8414") {
		t.Fatalf("evil: %+v", p)
	}
	var out bytes.Buffer
	printProviders(&out, m)
	if !strings.Contains(out.String(), "UNAVAILABLE") || !strings.Contains(out.String(), want) {
		t.Errorf("serve's line for evil:\n%s", out.String())
	}
	_, err := provider.Discover(context.Background(), nil, evil.Issuer)
	var de *provider.DiscoveryError
	if !errors.As(err, &de) || !de.IssuerMismatch() {
		t.Fatalf("Discover: %v", err)
	}
}

// A public client (client_auth none, PKCE, no secret) against a sandbox
// whose client is public: the code exchange, the refresh and the
// revocation on delete send client_id in the body, no Authorization header
// and no client_secret. Installing a client secret for it is refused.
func TestPublicClient(t *testing.T) {
	addr := provFreeAddr(t)
	pub := startProvSandbox(t, "http://"+addr+"/oauth/callback", true, func(c *sandbox.Config) { c.PublicClient = true; c.ClientID = "native" })
	m, _ := startProvMain(t, addr, `
providers:
  - name: native
    authorization_url: `+pub.Base+`/sandbox/oauth/authorize
    token_url: `+pub.Base+`/sandbox/oauth/token
    revocation_url: `+pub.Base+`/sandbox/oauth/revoke
    client_id: native
    client_auth: none
`)
	id := provConnect(t, m, "native")
	if code, body := provAPI(t, m, "DELETE", apitypes.Path(apitypes.RouteConnection, id), nil, nil); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	seen := map[string]int{}
	for _, r := range pub.recorded() {
		seen[r.Path]++
		if r.Authorization != "" {
			t.Errorf("%s sent an Authorization header", r.Path)
		}
		if _, ok := r.Form["client_secret"]; ok {
			t.Errorf("%s sent a client_secret", r.Path)
		}
		if ids := r.Form["client_id"]; len(ids) != 1 || ids[0] != "native" {
			t.Errorf("%s sent client_id %v", r.Path, ids)
		}
	}
	if seen["/sandbox/oauth/token"] != 2 || seen["/sandbox/oauth/revoke"] < 1 {
		t.Errorf("requests seen: %v (want a code exchange, a refresh and a revocation)", seen)
	}
	if st := pub.Stats(); st.TokenRequests.RefreshToken != 1 || st.Failures != 0 || st.Revocations != 1 {
		t.Errorf("sandbox stats: %+v", st)
	}
	if code, body := provAPI(t, m, "PUT", apitypes.Path(apitypes.RouteClientSecret, "native"), apitypes.ClientSecretRequest{ClientSecret: "x"}, nil); code != 400 || !strings.Contains(body, "public client") {
		t.Errorf("PUT a public client's secret: %d %s", code, body)
	}
	if p := provList(t, m)["native"]; p.ClientAuth != provider.AuthNone || p.Status != provider.StatusConfigured {
		t.Errorf("native: %+v", p)
	}
}

// Bad providers files are refused before anything starts, with an error
// that names the entry and the field.
func TestProvidersFileBadInputs(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "SET" {
			return "s3cret", true
		}
		return "", false
	}
	ok := "    authorization_url: https://a.example/authorize\n    token_url: https://a.example/token\n    client_id: c\n    client_secret_env: SET\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"empty file", "", "the file is empty"},
		{"empty list", "providers: []\n", "the list is empty"},
		{"not yaml", "providers: [\n", "not a valid providers file"},
		{"unknown field", "providers:\n  - name: a\n" + ok + "    colour: blue\n", "field colour not found"},
		{"unknown preset", "providers:\n  - preset: pleo-prod\n    client_id: c\n    client_secret_env: SET\n", `providers[0] (pleo-prod).preset "pleo-prod": unknown preset; want pleo, pleo-staging, sandbox`},
		{"inline secret", "providers:\n  - name: a\n    authorization_url: https://a.example/authorize\n    token_url: https://a.example/token\n    client_id: c\n    client_secret: hunter2\n",
			"providers[0] (a).client_secret: an inline secret is not accepted; name an environment variable (client_secret_env) or a file (client_secret_file)"},
		{"duplicate names", "providers:\n  - name: a\n" + ok + "  - name: a\n" + ok, `providers[1].name "a": already used by providers[0]`},
		{"missing endpoints", "providers:\n  - name: a\n    authorization_url: https://a.example/authorize\n    client_id: c\n    client_secret_env: SET\n",
			"providers[0] (a): a custom provider needs issuer (discovery) or explicit endpoints; token_url missing"},
		{"no name", "providers:\n  - " + ok[4:], "providers[0].name: name is required"},
		{"bad name", "providers:\n  - name: A/B\n" + ok, `providers[0] (A/B).name "A/B": a name is 1 to 63`},
		{"bad client_auth", "providers:\n  - name: a\n" + ok + "    client_auth: private_key_jwt\n", `providers[0] (a).client_auth: client authentication "private_key_jwt"`},
		{"secret unset", "providers:\n  - name: a\n    issuer: https://a.example\n    client_id: c\n    client_secret_env: UNSET\n", "providers[0] (a).client_secret_env: environment variable UNSET is not set or empty"},
		{"secret file missing", "providers:\n  - name: a\n    issuer: https://a.example\n    client_id: c\n    client_secret_file: /nonexistent/secret\n", "providers[0] (a).client_secret_file: open /nonexistent/secret"},
		{"two secret refs", "providers:\n  - name: a\n" + ok + "    client_secret_file: /x\n", "give client_secret_env or client_secret_file, not both"},
		{"no secret", "providers:\n  - name: a\n    issuer: https://a.example\n    client_id: c\n", "client_auth client_secret_basic needs a client secret"},
		{"public with secret", "providers:\n  - name: a\n" + ok + "    client_auth: none\n", "providers[0] (a).client_auth: client_auth none is a public client and has no secret"},
		{"no client id", "providers:\n  - name: a\n    issuer: https://a.example\n    client_auth: none\n", "providers[0] (a).client_id: client_id is required"},
		{"bad issuer", "providers:\n  - name: a\n    issuer: https://a.example/?x=1\n    client_id: c\n    client_auth: none\n", "providers[0] (a).issuer: provider: issuer"},
		{"bad url", "providers:\n  - name: a\n    authorization_url: /authorize\n    token_url: https://a.example/token\n    client_id: c\n    client_auth: none\n", `providers[0] (a).authorization_url "/authorize": not an absolute http(s) URL`},
		{"preset with endpoint", "providers:\n  - preset: pleo\n    token_url: https://x.example/token\n    client_id: c\n    client_secret_env: SET\n", "providers[0] (pleo).token_url: preset pleo has fixed endpoints"},
		{"two sandboxes", "providers:\n  - preset: sandbox\n  - name: other\n    preset: sandbox\n", "providers[1] (other).preset: only one provider may use the in-process sandbox"},
		{"sandbox with client", "providers:\n  - preset: sandbox\n    client_id: c\n", "the sandbox preset uses the in-process sandbox's own client"},
		{"two documents", "providers:\n  - name: a\n" + ok + "---\nproviders: []\n", "more than one YAML document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseProviders([]byte(tc.doc), env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows a secret: %v", err)
			}
		})
	}

	// A good file: presets get their name, JSON is accepted too.
	specs, err := parseProviders([]byte(`{"providers": [{"preset": "pleo", "client_id": "c", "client_secret_env": "SET", "scopes": ["users:read"]},
		{"name": "pub", "issuer": "https://id.example", "client_id": "p", "client_auth": "none", "authorize_params": {"prompt": "consent"}}]}`), env)
	if err != nil || len(specs) != 2 || specs[0].Name != "pleo" || specs[0].secret != "s3cret" || specs[0].ClientAuth != provider.AuthBasic ||
		specs[1].ClientAuth != provider.AuthNone || specs[1].secret != "" || specs[1].AuthorizeParams["prompt"] != "consent" {
		t.Fatalf("good file: %+v %v", specs, err)
	}

	// --providers excludes the single-provider flags, and a bad file stops
	// Run before NATS starts.
	c := DefaultConfig()
	c.ProvidersFile, c.Provider, c.ClientID = "/nonexistent.yaml", "pleo", "c"
	if _, err := c.ProviderSpecs(env); err == nil || !strings.Contains(err.Error(), "--provider, --client-id") {
		t.Errorf("--providers with --provider: %v", err)
	}
	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.ProvidersFile = filepath.Join(t.TempDir(), "missing.yaml")
	m.LogOutput = io.Discard
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "--providers") || m.NATS != nil {
		t.Errorf("Run with a missing providers file: %v (NATS started: %v)", err, m.NATS != nil)
	}
	// The flags: a custom provider without a secret must say it is public.
	c = DefaultConfig()
	c.Provider, c.ClientID, c.AuthURL, c.TokenURL = "custom", "c", "https://a.example/a", "https://a.example/t"
	if _, err := c.ProviderSpecs(env); err == nil || !strings.Contains(err.Error(), "--auth-style none") {
		t.Errorf("custom without a secret: %v", err)
	}
	c.AuthStyle = "none"
	if specs, err := c.ProviderSpecs(env); err != nil || specs[0].ClientAuth != provider.AuthNone {
		t.Errorf("custom public client by flags: %+v %v", specs, err)
	}
}

// The full example file of docs/operations.md (Providers) is a valid
// providers file.
func TestOperationsProvidersExampleParses(t *testing.T) {
	b, err := os.ReadFile("../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "```yaml\n# /etc/tokenline/providers.yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("docs/operations.md has no providers example")
	}
	secret := filepath.Join(t.TempDir(), "acme")
	if err := os.WriteFile(secret, []byte("acme-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	block = strings.ReplaceAll(block, "/run/secrets/acme", secret)
	env := func(k string) (string, bool) { return "pleo-secret", k == "PLEO_CLIENT_SECRET" }
	specs, err := parseProviders([]byte(block), env)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name+":"+s.Kind()+":"+s.ClientAuth)
	}
	if got := strings.Join(names, " "); got != "pleo:pleo:client_secret_basic acme:custom:client_secret_post desktop:custom:none sandbox:sandbox:" || specs[1].secret != "acme-secret" {
		t.Fatalf("the example declares %s", got)
	}
}
