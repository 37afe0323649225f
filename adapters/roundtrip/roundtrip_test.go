package roundtrip_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// report is one call to the recording Reporter.
type report struct {
	connectionID, www, fp string
	status                int
}

// recorder is a Reporter that records what it is told and decides the
// domain event, as the lifecycle would.
type recorder struct {
	mu      sync.Mutex
	reports []report
	conn    domain.Connection
	events  []domain.Payload
}

func (r *recorder) ReportRejection(ctx context.Context, connectionID string, status int, www, fp string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, report{connectionID, www, fp, status})
	code, scope, _ := domain.BearerError(www)
	p, err := domain.Decide(&r.conn, domain.RejectAccess{HTTPStatus: status, ErrorCode: code, Scope: scope, AccessTokenFP: fp})
	if err != nil {
		return err
	}
	r.events = append(r.events, p)
	return nil
}

func (r *recorder) calls() []report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]report(nil), r.reports...)
}

// apiServer answers each request with the status and WWW-Authenticate
// header set for its path, and counts requests and their bearer tokens.
type apiServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	auth     []string
}

func newAPI(t *testing.T) *apiServer {
	a := &apiServer{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		a.mu.Lock()
		a.auth = append(a.auth, r.Header.Get("Authorization"))
		a.mu.Unlock()
		switch r.URL.Path {
		case "/expired":
			w.Header().Set("WWW-Authenticate", `Bearer realm="pleo", error="invalid_token", error_description="The access token expired"`)
			w.WriteHeader(401)
		case "/bare401":
			w.Header().Set("WWW-Authenticate", `Bearer realm="pleo"`)
			w.WriteHeader(401)
		case "/badrequest401":
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_request"`)
			w.WriteHeader(401)
		case "/scope":
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="expenses:write"`)
			w.WriteHeader(403)
		case "/forbidden":
			w.WriteHeader(403)
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(a.Close)
	return a
}

// trackedBody records whether it was closed.
type trackedBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackedBody) Close() error { b.closed.Store(true); return nil }

// openGate returns a gate with one active connection and its token.
func openGate(t *testing.T) (*projections.Gate, string, string, domain.Connection) {
	t.Helper()
	g := projections.NewGate(projections.GateOptions{})
	st := projections.NewStatus() // the gate follows a status projection
	st.OnChange(g.Observe)
	id := uuid.NewString()
	tok := domain.Tokens{AccessToken: "secret-" + uuid.NewString(), RefreshToken: "r", Expiry: time.Now().Add(time.Hour)}
	var c domain.Connection
	for i, p := range []domain.Payload{
		domain.ConnectionCreated{Provider: "pleo"},
		domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: time.Now().Add(time.Minute)},
		domain.AuthorisationCompleted{AttemptID: "a", Tokens: tok.Info()},
	} {
		e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: time.Now(), Seq: uint64(i + 1), Payload: p}
		if err := c.Apply(e); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.SetToken(id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	return g, id, tok.AccessToken, c
}

func TestGatedCallsNeverReachTheNetwork(t *testing.T) {
	api := newAPI(t)
	g, id, _, _ := openGate(t)
	rec := &recorder{}
	tr := &roundtrip.Transport{Gate: roundtrip.FromGate(g), Reporter: rec, ConnectionID: id}

	g.CloseAfter(id, domain.ReasonInvalidGrant, 0)
	unknown := tr.ForConnection(uuid.NewString())
	for _, c := range []struct {
		tr     *roundtrip.Transport
		detail string
	}{{tr, domain.DetailUnauthenticated}, {unknown, domain.DetailUnknownConnection}} {
		body := &trackedBody{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequest(http.MethodPost, api.URL+"/expenses", body)
		resp, err := c.tr.Client().Do(req)
		if resp != nil {
			t.Fatalf("got a response: %v", resp.Status)
		}
		var ge *domain.GateError
		if !errors.Is(err, domain.ErrUnauthenticated) || !errors.As(err, &ge) || ge.Detail != c.detail {
			t.Fatalf("gated call: %v", err)
		}
		if !body.closed.Load() {
			t.Fatal("request body not closed")
		}
	}
	if n := api.requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the API", n)
	}
	if len(rec.calls()) != 0 {
		t.Fatal("a gated call was reported")
	}
}

func TestBearerInjectedAndRejectionsReported(t *testing.T) {
	api := newAPI(t)
	g, id, tok, c := openGate(t)
	rec := &recorder{conn: c}
	tr := &roundtrip.Transport{Gate: roundtrip.FromGate(g), Reporter: rec, ConnectionID: id}
	client := tr.Client()

	req, _ := http.NewRequest(http.MethodGet, api.URL+"/users", nil)
	req.Header.Set("X-Caller", "1")
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("open call: %v %v", resp, err)
	}
	resp.Body.Close()
	if req.Header.Get("Authorization") != "" {
		t.Fatal("the caller's request was modified")
	}
	if api.auth[0] != "Bearer "+tok {
		t.Fatalf("server saw Authorization %q", api.auth[0])
	}

	fp := domain.Fingerprint(tok)
	cases := []struct {
		path     string
		status   int
		reported bool
	}{
		{"/expired", 401, true},
		{"/bare401", 401, true},
		{"/badrequest401", 401, false},
		{"/scope", 403, true},
		{"/forbidden", 403, false},
		{"/ok", 200, false},
	}
	for _, c := range cases {
		before := len(rec.calls())
		resp, err := client.Get(api.URL + c.path)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("%s: caller got %d, want %d (the response must pass through)", c.path, resp.StatusCode, c.status)
		}
		calls := rec.calls()
		if got := len(calls) - before; (got == 1) != c.reported || got > 1 {
			t.Fatalf("%s: %d reports, want reported=%v", c.path, got, c.reported)
		}
		if c.reported {
			r := calls[len(calls)-1]
			if r.connectionID != id || r.status != c.status || r.fp != fp || r.www == "" && c.path != "/bare401" {
				t.Fatalf("%s: report %+v", c.path, r)
			}
			if strings.Contains(r.www+r.fp, tok) {
				t.Fatal("the report carries the token")
			}
		}
	}
	// What the reports mean to the domain: the 401s are recorded rejections
	// (a refresh follows), the 403 insufficient_scope is reported but never
	// terminal.
	if len(rec.events) != 3 {
		t.Fatalf("decided %d events", len(rec.events))
	}
	scope := rec.events[2].(domain.AccessRejected)
	if scope.HTTPStatus != 403 || scope.Terminal || scope.ErrorCode != "insufficient_scope" || scope.Scope != "expenses:write" {
		t.Fatalf("403 decided as %+v", scope)
	}
	if api.requests.Load() != int64(len(cases)+1) {
		t.Fatalf("%d requests", api.requests.Load())
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A report runs even if the caller gave up as the response arrived.
func TestReportSurvivesCallerCancellation(t *testing.T) {
	api := newAPI(t)
	g, id, _, c := openGate(t)
	rec := &recorder{conn: c}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		cancel() // the caller gives up once the 401 is in
		return resp, err
	})
	tr := &roundtrip.Transport{Base: base, Gate: roundtrip.FromGate(g), Reporter: rec, ConnectionID: id}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/expired", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if calls := rec.calls(); len(calls) != 1 || calls[0].status != 401 {
		t.Fatalf("reports after cancellation: %+v", calls)
	}
}

func TestShouldReport(t *testing.T) {
	for _, c := range []struct {
		status int
		www    []string
		want   bool
	}{
		{401, nil, true}, // no challenge: nothing says the token is fine
		{401, []string{`Basic realm="x"`}, true},
		{401, []string{`Bearer realm="api"`}, true},
		{401, []string{`Bearer error="invalid_token", error_description="expired \"now\""`}, true},
		{401, []string{`Basic realm="x"`, `bearer ERROR="invalid_token"`}, true},
		{401, []string{`Basic realm="x", Bearer realm="api", error=invalid_token`}, true},
		{401, []string{`Bearer error="invalid_request"`}, false},
		{401, []string{`Bearer error=""`}, true}, // an empty error is no error
		// A comma and "error=" inside a quoted-string are not a parameter
		// (the lifecycle's old parser read invalid_token here).
		{401, []string{`Bearer error="insufficient_scope", error_description="x,error=invalid_token"`}, true}, // insufficient_scope: recorded only
		{403, []string{`Bearer error="insufficient_scope", error_description="x,error=invalid_token"`}, true},
		{403, []string{`Basic realm="x", Bearer realm="api", error=insufficient_scope, scope="a:b c:d"`}, true},
		{403, []string{`Bearer error="invalid_token", error_description="x,error=insufficient_scope"`}, true}, // invalid_token is dead whatever the status
		{403, []string{`Bearer error="insufficient_scope"`}, true},
		{403, []string{`Bearer realm="api"`}, false},
		{403, nil, false},
		{500, nil, false},
		{200, []string{`Bearer error="invalid_token"`}, true},
		{400, []string{`Bearer error="invalid_request"`}, false},
	} {
		if got := roundtrip.ShouldReport(c.status, c.www); got != c.want {
			t.Errorf("ShouldReport(%d, %q) = %v, want %v", c.status, c.www, got, c.want)
		}
	}
}

// A cross-host redirect (or any request to another host) carries no token,
// and that host's 401 is not reported.
func TestTokenNeverLeavesThePinnedHost(t *testing.T) {
	g, id, tok, _ := openGate(t)
	var foreignAuth atomic.Value
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreignAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer foreign.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			t.Errorf("API host got %q", r.Header.Get("Authorization"))
		}
		http.Redirect(w, r, foreign.URL+"/elsewhere", http.StatusFound)
	}))
	defer api.Close()
	rep := &recorder{}
	tr := &roundtrip.Transport{Gate: roundtrip.FromGate(g), Reporter: rep, ConnectionID: id}
	resp, err := tr.Client().Get(api.URL + "/v1/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got, _ := foreignAuth.Load().(string); got != "" {
		t.Fatalf("the foreign host received %q", got)
	}
	if n := len(rep.calls()); n != 0 {
		t.Fatalf("a foreign host's 401 was reported %d times", n)
	}
}
