package projections

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// activeWith builds a connection made active with tok (issued at the
// history's next event time) and applies it to a gate following a status.
func activeWith(t *testing.T, g *Gate, apply func(domain.Event), life time.Duration) (*history, domain.Tokens) {
	t.Helper()
	id := uuid.NewString()
	h := newHistory(id, 0)
	apply(h.exec(t, domain.Create{Provider: "pleo"}))
	apply(h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
	tok := tokens(id, 1, h.now)
	tok.Expiry = h.now.Add(time.Second + life) // the completion is stamped one second later
	if err := g.SetToken(id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()}))
	return h, tok
}

// The gate margin scales with the token's lifetime (L/10), capped by the
// configured margin: a 5 s token is handed out until 0.5 s before expiry,
// a 20 s token until 2 s before, an hour's token until 10 s before.
func TestGateMarginScalesWithLifetime(t *testing.T) {
	for _, tc := range []struct{ life, margin time.Duration }{
		{5 * time.Second, 500 * time.Millisecond},
		{20 * time.Second, 2 * time.Second},
		{15 * time.Minute, DefaultExpiryMargin},
		{24 * time.Hour, DefaultExpiryMargin},
	} {
		clk := newClock(t0)
		g := NewGate(GateOptions{Now: clk.now})
		_, apply := following(t, g)
		h, tok := activeWith(t, g, apply, tc.life)
		if got := (domain.TokenTiming{}).GateMargin(tc.life); got != tc.margin {
			t.Fatalf("GateMargin(%v) = %v, want %v", tc.life, got, tc.margin)
		}
		clk.set(tok.Expiry.Add(-tc.margin - time.Millisecond))
		mustOpen(t, g, h.id, tok.AccessToken)
		clk.set(tok.Expiry.Add(-tc.margin))
		mustGateErr(t, g, h.id, domain.StateActive, "", domain.DetailTokenExpired)
	}
}

// Wait hands out the fresh token as soon as an in-flight refresh lands,
// to every waiter, with one channel for all of them.
func TestGateWaitForRefresh(t *testing.T) {
	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now})
	_, apply := following(t, g)
	h, _ := activeWith(t, g, apply, time.Hour)
	apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, h.id, domain.StateRefreshing, "", domain.DetailRefreshing)

	const waiters = 20
	var wg sync.WaitGroup
	got := make(chan string, waiters)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := g.Await(ctx, h.id)
			if err != nil {
				t.Errorf("Await: %v", err)
			}
			got <- tok
		}()
	}
	// Every waiter is parked on the connection's one channel before the refresh lands.
	for i := 0; i < 10000 && g.waiting.Load() < waiters; i++ {
		time.Sleep(time.Millisecond)
	}
	if n := g.waiting.Load(); n != waiters {
		t.Fatalf("%d waiters, want %d", n, waiters)
	}
	g.mu.Lock()
	chans := len(g.changed)
	g.mu.Unlock()
	if chans != 1 {
		t.Fatalf("%d wake-up channels for one connection, want 1", chans)
	}
	tok2 := tokens(h.id, 2, h.now)
	if err := g.SetToken(h.id, domain.Fingerprint(tok2.AccessToken), tok2.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(h.exec(t, domain.SucceedRefresh{Tokens: tok2.Info(), Rotated: true}))
	wg.Wait()
	close(got)
	for tok := range got {
		if tok != tok2.AccessToken {
			t.Fatalf("a waiter got %q, want the fresh token", tok)
		}
	}
}

// Wait does not wait when a person must act, and gives up with the
// retry-later refusal when its context ends first.
func TestGateWaitBounds(t *testing.T) {
	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now})
	_, apply := following(t, g)
	h, _ := activeWith(t, g, apply, time.Hour)

	apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := g.Await(ctx, h.id)
	cancel()
	var ge *domain.GateError
	if !errors.As(err, &ge) || !ge.RetryLater() || ge.ActionBy() != domain.ActorNone {
		t.Fatalf("Await during a refresh that does not land = %v; want a retry-later refusal", err)
	}

	apply(h.exec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_client", HTTPStatus: 401}))
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	_, err = g.Await(ctx, h.id)
	if !errors.As(err, &ge) || ge.RetryLater() || ge.ActionBy() != domain.ActorOperator {
		t.Fatalf("Await after invalid_client = %v; want a refusal the operator must act on", err)
	}
	if time.Since(start) > 30*time.Second { // not a timing target: proof that it did not wait for the hour
		t.Fatalf("Await waited on a refusal a person must act on")
	}
	if g.waiting.Load() != 0 {
		t.Fatalf("%d waiters left", g.waiting.Load())
	}
}

// The gate's fast path is unchanged by waiting: an open Check allocates
// nothing and takes no lock while waiters wait on another connection.
func TestGateCheckFastWhileOthersWait(t *testing.T) {
	g := NewGate(GateOptions{})
	_, apply := following(t, g)
	open, tok := activeWith(t, g, apply, time.Hour)
	// tokens issued at t0 expire long before the coarse clock's now: move it.
	tok = tokens(open.id, 2, time.Now())
	_ = g.SetToken(open.id, domain.Fingerprint(tok.AccessToken), tok.AccessToken)
	apply(open.exec(t, domain.StartRefresh{LeaseUntil: time.Now().Add(time.Minute)}))
	apply(open.exec(t, domain.SucceedRefresh{Tokens: tok.Info(), Rotated: true}))
	busy, _ := activeWith(t, g, apply, time.Hour)
	apply(busy.exec(t, domain.StartRefresh{LeaseUntil: time.Now().Add(time.Minute)}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _, _ = g.Await(ctx, busy.id) }()
	for i := 0; i < 10000 && g.waiting.Load() < 1; i++ {
		time.Sleep(time.Millisecond)
	}
	g.mu.Lock() // a writer holding the lock does not stop readers
	n := testing.AllocsPerRun(1000, func() {
		if s, err := g.Check(open.id); err != nil || s == "" {
			panic("closed: " + err.Error())
		}
	})
	g.mu.Unlock()
	cancel()
	<-done
	if n != 0 {
		t.Fatalf("open Check allocates %v times while another connection is awaited", n)
	}
}
