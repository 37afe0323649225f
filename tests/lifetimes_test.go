package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// tokenPolls is what polling /token on healthy connections saw.
type tokenPolls struct {
	calls, tokens, refused atomic.Int64
	mu                     sync.Mutex
	answers                map[string]int // status + error word of the refusals
	latencies              []time.Duration
}

func (p *tokenPolls) record(status int, word string, took time.Duration) {
	p.calls.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latencies = append(p.latencies, took)
	if status == http.StatusOK {
		p.tokens.Add(1)
		return
	}
	p.refused.Add(1)
	if p.answers == nil {
		p.answers = map[string]int{}
	}
	p.answers[fmt.Sprintf("%d %s", status, word)]++
}

func (p *tokenPolls) quantile(q float64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.latencies) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), p.latencies...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[min(len(l)-1, int(q*float64(len(l))))]
}

// pollToken asks GET /v1/connections/{id}/token once (query: "" or
// "?wait=...") and records the answer.
func pollToken(t testing.TB, in *instance, id, query string, p *tokenPolls) {
	req, _ := http.NewRequest(http.MethodGet, in.BaseURL+apitypes.Path(apitypes.RouteToken, id)+query, nil)
	req.Header.Set("Authorization", "Bearer "+in.APIToken())
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("token: %v", err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e apitypes.ErrorBody
	_ = json.Unmarshal(b, &e)
	p.record(resp.StatusCode, e.Error, time.Since(start))
}

// refreshesOf counts the successful refreshes of a connection.
func refreshesOf(t testing.TB, in *instance, id string) int {
	n := 0
	h, err := in.Store.History(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if _, ok := e.Payload.(domain.RefreshSucceeded); ok {
			n++
		}
	}
	return n
}

// A healthy connection with 5 s access tokens is never refused a token
// across several refresh cycles (the gate margin, refresh lead and refresh
// latency follow one rule, and /token waits for a refresh in flight). With
// the old rule (a fixed 10 s margin) a 5 s token was never handed out.
func TestHealthyShortLivedConnectionNeverRefused(t *testing.T) {
	in := start(t, func(c *app.Config) { c.SandboxAccessTTL = 5 * time.Second })
	id := create(t, in, nil)
	authorise(t, in, id)
	var p tokenPolls
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 10000 && time.Now().Before(deadline) && refreshesOf(t, in, id) < 3; i++ {
		for range 10 {
			pollToken(t, in, id, "", &p)
			time.Sleep(10 * time.Millisecond)
		}
	}
	if n := refreshesOf(t, in, id); n < 3 {
		t.Fatalf("%d refreshes in 30 s of 5 s tokens", n)
	}
	t.Logf("%d /token calls over 3 cycles of 5 s tokens: %d refused %v; p50 %v, max %v", p.calls.Load(), p.refused.Load(), p.answers, p.quantile(0.5), p.quantile(1))
	if p.refused.Load() != 0 {
		t.Fatalf("a healthy connection was refused %d of %d token requests: %v", p.refused.Load(), p.calls.Load(), p.answers)
	}
}

// TestTokenLifetimesFigures is the benchmark-style run of issue 10: healthy
// connections with 5 s, 20 s and 15 min access tokens over many refresh
// cycles, /token polled on each, against the real sandbox and embedded
// NATS. It prints the fraction of calls that did not return a token, for
// tokenline's default (the request waits up to 2 s for a refresh in
// flight) and, interleaved on the same connections, for ?wait=0s (answer
// at once: the baseline without waiting). Target: 0 for the default. The
// 15 min run moves the sandbox's and tokenline's clock (60 × real time).
//
//	TOKENLINE_LIFETIME_FIGURES=1 go test -run TestTokenLifetimesFigures -v ./tests/
func TestTokenLifetimesFigures(t *testing.T) {
	if os.Getenv("TOKENLINE_LIFETIME_FIGURES") == "" {
		t.Skip("set TOKENLINE_LIFETIME_FIGURES=1 to run (about 3 minutes)")
	}
	for _, c := range []struct {
		life   time.Duration
		cycles int
		speed  int // simulated seconds per real second
		conns  int
	}{
		{5 * time.Second, 12, 1, 10},
		{20 * time.Second, 5, 1, 10},
		{15 * time.Minute, 6, 60, 10},
	} {
		t.Run(c.life.String(), func(t *testing.T) {
			in := start(t, func(cfg *app.Config) { cfg.SandboxAccessTTL = c.life })
			ids := make([]string, c.conns)
			for i := range ids {
				ids[i] = create(t, in, nil)
				authorise(t, in, ids[i])
			}
			var def, now tokenPolls
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			if c.speed > 1 { // move the clock: speed-1 simulated seconds more per real second, in 10 ms steps
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(10 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
							in.advance(time.Duration(c.speed-1) * 10 * time.Millisecond)
						}
					}
				}()
			}
			for _, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil && i < 1_000_000; i++ {
						if i%2 == 0 {
							pollToken(t, in, id, "", &def)
						} else {
							pollToken(t, in, id, "?wait=0s", &now)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			// Until every connection went through the cycles (bounded).
			cycle := c.life - (domain.TokenTiming{}).Lead(c.life)
			limit := time.Now().Add(time.Duration(c.cycles+2) * cycle / time.Duration(c.speed))
			for time.Now().Before(limit) {
				done := true
				for _, id := range ids {
					if refreshesOf(t, in, id) < c.cycles {
						done = false
					}
				}
				if done {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			cancel()
			wg.Wait()
			refreshes := 0
			for _, id := range ids {
				refreshes += refreshesOf(t, in, id)
			}
			frac := func(p *tokenPolls) float64 { return float64(p.refused.Load()) / float64(max(p.calls.Load(), 1)) }
			fmt.Printf("lifetime %-6v %2d connections %4d refreshes | default (wait ≤2s): %6d calls, %d without a token (%.4f) p50 %v p99 %v max %v %v | wait=0s baseline: %6d calls, %d without a token (%.4f) %v\n",
				c.life, c.conns, refreshes, def.calls.Load(), def.refused.Load(), frac(&def), def.quantile(0.5).Round(time.Microsecond),
				def.quantile(0.99).Round(time.Microsecond), def.quantile(1).Round(time.Microsecond), def.answers,
				now.calls.Load(), now.refused.Load(), frac(&now), now.answers)
			if def.refused.Load() != 0 {
				t.Errorf("healthy connections were refused %d of %d token requests", def.refused.Load(), def.calls.Load())
			}
		})
	}
}
