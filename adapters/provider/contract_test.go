package provider_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/domain"
)

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
