package client_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// startServer runs a real tokenline (embedded nats-server, the fosite
// sandbox consenting by itself) on loopback port 0.
func startServer(t *testing.T) *app.Main {
	t.Helper()
	m := app.NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.NATSListen = "127.0.0.1:0"
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.SandboxConsent = "approve"
	m.Config.LogLevel = "error"
	m.LogOutput = discard{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustNew(t *testing.T, base, token string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(base, token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiError(t *testing.T, err error, status int, code string) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("err = %v, want an APIError %d %s", err, status, code)
	}
	return ae
}

// Every /v1 route, through the typed client, against a real server.
func TestClientAgainstServer(t *testing.T) {
	m := startServer(t)
	c := mustNew(t, m.BaseURL+"/", m.APIToken())
	ctx := ctxT(t)
	t0 := time.Now()

	var raw []byte
	st, err := c.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"team": "x"}}, client.RawBody(&raw))
	if err != nil || !domain.ValidConnectionID(st.ID) || st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonNeverAuthorised ||
		st.ReauthoriseURL != m.BaseURL+apitypes.ReauthorisePath(st.ID) || !strings.Contains(string(raw), `"id":"`+st.ID+`"`) {
		t.Fatalf("create: %+v %v\n%s", st, err, raw)
	}
	id := st.ID

	t.Run("list, get, update", func(t *testing.T) {
		var raw []byte
		cs, err := c.ListConnections(ctx, client.RawBody(&raw))
		if err != nil || len(cs) != 1 || cs[0].ID != id || !strings.HasPrefix(string(raw), `{"connections":[`) {
			t.Fatalf("list: %+v %v\n%s", cs, err, raw)
		}
		st, err := c.UpdateConnection(ctx, id, apitypes.UpdateRequest{Config: map[string]string{"team": "y"}})
		if err != nil || st.Config["team"] != "y" || len(st.Scopes) != 1 {
			t.Fatalf("update: %+v %v", st, err)
		}
		if st, err := c.GetConnection(ctx, id); err != nil || st.Config["team"] != "y" || st.Version == 0 {
			t.Fatalf("get: %+v %v", st, err)
		}
	})

	t.Run("closed gate", func(t *testing.T) {
		_, err := c.Token(ctx, id)
		ae := apiError(t, err, http.StatusConflict, apitypes.GateErrorReauthorisation)
		if ae.Gate == nil || ae.ActionBy() != domain.ActorUser || ae.RetryLater() || ae.Gate.State != domain.StateUnauthenticated || ae.Gate.Reason != domain.ReasonNeverAuthorised ||
			ae.Gate.ReauthoriseURL != m.BaseURL+apitypes.ReauthorisePath(id) {
			t.Fatalf("gate: %+v", ae.Gate)
		}
	})

	t.Run("authorise, token, rejection", func(t *testing.T) {
		u, err := c.Authorize(ctx, id)
		if err != nil || !strings.HasPrefix(u, m.BaseURL+"/sandbox/oauth/authorize?") {
			t.Fatalf("authorize: %q %v", u, err)
		}
		porttest.CompleteAuthorisation(t, m.BaseURL, u)
		tok, err := c.Token(ctx, id)
		if err != nil || tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.AccessTokenFP != domain.Fingerprint(tok.AccessToken) || tok.ExpiresAt.IsZero() {
			t.Fatalf("token: fp %q, %v", tok.AccessTokenFP, err)
		}
		// A 403 for a token that is no longer the current one changes nothing.
		st, err := c.ReportRejection(ctx, id, apitypes.RejectionRequest{Status: http.StatusForbidden, AccessTokenFP: "sha256:000000000000"})
		if err != nil || st.ID != id || st.State != domain.StateActive {
			t.Fatalf("rejection: %+v %v", st, err)
		}
		_, err = c.ReportRejection(ctx, id, apitypes.RejectionRequest{Status: http.StatusTeapot})
		apiError(t, err, http.StatusBadRequest, "invalid_command")
	})

	t.Run("events, state at, timeline", func(t *testing.T) {
		evs, err := c.Events(ctx, id, client.EventQuery{})
		if err != nil || len(evs) < 4 || evs[0].Type != "tokenline.connection.created" || evs[0].Subject != id {
			t.Fatalf("events: %d %v", len(evs), err)
		}
		only, err := c.Events(ctx, id, client.EventQuery{Types: []string{"authorisation.completed"}, Since: t0, Until: time.Now()})
		if err != nil || len(only) != 1 || only[0].Type != "tokenline.authorisation.completed" {
			t.Fatalf("events of one type: %+v %v", only, err)
		}
		body, err := c.EventsJSONL(ctx, id, client.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for sc := bufio.NewScanner(body); sc.Scan(); n++ {
			if !strings.HasPrefix(sc.Text(), `{"specversion":"1.0"`) {
				t.Errorf("jsonl line %q", sc.Text())
			}
		}
		body.Close()
		if n != len(evs) {
			t.Errorf("jsonl has %d lines, the JSON array %d events", n, len(evs))
		}

		a, err := c.StateAt(ctx, id, time.Now())
		if err != nil || a.ConnectionID != id || a.Status.State != domain.StateActive || len(a.Events) != len(evs) {
			t.Fatalf("state at: %+v %v", a.Status, err)
		}
		_, err = c.StateAt(ctx, id, t0.Add(-time.Hour))
		apiError(t, err, http.StatusNotFound, "not_found")

		rep, err := c.Timeline(ctx, t0.Add(-time.Minute), time.Now().Add(time.Minute))
		if err != nil || rep.Events != len(evs) || len(rep.Transitions) != len(evs) || len(rep.Counts) == 0 {
			t.Fatalf("timeline: %+v %v", rep, err)
		}
	})

	t.Run("client secret", func(t *testing.T) {
		if err := c.SetClientSecret(ctx, "sandbox", m.Sandbox.ClientSecret()); err != nil {
			t.Fatal(err)
		}
		apiError(t, c.SetClientSecret(ctx, "nope", "x"), http.StatusNotFound, "not_found")
	})

	t.Run("errors", func(t *testing.T) {
		// The id is escaped: it reaches the connection route, never another.
		_, err := c.GetConnection(ctx, "../../healthz")
		apiError(t, err, http.StatusBadRequest, "invalid_id")
		_, err = c.GetConnection(ctx, "00000000-0000-4000-8000-000000000000")
		if ae := apiError(t, err, http.StatusNotFound, "not_found"); ae.Method != "GET" || ae.Path != "/v1/connections/00000000-0000-4000-8000-000000000000" ||
			err.Error() != "no such connection (HTTP 404 not_found)" {
			t.Errorf("404: %+v %q", ae, err)
		}
		_, err = c.CreateConnection(ctx, apitypes.CreateRequest{Provider: "nope"})
		apiError(t, err, http.StatusBadRequest, "unknown_provider")

		wrong := mustNew(t, m.BaseURL, "tl_wrong_token")
		_, err = wrong.ListConnections(ctx)
		apiError(t, err, http.StatusUnauthorized, "unauthorized")
		if strings.Contains(err.Error(), "tl_wrong_token") || strings.Contains(err.Error(), m.APIToken()) {
			t.Errorf("the error holds a token: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.DeleteConnection(ctx, id); err != nil {
			t.Fatal(err)
		}
		apiError(t, c.DeleteConnection(ctx, id), http.StatusGone, "deleted")
		if st, err := c.GetConnection(ctx, id); err != nil || !st.Deleted {
			t.Fatalf("get after delete: %+v %v", st, err)
		}
		if cs, err := c.ListConnections(ctx); err != nil || len(cs) != 0 {
			t.Fatalf("list after delete: %+v %v", cs, err)
		}
	})
}

func TestNew(t *testing.T) {
	for _, bad := range []string{"", "ftp://x", "127.0.0.1:8080", "http://"} {
		if _, err := client.New(bad, "t"); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	_, err := client.New("ftp://user:pw@example.test", "t")
	if err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("user information not redacted: %v", err)
	}
	c := mustNew(t, "https://user:pw@example.test/", "t")
	if c.BaseURL() != "https://redacted@example.test" {
		t.Errorf("BaseURL = %q", c.BaseURL())
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = mustNew(t, "http://"+addr, "secret-token").ListConnections(ctxT(t))
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || ue.URL != "http://"+addr || !strings.HasPrefix(err.Error(), "cannot reach tokenline at http://"+addr+": ") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("the error holds the token: %v", err)
	}
}

// Answers that are not the API's: another server, a proxy, a hung server.
func TestForeignAnswers(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("User-Agent") != "test-agent" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		switch r.URL.Path {
		case "/v1/connections":
			w.Write([]byte(`[{"id":"a"},{"id":"b"}]`)) // a bare array is read too
		case "/v1/connections/html":
			w.Write([]byte("<html>hello</html>"))
		case "/v1/connections/html/authorize":
			w.Write([]byte(`{}`))
		case "/v1/connections/proxy":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("upstream down\nmore"))
		case "/v1/connections/hang":
			select {
			case <-r.Context().Done():
			case <-block:
			}
		}
	}))
	defer srv.Close()
	c := mustNew(t, srv.URL, "tok", client.WithUserAgent("test-agent"), client.WithTimeout(100*time.Millisecond), client.WithHTTPClient(srv.Client()))
	ctx := ctxT(t)

	if cs, err := c.ListConnections(ctx); err != nil || len(cs) != 2 || cs[1].ID != "b" {
		t.Fatalf("bare array: %+v %v", cs, err)
	}
	var raw []byte
	_, err := c.GetConnection(ctx, "html", client.RawBody(&raw))
	var de *client.DecodeError
	if !errors.As(err, &de) || string(raw) != "<html>hello</html>" || !strings.HasPrefix(err.Error(), "the server's connection status is not the expected JSON: ") {
		t.Fatalf("html: %v %q", err, raw)
	}
	if _, err := c.Authorize(ctx, "html"); !errors.As(err, &de) || err.Error() != "the server's answer holds no authorize_url" {
		t.Fatalf("authorize without a URL: %v", err)
	}
	_, err = c.GetConnection(ctx, "proxy")
	if ae := apiError(t, err, http.StatusBadGateway, ""); ae.Message != "upstream down" || err.Error() != "upstream down (HTTP 502 bad_gateway)" {
		t.Fatalf("proxy: %q", err)
	}
	_, err = c.GetConnection(ctx, "hang")
	if err == nil || err.Error() != "GET /v1/connections/hang: no answer from "+srv.URL+" within 100ms" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.GetConnection(cctx, "hang"); err == nil || err.Error() != "GET /v1/connections/hang: interrupted" || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
