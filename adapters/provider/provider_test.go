package provider_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/domain"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sandboxEnv runs the fosite sandbox on loopback and a provider for it.
func sandboxEnv(t *testing.T) (*sandbox.Server, *httptest.Server, *provider.Provider) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	sb, err := sandbox.New(sandbox.Config{RedirectURIs: []string{srv.URL + "/cb"}, Consent: "approve"})
	if err != nil {
		t.Fatal(err)
	}
	sb.SetIssuer(srv.URL)
	mux.Handle("/sandbox/", sb.Handler())
	ep, err := provider.Discover(ctxT(t), nil, srv.URL+"/sandbox")
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	p, err := provider.New(provider.Config{Name: "sandbox", Endpoints: ep, ClientID: sb.ClientID(), ClientSecret: sb.ClientSecret(), RedirectURL: srv.URL + "/cb"})
	if err != nil {
		t.Fatal(err)
	}
	return sb, srv, p
}

func authorise(t *testing.T, p *provider.Provider) (access, refresh string) {
	t.Helper()
	verifier := "v-" + strings.Repeat("x", 50)
	u := p.AuthCodeURL("state-123456789", verifier, []string{"users:read"}, map[string]string{"urn_pleo_params_oauth_subject": "company-1"})
	pu, _ := url.Parse(u)
	if pu.Query().Get("code_challenge_method") != "S256" || pu.Query().Get("code_challenge") == "" || pu.Query().Get("scope") != "users:read" ||
		pu.Query().Get("urn_pleo_params_oauth_subject") != "company-1" {
		t.Fatalf("authorize URL lacks PKCE S256 or scope: %s", u)
	}
	_, loc := porttest.Redirect(t, u)
	toks, err := p.Exchange(ctxT(t), loc.Query().Get("code"), verifier, []string{"users:read"})
	if err != nil {
		t.Fatal(err)
	}
	return toks.AccessToken, toks.RefreshToken
}

