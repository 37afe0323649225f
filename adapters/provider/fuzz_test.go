package provider_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
)

// fuzzResponse is what the fuzzed token endpoint answers next.
type fuzzResponse struct {
	mu          sync.Mutex
	status      int
	contentType string
	retryAfter  string
	body        []byte
}

func (f *fuzzResponse) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.contentType != "" {
		w.Header().Set("Content-Type", f.contentType)
	}
	if f.retryAfter != "" {
		w.Header().Set("Retry-After", f.retryAfter)
	}
	w.WriteHeader(f.status)
	_, _ = w.Write(f.body)
}

// FuzzTokenResponse sends a refresh to a loopback token endpoint that answers
// with a fuzzed status, content type, Retry-After and body, and checks the
// classification: a success only on 2xx with an access token; otherwise a
// *domain.Failure whose code is sanitised, whose Retry-After is bounded,
// whose class follows the status (429 and 5xx transient), and whose message
// never quotes the body or the refresh token presented.
func FuzzTokenResponse(f *testing.F) {
	seeds := []struct {
		status int
		ct, ra string
		body   string
	}{
		{200, "application/json", "", `{"access_token":"at","token_type":"bearer","expires_in":60,"refresh_token":"rt2"}`},
		{200, "application/json", "", `{"token_type":"bearer"}`},
		{200, "text/html", "", `<html>proxy login</html>`},
		{200, "application/x-www-form-urlencoded", "", `access_token=at&expires_in=abc`},
		{400, "application/json", "", `{"error":"invalid_grant","error_description":"SECRET-BODY-MARKER"}`},
		{400, "application/json", "", `{"error":"inv\"alid\n_grant"}`},
		{401, "application/json", "", `{"error":"invalid_client"}`},
		{403, "text/plain", "", `forbidden SECRET-BODY-MARKER`},
		{429, "application/json", "120", `{"error":"slow_down"}`},
		{429, "", "Wed, 21 Oct 2099 07:28:00 GMT", ``},
		{503, "text/html", "-5", `<h1>down</h1>`},
		{500, "application/json", "99999999999999999999", `{"error":"server_error"}`},
		{302, "", "", ``},
	}
	for _, s := range seeds {
		f.Add(uint16(s.status), s.ct, s.ra, []byte(s.body))
	}
	resp := &fuzzResponse{}
	srv := httptest.NewServer(resp)
	defer srv.Close()
	p, err := provider.New(provider.Config{
		Name: "fuzz", ClientID: "client", ClientSecret: "client-secret-value",
		Endpoints:   provider.Endpoints{AuthURL: srv.URL + "/authorize", TokenURL: srv.URL + "/token"},
		RedirectURL: "http://127.0.0.1/cb",
		HTTPClient: &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
	})
	if err != nil {
		f.Fatal(err)
	}
	const presented = "refresh-token-presented-XYZ"
	f.Fuzz(func(t *testing.T, status uint16, ct, ra string, body []byte) {
		st := int(status)%500 + 100 // 100..599
		if st < 200 {
			st += 100 // 1xx would hang the client waiting for a final status
		}
		if strings.ContainsAny(ct+ra, "\r\n\x00") {
			return // not expressible as a header
		}
		resp.mu.Lock()
		resp.status, resp.contentType, resp.retryAfter, resp.body = st, ct, ra, body
		resp.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		toks, rotated, err := p.Refresh(ctx, presented, []string{"users:read"})
		if err == nil {
			if st < 200 || st > 299 {
				t.Fatalf("status %d classified as success", st)
			}
			if toks.AccessToken == "" || toks.RefreshToken == "" {
				t.Fatalf("success without an access or refresh token")
			}
			if rotated != (toks.RefreshToken != presented) {
				t.Fatalf("rotated=%v but refresh token changed=%v", rotated, toks.RefreshToken != presented)
			}
			return
		}
		fl := domain.FailureOf(err)
		if fl.Code == "unclassified" {
			t.Fatalf("status %d: failure not classified: %v", st, err)
		}
		if domain.SafeErrorCode(fl.Code) != fl.Code {
			t.Fatalf("unsafe error code %q", fl.Code)
		}
		if fl.RetryAfter < 0 || fl.RetryAfter > time.Hour {
			t.Fatalf("Retry-After %q gave %v, outside [0, 1h]", ra, fl.RetryAfter)
		}
		if (st == http.StatusTooManyRequests || st >= 500) && fl.Terminal {
			t.Fatalf("status %d classified terminal (%s)", st, fl.Code)
		}
		if fl.Status != 0 && fl.Status != st {
			t.Fatalf("failure status %d, response status %d", fl.Status, st)
		}
		msg := err.Error()
		if strings.Contains(msg, presented) || strings.Contains(msg, "client-secret-value") {
			t.Fatalf("error quotes a secret: %s", msg)
		}
		// The OAuth error code (the body's "error", sanitised) is the one
		// part of the body a failure names, by design (events and logs
		// carry it): the rest of the message must not quote the body.
		if strings.Contains(string(body), "SECRET-BODY-MARKER") && strings.Contains(strings.Replace(msg, fl.Code, "", 1), "SECRET-BODY-MARKER") {
			t.Fatalf("error quotes the response body: %s", msg)
		}
		for _, c := range msg {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("error message carries control character %q: %s", c, strconv.Quote(msg))
			}
		}
	})
}
