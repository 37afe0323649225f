package tests

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// Deleting exactly once (issue 10): many concurrent DELETEs of each of
// many connections while the scheduler refreshes them, on the real Main
// (embedded NATS, JetStream store, vault) and the sandbox over HTTP. Of
// each connection's DELETEs exactly one answers 204 and the others 410;
// the sandbox saw every token revoked at most once and no access token is
// left live; each history ends tokens.invalidated, connection.deleted,
// with one tokens.invalidated and nothing after connection.deleted.
func TestConcurrentDeletesWhileRefreshing(t *testing.T) {
	in := start(t, nil)
	deleteStorm(t, in, []*instance{in}, 24, 6)
}

// The same with two instances on one NATS and vault, the DELETEs of each
// connection sent to both, and both schedulers refreshing: the vault's
// Take decides which instance revokes a token, the event store which
// DELETE answers 204.
func TestConcurrentDeletesOnTwoInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	a := start(t, func(c *app.Config) { c.SandboxAccessTTL = time.Hour; c.Instance = "a" })
	b := start(t, func(c *app.Config) {
		c.Instance = "b"
		c.NATSURL = a.NATSURL()
		c.NATSCreds = a.NATSCredsFile()
		c.VaultKeyFile = sharedKey(t, a)
		c.Provider, c.ProviderName = "custom", "sandbox"
		c.ClientID, c.ClientSecret = a.Sandbox.ClientID(), a.Sandbox.ClientSecret()
		c.AuthURL, c.TokenURL = a.BaseURL+"/sandbox/oauth/authorize", a.BaseURL+"/sandbox/oauth/token"
		c.RevocationURL = a.BaseURL + "/sandbox/oauth/revoke"
	})
	deleteStorm(t, a, []*instance{a, b}, 24, 6)
}

// deleteStorm authorises conns connections on in (whose sandbox is the
// provider; in is one of targets), moves the targets' clocks so that every
// token is due, waits for the
// first scheduled refresh, then sends deletes concurrent DELETEs of each
// connection, spread over the instances, and checks the outcome.
func deleteStorm(t *testing.T, in *instance, targets []*instance, conns, deletes int) {
	t.Helper()
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = create(t, in, nil)
		authorise(t, in, ids[i])
	}
	for _, tg := range targets {
		tg.advance(56 * time.Minute) // every hour token comes due: the schedulers refresh them all
	}
	eventually(t, 20*time.Second, "the first scheduled refresh", func() bool {
		return stats(t, in).TokenRequests.RefreshToken > 0
	})

	codes := make([][]int, conns)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, id := range ids {
		for k := range deletes {
			target := targets[k%len(targets)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodDelete, target.BaseURL+"/v1/connections/"+id, nil)
				req.Header.Set("Authorization", "Bearer "+target.APIToken())
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				codes[i] = append(codes[i], resp.StatusCode)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	for i, id := range ids {
		ok, gone := 0, 0
		for _, c := range codes[i] {
			switch c {
			case http.StatusNoContent:
				ok++
			case http.StatusGone:
				gone++
			}
		}
		if ok != 1 || gone != deletes-1 {
			t.Errorf("%s: answers %v, want one 204 and %d 410", id, codes[i], deletes-1)
		}
		h := history(t, in, id)
		n := len(h)
		invalidated := 0
		for _, typ := range h {
			if typ == string(domain.EventTokensInvalidated) {
				invalidated++
			}
		}
		if n < 2 || h[n-1] != string(domain.EventConnectionDeleted) || h[n-2] != string(domain.EventTokensInvalidated) || invalidated != 1 {
			t.Errorf("%s: history %v, want it to end tokens.invalidated, connection.deleted with one tokens.invalidated", id, h)
		}
		if c := load(t, in, id); !c.Deleted || c.TokensHeld {
			t.Errorf("%s: deleted %v, tokens held %v", id, c.Deleted, c.TokensHeld)
		}
	}
	requests, tokens, most := in.Sandbox.RevocationRequests()
	st := stats(t, in)
	t.Logf("%d connections x %d DELETEs on %d instance(s); refresh requests %d; revocation requests %d for %d tokens (at most %d per token); grants revoked %d; live access tokens %d",
		conns, deletes, len(targets), st.TokenRequests.RefreshToken, requests, tokens, most, st.Revocations, st.Held.AccessTokens)
	if most != 1 || requests != tokens {
		t.Errorf("a token was revoked more than once: %d requests for %d tokens, at most %d per token", requests, tokens, most)
	}
	if tokens < 2*conns || st.Held.AccessTokens != 0 || st.RefreshTokenReuse != 0 {
		t.Errorf("%d tokens revoked, %d access tokens still live, %d refresh token reuses; want at least %d tokens, none live, no reuse",
			tokens, st.Held.AccessTokens, st.RefreshTokenReuse, 2*conns)
	}
}
