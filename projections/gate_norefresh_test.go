package projections

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// A token whose grant has no refresh token is never renewed: the gate
// hands it out until min(its gate margin, 1 s) before its expiry, and then
// refuses it as a connection the user must reconnect (refresh_not_granted,
// not a refusal that waiting cures): Wait answers at once, with no wait
// for a refresh that will never come. A token without expiry is handed out
// for ever.
func TestGateWithoutRefreshToken(t *testing.T) {
	for _, tc := range []struct{ life, margin time.Duration }{
		{5 * time.Second, 500 * time.Millisecond},
		{20 * time.Second, time.Second},
		{15 * time.Minute, time.Second},
	} {
		clk := newClock(t0)
		g := NewGate(GateOptions{Now: clk.now})
		_, apply := following(t, g)
		h, tok := activeWithout(t, g, apply, tc.life)
		if got := (domain.TokenTiming{}).GateMarginWithoutRefresh(tc.life); got != tc.margin {
			t.Fatalf("GateMarginWithoutRefresh(%v) = %v, want %v", tc.life, got, tc.margin)
		}
		// Inside the margin a renewable token would be refused (refresh due).
		clk.set(tok.Expiry.Add(-tc.margin - time.Millisecond))
		mustOpen(t, g, h.id, tok.AccessToken)
		clk.set(tok.Expiry.Add(-tc.margin))
		mustGateErr(t, g, h.id, domain.StateUnauthenticated, domain.ReasonRefreshNotGranted, domain.DetailUnauthenticated)
		_, err := g.Check(h.id)
		ge := err.(*domain.GateError)
		if ge.RetryLater() || ge.ActionBy() != domain.ActorUser {
			t.Fatalf("life %v: RetryLater %v, ActionBy %q; want a refusal the user must act on", tc.life, ge.RetryLater(), ge.ActionBy())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // Wait must not wait
		if _, err := g.Await(ctx, h.id); err != ge {
			t.Fatalf("Await: %v", err)
		}
		cancel()
	}

	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now})
	_, apply := following(t, g)
	h, tok := activeWithout(t, g, apply, 0)
	clk.set(t0.Add(100 * 365 * 24 * time.Hour))
	mustOpen(t, g, h.id, tok.AccessToken)
}

// activeWithout is activeWith for a grant without a refresh token; life 0:
// an access token without expiry.
func activeWithout(t *testing.T, g *Gate, apply func(domain.Event), life time.Duration) (*history, domain.Tokens) {
	t.Helper()
	h := newHistory(uuid.NewString(), 0)
	apply(h.exec(t, domain.Create{Provider: "pleo"}))
	apply(h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
	tok := tokens(h.id, 1, h.now)
	tok.RefreshToken, tok.Expiry = "", time.Time{}
	if life > 0 {
		tok.Expiry = h.now.Add(time.Second + life) // the completion is stamped one second later
	}
	if err := g.SetToken(h.id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()}))
	return h, tok
}
