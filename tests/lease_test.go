package tests

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// afterRefresh is an http.RoundTripper that calls then once, right after
// the first refresh_token grant got its answer: the provider has rotated,
// the refresher holds the only copy of the new tokens and has not written
// the vault yet.
type afterRefresh struct {
	base http.RoundTripper
	once sync.Once
	then func()
}

func (a *afterRefresh) RoundTrip(r *http.Request) (*http.Response, error) {
	refresh := false
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body.Close()
		refresh = bytes.Contains(b, []byte("grant_type=refresh_token"))
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := a.base.RoundTrip(r)
	if err == nil && refresh {
		a.once.Do(a.then)
	}
	return resp, err
}

// NATS (stream and KV alike) goes away exactly between the token response
// and the vault write, for longer than half the lease: the refresher keeps
// the rotated tokens, stores and records them once NATS is back (extending
// its lease as soon as it can), and the other instance's scheduler does not
// recover the lease. The provider saw one refresh and no reuse. (Before the
// refresh lease was kept alive, the vault write was given up after 0.6 s
// and the connection ended in rotated_tokens_lost.)
func TestRotatedTokensSurviveANATSOutage(t *testing.T) {
	const lease = 6 * time.Second // grace: the lease
	dir, port := t.TempDir(), freeLoopbackPort(t)
	srv := natstest.StartOn(t, dir, port)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	in := start(t, func(c *app.Config) {
		c.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(port)
		c.RefreshLease = lease
	})
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)

	// A second refresher on the same store and vault whose HTTP client
	// stops NATS once the token response arrived.
	down := make(chan struct{})
	base := "http://" + in.HTTPListener.Addr().String()
	p, err := provider.New(provider.Config{
		Name: "sandbox", ClientID: in.Sandbox.ClientID(), ClientSecret: in.Sandbox.ClientSecret(), RedirectURL: base + "/oauth/callback",
		Endpoints: provider.Endpoints{AuthURL: base + "/sandbox/oauth/authorize", TokenURL: base + "/sandbox/oauth/token", RevocationURL: base + "/sandbox/oauth/revoke"},
		HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: &afterRefresh{base: http.DefaultTransport, then: func() {
			srv.Shutdown()
			srv.WaitForShutdown()
			close(down)
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	refresher, err := lifecycle.New(lifecycle.Config{
		Store: in.Store, Vault: in.Vault, Gate: in.Proj.Gate, Attempts: in.Attempts,
		Providers: map[string]domain.TokenEndpoint{"sandbox": p}, Instance: "outage", Lease: lease,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- refresher.Refresh(context.Background(), id, domain.TriggerManual) }()
	select {
	case <-down:
	case err := <-done:
		t.Fatalf("the refresh ended before the outage: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no token request")
	}
	outage := lease/2 + time.Second
	time.Sleep(outage) // NATS is down: nothing to poll
	srv = natstest.StartOn(t, dir, port)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the refresh did not end after NATS came back")
	}
	took := time.Since(began)
	h := history(t, in, id)
	if h[len(h)-1] != "refresh.succeeded" || contains(h, "refresh.failed") {
		t.Fatalf("events %v", h)
	}
	c := load(t, in, id)
	toks, err := in.Vault.Get(ctxT(t), id)
	if err != nil || c.State != domain.StateActive || c.Tokens.RefreshTokenFP != domain.Fingerprint(toks.RefreshToken) {
		t.Fatalf("state %s, recorded %s, vault %v", c.State, c.Tokens.RefreshTokenFP, err)
	}
	if s := stats(t, in); s.TokenRequests.RefreshToken != 1 || s.RefreshTokenReuse != 0 {
		t.Fatalf("sandbox saw %d refresh requests, %d reuses", s.TokenRequests.RefreshToken, s.RefreshTokenReuse)
	}
	extensions := 0
	for _, e := range h {
		if e == string(domain.EventRefreshLeaseExtended) {
			extensions++
		}
	}
	t.Logf("NATS down %v after the token response; refresh recorded %v after it began, %d lease extensions", outage, took.Round(time.Millisecond), extensions)
	if tok, _, err := in.Lifecycle.Token(ctxT(t), id); err != nil || tok != toks.AccessToken {
		t.Fatalf("token after the outage: %v", err)
	}
}
