package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/sandbox"
)

// testRedirect is registered for the client. Tests never follow the
// redirect, they read the Location header, so nothing listens there.
const testRedirect = "http://127.0.0.1:1/callback"

var testScopes = []string{"export-jobs:read", "users:read", "accounts:read"}

// env is one sandbox behind a real loopback HTTP server plus an x/oauth2
// client configured for it.
type env struct {
	t      *testing.T
	srv    *sandbox.Server
	ts     *httptest.Server
	oc     oauth2.Config
	ctx    context.Context // carries httpc for x/oauth2
	httpc  *http.Client    // plain client, follows nothing
	logBuf *porttest.LogBuffer
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newEnv starts a sandbox in approve mode with the test client; mutate may
// change the config first.
func newEnv(t *testing.T, mutate func(*sandbox.Config)) *env {
	t.Helper()
	logBuf := &porttest.LogBuffer{}
	cfg := sandbox.Config{
		ClientID:     "tokenline-test",
		ClientSecret: "initial-secret-0123456789abcdef",
		RedirectURIs: []string{testRedirect},
		Scopes:       testScopes,
		Consent:      sandbox.ConsentApprove,
		Logger:       slogTo(logBuf),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := sandbox.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	srv.SetIssuer(ts.URL)

	transport := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}
	t.Cleanup(transport.CloseIdleConnections)
	httpc := &http.Client{
		Transport: transport,
		Timeout:   10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return &env{
		t:   t,
		srv: srv,
		ts:  ts,
		oc: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: srv.ClientSecret(),
			Endpoint: oauth2.Endpoint{
				AuthURL:   ts.URL + "/sandbox/oauth/authorize",
				TokenURL:  ts.URL + "/sandbox/oauth/token",
				AuthStyle: oauth2.AuthStyleInHeader,
			},
			RedirectURL: testRedirect,
			Scopes:      []string{"export-jobs:read", "users:read"},
		},
		ctx:    context.WithValue(context.Background(), oauth2.HTTPClient, httpc),
		httpc:  httpc,
		logBuf: logBuf,
	}
}

// authorize GETs the authorize URL and returns the response without
// following the redirect.
func (e *env) authorize(authURL string) *http.Response {
	e.t.Helper()
	resp, err := e.httpc.Get(authURL)
	if err != nil {
		e.t.Fatalf("GET authorize: %v", err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// redirectParams asserts a 303 to the registered redirect URI and returns
// its query.
func (e *env) redirectParams(resp *http.Response) url.Values {
	e.t.Helper()
	if resp.StatusCode != http.StatusSeeOther {
		body, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("authorize status = %d, want 303; body %s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		e.t.Fatalf("bad Location: %v", err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		e.t.Fatalf("redirected to %q, want %q", got, testRedirect)
	}
	return loc.Query()
}

// testState is the state the tests' authorize requests carry.
const testState = "state-0123456789"

// authorizeS256 runs the authorize step with an S256 challenge of verifier
// and returns the query of the redirect to the client (a code or an error).
func (e *env) authorizeS256(verifier string, opts ...oauth2.AuthCodeOption) url.Values {
	e.t.Helper()
	opts = append(opts, oauth2.S256ChallengeOption(verifier))
	return e.redirectParams(e.authorize(e.oc.AuthCodeURL(testState, opts...)))
}

// authorizeRefused runs the authorize step with a fresh S256 challenge
// and expects the redirect to carry the OAuth error code want.
func (e *env) authorizeRefused(what, want string) {
	e.t.Helper()
	if q := e.authorizeS256(oauth2.GenerateVerifier()); q.Get("error") != want {
		e.t.Fatalf("%s: %v, want error=%s", what, q, want)
	}
}

// code runs the authorize step with PKCE for verifier and returns the code.
func (e *env) code(verifier string, opts ...oauth2.AuthCodeOption) string {
	e.t.Helper()
	q := e.authorizeS256(verifier, opts...)
	if q.Get("state") != testState {
		e.t.Fatalf("state = %q, want %q", q.Get("state"), testState)
	}
	if q.Get("code") == "" {
		e.t.Fatalf("no code in redirect: %v", q)
	}
	return q.Get("code")
}

// grant runs the full code + PKCE flow and returns the tokens.
func (e *env) grant() *oauth2.Token {
	e.t.Helper()
	tok, err := e.tryGrant()
	if err != nil {
		e.t.Fatalf("grant: %v", err)
	}
	return tok
}

func (e *env) tryGrant() (*oauth2.Token, error) {
	v := oauth2.GenerateVerifier()
	return e.oc.Exchange(e.ctx, e.code(v), oauth2.VerifierOption(v))
}

// codeGrant is grant that also returns the code and the verifier it used.
func (e *env) codeGrant() (tok *oauth2.Token, code, verifier string) {
	e.t.Helper()
	verifier = oauth2.GenerateVerifier()
	code = e.code(verifier)
	tok, err := e.oc.Exchange(e.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		e.t.Fatalf("exchange: %v", err)
	}
	return tok, code, verifier
}

// refresh uses refreshToken once through x/oauth2.
func (e *env) refresh(refreshToken string) (*oauth2.Token, error) {
	return e.oc.TokenSource(e.ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
}

// mustFailWith asserts err is an OAuth error response with the status and
// error code.
func mustFailWith(t *testing.T, err error, status int, code string) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *oauth2.RetrieveError %d %s", err, status, code)
	}
	if re.Response.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("got %d %q (%s), want %d %q", re.Response.StatusCode, re.ErrorCode, re.Body, status, code)
	}
	return re
}

// me calls GET /sandbox/api/me with the bearer token.
func (e *env) me(accessToken, query string) (int, http.Header, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/sandbox/api/me"+query, nil)
	if accessToken != "" {
		req.Header.Set("Authorization", "Bearer "+accessToken)
	}
	resp, err := e.httpc.Do(req)
	if err != nil {
		e.t.Fatalf("GET /api/me: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, resp.Header, body
}

// assertAPI asserts the access token's status at /sandbox/api/me; for 401
// it also asserts the RFC 6750 invalid_token challenge.
func (e *env) assertAPI(accessToken string, want int) {
	e.t.Helper()
	status, h, body := e.me(accessToken, "")
	if status != want {
		e.t.Fatalf("/api/me status = %d, want %d (body %v)", status, want, body)
	}
	if want == http.StatusUnauthorized {
		if got := h.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			e.t.Fatalf("WWW-Authenticate = %q", got)
		}
	}
}

// admin calls an admin path with the admin token and decodes the JSON
// answer.
func (e *env) admin(method, path, body string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken())
	resp, err := e.httpc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// mustAdmin is admin plus a 200 assertion.
func (e *env) mustAdmin(method, path, body string) map[string]any {
	e.t.Helper()
	status, out := e.admin(method, path, body)
	if status != http.StatusOK {
		e.t.Fatalf("%s %s = %d %v", method, path, status, out)
	}
	return out
}

// postForm POSTs a form to a sandbox path with optional basic auth.
func (e *env) postForm(path string, form url.Values, user, pass string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	resp, err := e.httpc.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decodeBody(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decoding body: %v", err)
	}
	return out
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

// testClock is a clock for sandbox.Config.Now that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock(t time.Time) *testClock { return &testClock{now: t} }

// Now returns the clock's time.
func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
