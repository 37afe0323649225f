package tests

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Deleting exactly once (issue 10): many concurrent DELETEs of each of
// many connections while the scheduler refreshes them, on the real Main
// (embedded NATS, JetStream store, vault) and the sandbox over HTTP. Of
// each connection's DELETEs exactly one answers 204 and the others 410;
// the sandbox saw every token revoked at most once (and every grant
// revoked); each history ends tokens.invalidated, connection.deleted, with
// one tokens.invalidated and nothing after connection.deleted.
func TestConcurrentDeletesWhileRefreshing(t *testing.T) {
	in := start(t, nil)
	const conns, deletes = 24, 6
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = create(t, in, nil)
		authorise(t, in, ids[i])
	}
	in.advance(56 * time.Minute) // every hour token comes due: the scheduler refreshes them all
	eventually(t, 20*time.Second, "the first scheduled refresh", func() bool {
		return stats(t, in).TokenRequests.RefreshToken > 0
	})

	codes := make([][]int, conns)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, id := range ids {
		for range deletes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodDelete, in.BaseURL+"/v1/connections/"+id, nil)
				req.Header.Set("Authorization", "Bearer "+in.APIToken())
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
	t.Logf("%d connections x %d DELETEs; refresh requests %d; revocation requests %d for %d tokens (at most %d per token); grants revoked %d",
		conns, deletes, st.TokenRequests.RefreshToken, requests, tokens, most, st.Revocations)
	if most != 1 || requests != tokens {
		t.Errorf("a token was revoked more than once: %d requests for %d tokens, at most %d per token", requests, tokens, most)
	}
	if tokens < 2*conns || st.Held.AccessTokens != 0 || st.RefreshTokenReuse != 0 {
		t.Errorf("%d tokens revoked, %d access tokens still live, %d refresh token reuses; want at least %d tokens, none live, no reuse",
			tokens, st.Held.AccessTokens, st.RefreshTokenReuse, 2*conns)
	}
}