func TestDiscoveryExchangeRefreshRevoke(t *testing.T) {
	_, _, p := sandboxEnv(t)
	if p.Endpoints().RevocationURL == "" {
		t.Fatal("discovery found no revocation endpoint")
	}
	_, rt := authorise(t, p)
	toks, rotated, err := p.Refresh(ctxT(t), rt, nil)
	if err != nil || !rotated || toks.RefreshToken == rt || toks.Expiry.IsZero() {
		t.Fatalf("refresh: rotated=%v err=%v", rotated, err)
	}
	// The replaced refresh token is dead, and presenting it is terminal.
	_, _, err = p.Refresh(ctxT(t), rt, nil)
	var f *domain.Failure
	if !errors.As(err, &f) || !f.Terminal || f.Code != "invalid_grant" || f.Status != 400 {
		t.Fatalf("stale refresh: %v", err)
	}
	if err := p.Revoke(ctxT(t), toks.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}

func TestClassifyAgainstSandboxFaults(t *testing.T) {
	sb, srv, p := sandboxEnv(t)
	_, rt := authorise(t, p)
	set := func(body string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/sandbox/admin/faults", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+sb.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("faults: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	set(`{"status":503,"count":1}`)
	_, _, err := p.Refresh(ctxT(t), rt, nil)
	var f *domain.Failure
	if !errors.As(err, &f) || f.Terminal || f.Status != 503 {
		t.Fatalf("503: %v", err)
	}
	set(`{"status":429,"count":1,"retry_after":7}`)
	_, _, err = p.Refresh(ctxT(t), rt, nil)
	if !errors.As(err, &f) || f.Terminal || f.Status != 429 || f.RetryAfter != 7*time.Second {
		t.Fatalf("429: %+v", f)
	}
	// The faults consumed nothing: the refresh token still works.
	if _, _, err := p.Refresh(ctxT(t), rt, nil); err != nil {
		t.Fatalf("after faults: %v", err)
	}
	_ = sb
}

// tokenServer answers every token request with the given status and body.
func tokenServer(t *testing.T, status int, body string, hdr map[string]string) *provider.Provider {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	p, err := provider.New(provider.Config{Name: "x", ClientID: "c", ClientSecret: "s3cr3t-client",
		Endpoints: provider.Endpoints{AuthURL: srv.URL + "/a", TokenURL: srv.URL + "/t"}, RedirectURL: "http://127.0.0.1/cb"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClassifyEveryShapeOfFailure(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		body     string
		hdr      map[string]string
		terminal bool
		code     string
	}{
		{"invalid_grant", 400, `{"error":"invalid_grant"}`, nil, true, "invalid_grant"},
		{"invalid_client", 401, `{"error":"invalid_client"}`, nil, true, "invalid_client"},
		{"unauthorized_client", 400, `{"error":"unauthorized_client"}`, nil, true, "unauthorized_client"},
		{"unknown code", 400, `{"error":"consent_revoked_by_policy"}`, nil, true, "consent_revoked_by_policy"},
		{"bare 403", 403, `nope`, nil, true, "http_403"},
		{"error body with 200", 200, `{"error":"invalid_grant"}`, nil, true, "invalid_grant"},
		{"hostile error code", 400, `{"error":"bad\"code\n"}`, nil, true, "invalid_error_code"},
		{"502", 502, `<html>bad gateway</html>`, nil, false, "server_error_status"},
		{"429 with date", 429, `{}`, map[string]string{"Retry-After": "120"}, false, "rate_limited"},
		{"garbage 200", 200, `<<<not json`, nil, false, "malformed_response"},
		{"200 without access token", 200, `{"token_type":"bearer"}`, nil, false, "malformed_response"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := tokenServer(t, c.status, c.body, c.hdr)
			_, _, err := p.Refresh(ctxT(t), "some-refresh-token-value", nil)
			var f *domain.Failure
			if !errors.As(err, &f) || f.Terminal != c.terminal || f.Code != c.code {
				t.Fatalf("got %+v (%v), want terminal=%v code=%s", f, err, c.terminal, c.code)
			}
			if strings.Contains(err.Error(), "some-refresh-token-value") || strings.Contains(err.Error(), "s3cr3t-client") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestClassifyNetworkAndTimeout(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	p, _ := provider.New(provider.Config{Name: "x", ClientID: "c", Endpoints: provider.Endpoints{AuthURL: "http://" + addr + "/a", TokenURL: "http://" + addr + "/t"}, RedirectURL: "http://127.0.0.1/cb"})
	_, _, err := p.Refresh(ctxT(t), "rt", nil)
	var f *domain.Failure
	if !errors.As(err, &f) || f.Terminal || f.Code != "network" {
		t.Fatalf("refused connection: %+v", f)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer slow.Close()
	p, _ = provider.New(provider.Config{Name: "x", ClientID: "c", Endpoints: provider.Endpoints{AuthURL: slow.URL, TokenURL: slow.URL}, RedirectURL: "http://127.0.0.1/cb"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err = p.Refresh(ctx, "rt", nil)
	if !errors.As(err, &f) || f.Terminal || f.Code != "timeout" {
		t.Fatalf("timeout: %+v (%v)", f, err)
	}
}

// A response without refresh_token keeps the old one (RFC 6749 §6).
func TestRefreshWithoutRotationKeepsRefreshToken(t *testing.T) {
	p := tokenServer(t, 200, `{"access_token":"new-access","token_type":"bearer","expires_in":900}`, nil)
	toks, rotated, err := p.Refresh(ctxT(t), "old-refresh", nil)
	if err != nil || rotated || toks.RefreshToken != "old-refresh" || toks.AccessToken != "new-access" {
		t.Fatalf("got rotated=%v err=%v", rotated, err)
	}
}

func TestPresets(t *testing.T) {
	pl := provider.Presets["pleo"]
	if pl.AuthURL != "https://auth.pleo.io/oauth/authorize" || pl.TokenURL != "https://auth.pleo.io/oauth/token" {
		t.Fatalf("pleo preset %+v", pl)
	}
	if st := provider.Presets["pleo-staging"]; !strings.HasPrefix(st.TokenURL, "https://auth.staging.pleo.io/") {
		t.Fatalf("staging preset %+v", st)
	}
}

// TestTokenEndpointContract runs the domain.TokenEndpoint contract against
// the provider talking HTTP to the real fosite sandbox on 127.0.0.1, one
// sandbox per subtest; consent is approved by a GET of the authorization
// URL (approve mode) whose redirect carries the code.
func TestTokenEndpointContract(t *testing.T) {
	porttest.TokenEndpoint(t, func(t *testing.T) porttest.TokenEndpointHarness {
		mux := http.NewServeMux()
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		sb, err := sandbox.New(sandbox.Config{RedirectURIs: []string{srv.URL + "/cb"}, Consent: sandbox.ConsentApprove,
			Scopes: []string{"users:read", "accounts:read"}})
		if err != nil {
			t.Fatal(err)
		}
		sb.SetIssuer(srv.URL)
		mux.Handle("/sandbox/", sb.Handler())
		ep, err := provider.Discover(t.Context(), nil, srv.URL+"/sandbox")
		if err != nil {
			t.Fatal(err)
		}
		p, err := provider.New(provider.Config{Name: "sandbox", Endpoints: ep, ClientID: sb.ClientID(), ClientSecret: sb.ClientSecret(), RedirectURL: srv.URL + "/cb"})
		if err != nil {
			t.Fatal(err)
		}
		var _ domain.TokenEndpoint = p
		return porttest.TokenEndpointHarness{
			Endpoint:     p,
			Approve:      approveOverHTTP,
			Scopes:       []string{"users:read"},
			ClientSecret: sb.ClientSecret(),
			Now:          time.Now,
		}
	})
}

// approveOverHTTP requests authURL from the sandbox (approve mode) without
// following the redirect and returns the code from its Location.
func approveOverHTTP(t *testing.T, authURL string) string {
	t.Helper()
	_, loc := porttest.Redirect(t, authURL)
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("authorize redirected to %s: no code", loc)
	}
	return code
}

// The parameters tokenline sets win over whatever a connection's
// configuration (possibly from a forged connection.updated on the stream) or
// the endpoint URL says, in any letter case; a request object cannot replace
// them; legitimate extra parameters pass. The sandbox then accepts the URL
// and redirects to tokenline's redirect URI.
func TestAuthCodeURLOwnParametersWin(t *testing.T) {
	const evil = "https://evil.example/cb"
	_, srv, p := sandboxEnv(t)
	verifier := "v-" + strings.Repeat("y", 50)
	extra := map[string]string{
		"redirect_uri": evil, "REDIRECT_URI": evil, "Redirect_Uri": evil, " redirect_uri": evil, "redirect_uri ": evil,
		"state": "forged", "client_id": "forged", "scope": "admin", "Scope": "admin", "response_type": "token",
		"code_challenge": "forged", "code_challenge_method": "plain", "request_uri": "https://evil.example/r", "request": "eyJ.forged",
		"a&redirect_uri=x": evil, "x\nredirect_uri": evil, "": evil,
		"urn_pleo_params_oauth_subject": "company-1",
	}
	for _, authURL := range []string{
		p.Endpoints().AuthURL,
		p.Endpoints().AuthURL + "?redirect_uri=" + url.QueryEscape(evil) + "&STATE=forged&tenant=t1",
	} {
		ep := p.Endpoints()
		ep.AuthURL = authURL
		pp, err := provider.New(provider.Config{Name: "sandbox", Endpoints: ep, ClientID: "tokenline-sandbox", RedirectURL: srv.URL + "/cb"})
		if err != nil {
			t.Fatal(err)
		}
		raw := pp.AuthCodeURL("state-123456789", verifier, []string{"users:read"}, extra)
		if strings.Contains(raw, "evil.example") || strings.Contains(raw, "forged") || strings.Contains(raw, "admin") {
			t.Fatalf("authorize URL carries a forged parameter: %s", raw)
		}
		u, _ := url.Parse(raw)
		q := u.Query()
		want := map[string]string{
			"response_type": "code", "client_id": "tokenline-sandbox", "redirect_uri": srv.URL + "/cb", "scope": "users:read",
			"state": "state-123456789", "code_challenge_method": "S256", "urn_pleo_params_oauth_subject": "company-1",
		}
		for k, v := range want {
			if len(q[k]) != 1 || q[k][0] != v {
				t.Errorf("%s = %q, want exactly %q (%s)", k, q[k], v, raw)
			}
		}
		for k := range q {
			if _, ok := want[k]; !ok && k != "code_challenge" && k != "tenant" {
				t.Errorf("unexpected parameter %q in %s", k, raw)
			}
		}
		if strings.Contains(authURL, "tenant") && q.Get("tenant") != "t1" {
			t.Errorf("the endpoint's own parameter was lost: %s", raw)
		}
	}
	// The sandbox accepts such a URL and redirects to tokenline's callback.
	_, loc := porttest.Redirect(t, p.AuthCodeURL("state-123456789", verifier, []string{"users:read"}, extra))
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != srv.URL+"/cb" || loc.Query().Get("code") == "" {
		t.Fatalf("redirected to %s", loc)
	}
}

// A provider configured with an issuer is unavailable until discovery
// succeeds: token requests fail transiently (provider_unavailable, never
// terminal), revocation says so, and AuthCodeURL gives nothing. After
// Discover the explicit endpoints win over the discovered ones, the default
// scopes and the provider's extra parameters are sent, and a connection's
// own parameter of the same name wins.
func TestDiscoveryPendingThenDefaults(t *testing.T) {
	_, srv, _ := sandboxEnv(t)
	explicit := srv.URL + "/sandbox/oauth/revoke?explicit=1"
	p, err := provider.New(provider.Config{Name: "late", Issuer: srv.URL + "/sandbox", ClientID: "c", AuthStyle: provider.AuthNone,
		RedirectURL: srv.URL + "/cb", Endpoints: provider.Endpoints{RevocationURL: explicit},
		Scopes: []string{"users:read"}, AuthorizeParams: map[string]string{"prompt": "consent", "tenant": "default"}})
	if err != nil {
		t.Fatal(err)
	}
	if h := p.Health(); h.Status != provider.StatusUnavailable || p.Ready() == nil || !errors.Is(p.Ready(), provider.ErrUnavailable) {
		t.Fatalf("before discovery: %+v", h)
	}
	var f *domain.Failure
	if _, _, err := p.Refresh(ctxT(t), "rt", nil); !errors.As(err, &f) || f.Terminal || f.Code != "provider_unavailable" {
		t.Fatalf("refresh before discovery: %v", err)
	}
	if _, err := p.Exchange(ctxT(t), "code", "v", nil); !errors.As(err, &f) || f.Terminal {
		t.Fatalf("exchange before discovery: %v", err)
	}
	if err := p.Revoke(ctxT(t), "t", "refresh_token"); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("revoke before discovery: %v", err)
	}
	if u := p.AuthCodeURL("state-123456789", "v", nil, nil); u != "" {
		t.Fatalf("authorize URL before discovery: %s", u)
	}
	if err := p.Discover(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ep := p.Endpoints()
	if h := p.Health(); h.Status != provider.StatusDiscovered || ep.RevocationURL != explicit || ep.TokenURL != srv.URL+"/sandbox/oauth/token" {
		t.Fatalf("after discovery: %+v", h)
	}
	u, _ := url.Parse(p.AuthCodeURL("state-123456789", "v", nil, map[string]string{"tenant": "t1"}))
	if q := u.Query(); q.Get("scope") != "users:read" || q.Get("prompt") != "consent" || q.Get("tenant") != "t1" {
		t.Fatalf("defaults in the authorize URL: %s", u)
	}
	if _, err := provider.New(provider.Config{Name: "x", ClientID: "c", ClientSecret: "s", AuthStyle: provider.AuthNone, RedirectURL: srv.URL + "/cb", Issuer: srv.URL}); err == nil {
		t.Fatal("a public client with a secret was accepted")
	}
}

// A discovery that fails names every URL it tried with what each answered.
func TestDiscoveryErrorListsEveryURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := provider.Discover(ctxT(t), nil, srv.URL+"/tenant")
	var de *provider.DiscoveryError
	if !errors.As(err, &de) || len(de.Attempts) != 3 {
		t.Fatalf("error: %v", err)
	}
	for _, u := range []string{"/.well-known/oauth-authorization-server/tenant", "/tenant/.well-known/oauth-authorization-server", "/tenant/.well-known/openid-configuration"} {
		if !strings.Contains(err.Error(), srv.URL+u+": status 404") {
			t.Errorf("the error does not name %s: %v", u, err)
		}
	}
}

// Token responses without a refresh token are grants: with expires_in the
// access token expires then; with neither expires_in nor a refresh token it
// does not expire (zero Expiry). expires_in is assumed only when a refresh
// token will renew the access token.
func TestExchangeWithoutRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name, body   string
		refresh      string
		expiresAfter time.Duration // 0: no expiry
	}{
		{"expiring, no refresh token", `{"access_token":"at","token_type":"bearer","expires_in":60}`, "", time.Minute},
		{"non-expiring, no refresh token", `{"access_token":"at","token_type":"bearer"}`, "", 0},
		{"no expires_in, refresh token", `{"access_token":"at","token_type":"bearer","refresh_token":"rt"}`, "rt", provider.AssumedLifetime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tokenServer(t, 200, tc.body, nil)
			before := time.Now()
			toks, err := p.Exchange(ctxT(t), "code", "verifier", nil)
			if err != nil || toks.AccessToken != "at" || toks.RefreshToken != tc.refresh {
				t.Fatalf("exchange: %v, access %q refresh %q", err, toks.AccessToken, toks.RefreshToken)
			}
			switch {
			case tc.expiresAfter == 0 && !toks.Expiry.IsZero():
				t.Fatalf("expiry %v, want none", toks.Expiry)
			case tc.expiresAfter != 0 && (toks.Expiry.Before(before.Add(tc.expiresAfter)) || toks.Expiry.After(time.Now().Add(tc.expiresAfter))):
				t.Fatalf("expiry %v, want about now + %v", toks.Expiry, tc.expiresAfter)
			}
		})
	}
}

// A refresh response without refresh_token and without expires_in: the
// kept refresh token renews the access token, so its lifetime is assumed
// (it is not taken for a non-expiring token).
func TestRefreshWithoutRefreshTokenOrExpiry(t *testing.T) {
	p := tokenServer(t, 200, `{"access_token":"new-access","token_type":"bearer"}`, nil)
	toks, rotated, err := p.Refresh(ctxT(t), "old-refresh", nil)
	if err != nil || rotated || toks.RefreshToken != "old-refresh" || toks.Expiry.IsZero() {
		t.Fatalf("rotated=%v err=%v expiry=%v", rotated, err, toks.Expiry)
	}
}

// An expires_in of zero or less is garbage (RFC 6749 §5.1: a positive
// lifetime) and is read as not given: with a refresh token the assumed
// lifetime, without one no expiry. Never an expiry in the past, which would
// have the token refreshed again at once.
func TestNonPositiveExpiresInIsNotGiven(t *testing.T) {
	for _, c := range []struct {
		name, body string
		refresh    bool
	}{
		{"negative", `{"access_token":"a","token_type":"bearer","expires_in":-3600,"refresh_token":"r2"}`, true},
		{"negative string", `{"access_token":"a","token_type":"bearer","expires_in":"-1","refresh_token":"r2"}`, true},
		{"zero", `{"access_token":"a","token_type":"bearer","expires_in":0,"refresh_token":"r2"}`, true},
		{"negative, no refresh token", `{"access_token":"a","token_type":"bearer","expires_in":-5}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := tokenServer(t, 200, c.body, nil)
			toks, err := p.Exchange(ctxT(t), "code", "verifier-verifier-verifier-verifier-verifier", nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.refresh && time.Until(toks.Expiry) < provider.AssumedLifetime-time.Minute:
				t.Fatalf("expiry %v, want the assumed lifetime", toks.Expiry)
			case !c.refresh && !toks.Expiry.IsZero():
				t.Fatalf("expiry %v, want none", toks.Expiry)
			}
		})
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		_, _ = w.Write([]byte("access_token=a&token_type=bearer&refresh_token=r2&expires_in=-60"))
	}))
	defer srv.Close()
	p, err := provider.New(provider.Config{Name: "x", ClientID: "c", ClientSecret: "s",
		Endpoints: provider.Endpoints{AuthURL: srv.URL + "/a", TokenURL: srv.URL + "/t"}, RedirectURL: "http://127.0.0.1/cb"})
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := p.Refresh(ctxT(t), "old", nil)
	if err != nil || !toks.Expiry.After(time.Now()) {
		t.Fatalf("form-encoded expires_in=-60: expiry %v, err %v", toks.Expiry, err)
	}
}
