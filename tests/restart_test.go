package tests

import (
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// After a restart the scheduler is seeded from the restored status
// projection: a connection authorised before the restart is refreshed when
// due without any new event reaching the new process first. (The in-process
// sandbox forgets its grants with the process, so that refresh is refused
// with invalid_grant: proof that it was attempted, and handled.)
func TestRestartSeedsTheScheduler(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *app.Config) {
		c.DataDir = dir
		c.SandboxAccessTTL = 3 * time.Second
		c.GateExpiryMargin = 100 * time.Millisecond
	}
	first := start(t, mod)
	id := create(t, first, map[string]string{"team": "finance"})
	authorise(t, first, id)
	first.Close()

	second := start(t, mod)
	if c := load(t, second, id); c.State != domain.StateActive {
		t.Fatalf("after restart: %s", c.State)
	}
	if st, ok := second.Proj.Status.Connection(id); !ok || st.State != domain.StateActive {
		t.Fatalf("status projection after restart: %+v %v", st, ok)
	}
	eventually(t, 15*time.Second, "the seeded scheduler to refresh", func() bool {
		return contains(history(t, second, id), "refresh.started")
	})
	eventually(t, 5*time.Second, "unauthenticated", func() bool {
		c := load(t, second, id)
		return c.State == domain.StateUnauthenticated && c.Reason == domain.ReasonInvalidGrant
	})
	// The user reconnects against the new sandbox: same connection, config intact.
	authorise(t, second, id)
	if c := load(t, second, id); c.State != domain.StateActive || c.Config["team"] != "finance" {
		t.Fatalf("after reconnecting: %+v", c)
	}
}

// A connection refreshed by one instance is usable on another: the second
// instance's gate learns the new fingerprint from the stream and loads the
// token from the shared vault on first use.
func TestTokenRefreshedElsewhereLoadsFromVault(t *testing.T) {
	a := start(t, nil)
	b := start(t, func(c *app.Config) {
		c.NATSURL = a.NATSURL()
		c.NATSCreds = a.NATSCredsFile()
		c.VaultKeyFile = sharedKey(t, a)
		c.Provider, c.ProviderName = "custom", "sandbox"
		c.ClientID, c.ClientSecret = a.Sandbox.ClientID(), a.Sandbox.ClientSecret()
		c.AuthURL, c.TokenURL = a.BaseURL+"/sandbox/oauth/authorize", a.BaseURL+"/sandbox/oauth/token"
	})
	id := create(t, a, map[string]string{"team": "finance"})
	authorise(t, a, id)
	if err := refreshNow(t, a, id); err != nil {
		t.Fatal(err)
	}
	want, _, err := a.Lifecycle.Token(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "b to see the refresh", func() bool {
		st, ok := b.Proj.Status.Connection(id)
		return ok && st.Tokens.AccessTokenFP == domain.Fingerprint(want)
	})
	got, _, err := b.Lifecycle.Token(ctxT(t), id)
	if err != nil || got != want {
		t.Fatalf("b's token: match=%v err=%v", got == want, err)
	}
	if st, _ := callAPI(t, a, got); st != 200 {
		t.Fatalf("the token b handed out is refused: %d", st)
	}
}
