package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/projections"
)

const apiToken = "tl_test_0123456789abcdef0123456789abcdef"

// env is a whole tokenline on real parts: an embedded JetStream server, the
// JetStream event store, the encrypted vault, the projections' gate, the
// lifecycle service, the fosite sandbox provider and the HTTP server under
// test, served by httptest on 127.0.0.1.
type env struct {
	t      *testing.T
	ts     *httptest.Server
	base   string
	nats   *natstest.Server
	nc     *nats.Conn
	store  *jsstore.Store
	vault  *vault.Vault
	gate   *projections.Gate
	sb     *sandbox.Server
	life   *lifecycle.Service
	api    *httpapi.Server
	logs   *porttest.LogBuffer // every log line (API, lifecycle, sandbox)
	client *http.Client        // does not follow redirects
	clock  porttest.SkewClock  // the lifecycle's clock
}

// envOption changes the server's configuration; it runs once the store,
// vault, gate and lifecycle exist.
type envOption func(*env, *httpapi.Config)

// envConfig tunes the lifecycle of an env.
type envConfig struct {
	// noScheduler leaves the lifecycle's scheduler (Run) off, so that only
	// requests change connections.
	noScheduler bool
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	return newEnvWith(t, envConfig{}, opts...)
}

func newEnvWith(t *testing.T, ec envConfig, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, logs: &porttest.LogBuffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	mux := http.NewServeMux()
	e.ts = httptest.NewServer(mux) // 127.0.0.1, random port
	t.Cleanup(e.ts.Close)
	e.base = e.ts.URL

	e.nats = natstest.Start(t, "")
	e.nc = e.nats.Connect(t)
	var err error
	if e.store, err = jsstore.Open(ctx, e.nc, jsstore.Config{Actor: "instance/test", Logger: logger}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, vault.KeySize)
	_, _ = rand.Read(key)
	if e.vault, err = vault.Open(ctx, e.store.JetStream(), vault.Config{Key: key}); err != nil {
		t.Fatal(err)
	}
	attempts, err := vault.OpenAttempts(ctx, e.store.JetStream(), key, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	e.gate = projections.NewGate(projections.GateOptions{})
	gateStatus := projections.NewStatus() // the gate follows a status projection
	gateStatus.OnChange(e.gate.Observe)
	e.store.OnAppend(func(ev domain.Event) { _, _ = gateStatus.Apply(ev) })

	redirect := e.base + "/oauth/callback"
	if e.sb, err = sandbox.New(sandbox.Config{RedirectURIs: []string{redirect}, Consent: sandbox.ConsentApprove, Logger: logger, AdminToken: apiToken}); err != nil {
		t.Fatal(err)
	}
	e.sb.SetIssuer(e.base)
	p, err := provider.New(provider.Config{
		Name: "sandbox", ClientID: e.sb.ClientID(), ClientSecret: e.sb.ClientSecret(), RedirectURL: redirect,
		Endpoints: provider.Endpoints{
			AuthURL:       e.base + "/sandbox/oauth/authorize",
			TokenURL:      e.base + "/sandbox/oauth/token",
			RevocationURL: e.base + "/sandbox/oauth/revoke",
			IntrospectURL: e.base + "/sandbox/oauth/token/introspect",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.life, err = lifecycle.New(lifecycle.Config{
		Store: e.store, Vault: e.vault, Gate: e.gate, Providers: map[string]domain.TokenEndpoint{"sandbox": p},
		Attempts: attempts, Instance: "test", Logger: logger, Clock: &e.clock,
	}); err != nil {
		t.Fatal(err)
	}
	if !ec.noScheduler {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); e.life.Run(runCtx) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	reader := httpapi.StoreReader{Store: e.store}
	cfg := httpapi.Config{
		Connections: e.life, Status: reader, Audit: reader,
		Ready:    []httpapi.Check{{Name: "nats", Probe: httpapi.NATSReady(e.nc)}},
		APIToken: apiToken, BaseURL: e.base, Logger: logger,
		Sandbox: e.sb.Handler(), SandboxMetadata: e.sb.MetadataHandler(),
	}
	for _, o := range opts {
		o(e, &cfg)
	}
	e.api = httpapi.New(cfg)
	if m := e.api.Metrics(); m != nil {
		e.store.OnAppend(m.ObserveEvent)
	}
	mux.Handle("/", e.api.Handler())
	e.client = &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

// request sends a request to the server under test. body may be nil, a
// string (sent as is) or a value (sent as JSON). hdr are header pairs; the
// API token is sent unless hdr sets Authorization (to "" to send none).
func (e *env) request(method, path string, body any, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.base + path
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// expect checks the status and decodes a JSON body into v (if non-nil).
func (e *env) expect(resp *http.Response, body []byte, status int, v any) {
	e.t.Helper()
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", resp.Request.Method, resp.Request.URL.Path, body, err)
		}
	}
}

func (e *env) create(scopes ...string) apitypes.ConnectionStatus {
	e.t.Helper()
	var st apitypes.ConnectionStatus
	resp, body := e.request("POST", "/v1/connections", map[string]any{"provider": "sandbox", "scopes": scopes, "config": map[string]string{"company": "acme"}})
	e.expect(resp, body, http.StatusCreated, &st)
	return st
}

func (e *env) get(id string) apitypes.ConnectionStatus {
	e.t.Helper()
	var st apitypes.ConnectionStatus
	resp, body := e.request("GET", "/v1/connections/"+id, nil)
	e.expect(resp, body, http.StatusOK, &st)
	return st
}

func (e *env) lastSeq() uint64 {
	e.t.Helper()
	n, err := e.store.LastSeq(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// startAuthorize calls the API and returns the authorize URL.
func (e *env) startAuthorize(id string) string {
	e.t.Helper()
	var ar apitypes.AuthorizeResponse
	resp, body := e.request("POST", "/v1/connections/"+id+"/authorize", nil)
	e.expect(resp, body, http.StatusOK, &ar)
	if resp.Header.Get("Cache-Control") != "no-store" {
		e.t.Errorf("authorize: Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
	}
	return ar.AuthorizeURL
}

// followToCallback opens the authorize URL at the sandbox (consent
// "approve" or "deny") and returns the callback URL it redirects to.
func (e *env) followToCallback(authorizeURL string) string {
	e.t.Helper()
	resp, body := e.request("GET", authorizeURL, nil, "Authorization", "")
	if resp.StatusCode/100 != 3 {
		e.t.Fatalf("sandbox authorize: status %d: %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, e.base+"/oauth/callback?") {
		e.t.Fatalf("sandbox redirected to %q, want the callback", loc)
	}
	return loc
}

// authorise runs the whole flow and returns the connection's access token.
func (e *env) authorise(id string) string {
	e.t.Helper()
	cb := e.followToCallback(e.startAuthorize(id))
	resp, body := e.request("GET", cb, nil, "Authorization", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != e.base+"/ui/connections/"+id {
		e.t.Fatalf("callback: status %d, Location %q; body %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	return e.token(id)
}

func (e *env) token(id string) string {
	e.t.Helper()
	var tr apitypes.TokenResponse
	resp, body := e.request("GET", "/v1/connections/"+id+"/token", nil)
	e.expect(resp, body, http.StatusOK, &tr)
	if tr.AccessToken == "" || tr.TokenType != "Bearer" {
		e.t.Fatalf("token answer %s", body)
	}
	return tr.AccessToken
}

// callAPI calls the sandbox's protected resource with an access token.
func (e *env) callAPI(accessToken string) int {
	e.t.Helper()
	resp, _ := e.request("GET", "/sandbox/api/me", nil, "Authorization", "Bearer "+accessToken)
	return resp.StatusCode
}

func (e *env) sandboxAdmin(path string, body any) {
	e.t.Helper()
	resp, b := e.request("POST", "/sandbox/admin/"+path, body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("sandbox admin %s: %d %s", path, resp.StatusCode, b)
	}
}

func queryOf(t *testing.T, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// assertNoSecrets fails if any of the secrets appears in s.
func assertNoSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains a secret (%.6s…)", what, sec)
		}
	}
}
