package projections

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// manualClock is a clock tests move by hand.
type manualClock struct{ ns atomic.Int64 }

func (c *manualClock) now() time.Time   { return time.Unix(0, c.ns.Load()) }
func (c *manualClock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func newClock(t time.Time) *manualClock { c := &manualClock{}; c.set(t); return c }

// history builds the stored events of one connection.
type history struct {
	id   string
	seq  uint64
	now  time.Time
	evs  []domain.Event
	conn domain.Connection
}

func newHistory(id string, seq uint64) *history { return &history{id: id, seq: seq, now: t0} }

func (h *history) add(t testing.TB, p domain.Payload) domain.Event {
	t.Helper()
	h.seq += 3 // other connections' events in between
	h.now = h.now.Add(time.Second)
	e := domain.Event{ID: uuid.NewString(), ConnectionID: h.id, Time: h.now, Actor: "test", Seq: h.seq, Payload: p}
	if err := h.conn.Apply(e); err != nil {
		t.Fatalf("history: %T: %v", p, err)
	}
	h.evs = append(h.evs, e)
	return e
}

func (h *history) exec(t testing.TB, cmd domain.Command) domain.Event {
	t.Helper()
	p, err := domain.Decide(&h.conn, cmd)
	if err != nil {
		t.Fatalf("decide %T: %v", cmd, err)
	}
	return h.add(t, p)
}

func mustGateErr(t *testing.T, g *Gate, id string, state domain.State, reason domain.Reason, detail string) {
	t.Helper()
	tok, err := g.Check(id)
	var ge *domain.GateError
	if !errors.As(err, &ge) || !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("Check(%s) = %q, %v; want a gate error %s", id, tok, err, detail)
	}
	if tok != "" || ge.ConnectionID != id || ge.State != state || ge.Reason != reason || ge.Detail != detail {
		t.Fatalf("Check(%s) = %q, %+v; want state=%s reason=%s detail=%s", id, tok, *ge, state, reason, detail)
	}
}

func mustOpen(t *testing.T, g *Gate, id, want string) {
	t.Helper()
	tok, err := g.Check(id)
	if err != nil || tok != want {
		t.Fatalf("Check(%s) = %q, %v; want %q", id, tok, err, want)
	}
}

func TestGateLifecycle(t *testing.T) {
	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now})
	id := uuid.NewString()
	h := newHistory(id, 10)
	mustGateErr(t, g, id, "", "", domain.DetailUnknownConnection)

	g.Apply(h.exec(t, domain.Create{Provider: "pleo"}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonNeverAuthorised, domain.DetailUnauthenticated)
	g.Apply(h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
	mustGateErr(t, g, id, domain.StateReauthorising, domain.ReasonNeverAuthorised, domain.DetailReauthorising)

	tok1 := tokens(id, 1, t0)
	// The vault is written, and the token handed over, before the event.
	if err := g.SetToken(id, domain.Fingerprint(tok1.AccessToken), tok1.AccessToken); err != nil {
		t.Fatal(err)
	}
	mustGateErr(t, g, id, domain.StateReauthorising, domain.ReasonNeverAuthorised, domain.DetailReauthorising)
	g.Apply(h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok1.Info()}))
	mustOpen(t, g, id, tok1.AccessToken)

	// Expiry, with the margin.
	clk.set(tok1.Expiry.Add(-DefaultExpiryMargin - time.Millisecond))
	mustOpen(t, g, id, tok1.AccessToken)
	clk.set(tok1.Expiry.Add(-DefaultExpiryMargin))
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenExpired)
	clk.set(t0)

	// Refreshing closes the gate; success with a token the gate does not hold
	// yet (another instance refreshed) is token_not_loaded, never the old one.
	g.Apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
	tok2 := tokens(id, 2, t0)
	g.Apply(h.exec(t, domain.SucceedRefresh{Tokens: tok2.Info(), Rotated: true}))
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenNotLoaded)
	if got := g.Missing(); !reflect.DeepEqual(got, []string{id}) {
		t.Fatalf("Missing = %v", got)
	}
	// Handing over the stale token does not open it.
	if err := g.SetToken(id, domain.Fingerprint(tok1.AccessToken), tok1.AccessToken); err != nil {
		t.Fatal(err)
	}
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenNotLoaded)
	if err := g.SetToken(id, domain.Fingerprint(tok1.AccessToken), tok2.AccessToken); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("mismatched fingerprint accepted: %v", err)
	}
	if err := g.SetToken(id, domain.Fingerprint(tok2.AccessToken), tok2.AccessToken); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, g, id, tok2.AccessToken)
	if got := g.Missing(); len(got) != 0 {
		t.Fatalf("Missing = %v", got)
	}

	// A transient failure returns to active with the same token.
	g.Apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	g.Apply(h.exec(t, domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: t0.Add(time.Minute)}))
	mustOpen(t, g, id, tok2.AccessToken)
	// A non-terminal rejection keeps it open.
	g.Apply(h.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"}))
	mustOpen(t, g, id, tok2.AccessToken)

	// Close shuts at once; an older or repeated event does not reopen it;
	// Reopen does; the next event re-derives.
	g.Close(id, domain.ReasonInvalidGrant)
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	g.Apply(h.evs[len(h.evs)-1])
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	g.Reopen(id)
	mustOpen(t, g, id, tok2.AccessToken)
	g.Close(id, domain.ReasonInvalidGrant)
	g.Apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
	g.Apply(h.exec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant", HTTPStatus: 400}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)

	// The dead token is gone from memory.
	if v := g.view(id); v.st.loaded != "" || v.token != "" {
		t.Fatalf("token kept after terminal failure: %+v", v.st.loadedFP)
	}
	g.Apply(h.exec(t, domain.InvalidateTokens{}))
	g.Apply(h.exec(t, domain.Delete{}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonConnectionDeleted, domain.DetailUnauthenticated)
}

// Applying a connection's events in any order, any number of times, gives
// the gate the same answer as applying them once in order.
func TestGateOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 200; round++ {
		id := uuid.NewString()
		h := newHistory(id, uint64(rng.IntN(100)))
		h.exec(t, domain.Create{Provider: "pleo"})
		gen := 0
		for i := 0; i < 3+rng.IntN(15); i++ {
			switch h.conn.State {
			case domain.StateUnauthenticated, domain.StateReauthorising:
				if h.conn.State == domain.StateUnauthenticated || rng.IntN(3) == 0 {
					h.exec(t, domain.StartAuthorisation{AttemptID: fmt.Sprint(i), ExpiresAt: t0.Add(time.Hour)})
				}
				gen++
				h.exec(t, domain.CompleteAuthorisation{AttemptID: h.conn.AttemptID, Tokens: tokens(id, gen, t0).Info()})
			case domain.StateActive:
				switch rng.IntN(3) {
				case 0:
					h.exec(t, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.conn.Tokens.AccessTokenFP})
				default:
					h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})
				}
			case domain.StateRefreshing:
				switch rng.IntN(3) {
				case 0:
					gen++
					h.exec(t, domain.SucceedRefresh{Tokens: tokens(id, gen, t0).Info()})
				case 1:
					h.exec(t, domain.FailRefresh{ErrorCode: "x", RetryAt: t0})
				default:
					h.exec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_client"})
				}
			}
		}
		clk := newClock(t0)
		want := NewGate(GateOptions{Now: clk.now})
		got := NewGate(GateOptions{Now: clk.now})
		for _, g := range []*Gate{want, got} {
			for n := 1; n <= gen; n++ {
				tok := tokens(id, n, t0).AccessToken
				_ = g.SetToken(id, domain.Fingerprint(tok), tok)
			}
		}
		for _, e := range h.evs {
			want.Apply(e)
		}
		perm := rng.Perm(len(h.evs))
		for _, i := range perm {
			got.Apply(h.evs[i])
			if rng.IntN(3) == 0 {
				got.Apply(h.evs[rng.IntN(len(h.evs))])
			}
		}
		// The last generation's token is the one set last in both.
		for n := 1; n <= gen; n++ {
			tok := tokens(id, n, t0).AccessToken
			_ = want.SetToken(id, domain.Fingerprint(tok), tok)
			_ = got.SetToken(id, domain.Fingerprint(tok), tok)
		}
		wt, werr := want.Check(id)
		gt, gerr := got.Check(id)
		if wt != gt || fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Fatalf("round %d: in order %q %v, shuffled %q %v", round, wt, werr, gt, gerr)
		}
		// And the in-order gate agrees with the aggregate.
		open := h.conn.State == domain.StateActive
		if (wt != "") != open || (open && wt != tokens(id, gen, t0).AccessToken) {
			t.Fatalf("round %d: gate %q %v for aggregate in %s", round, wt, werr, h.conn.State)
		}
	}
}

func TestGateTokenNeededAndSeed(t *testing.T) {
	var needed []string
	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now, TokenNeeded: func(id, fp string) { needed = append(needed, id+" "+fp) }})
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(id, 1, t0)
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})

	st := NewStatus()
	for _, e := range h.evs {
		if _, err := st.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	g.Seed(st, false)
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenNotLoaded)
	want := []string{id + " " + tok.Info().AccessTokenFP}
	if !reflect.DeepEqual(needed, want) {
		t.Fatalf("TokenNeeded calls %v, want %v", needed, want)
	}
	g.Seed(st, false) // nothing new: no second call
	if len(needed) != 1 {
		t.Fatalf("TokenNeeded called again: %v", needed)
	}
	_ = g.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	mustOpen(t, g, id, tok.AccessToken)
	// A newer event applied through the hook survives a seed from an older status.
	g.Apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	g.Seed(st, false)
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
	// reset: the status wins.
	g.Seed(st, true)
	mustOpen(t, g, id, tok.AccessToken)
}

func TestGateCheckDoesNotAllocate(t *testing.T) {
	g := NewGate(GateOptions{})
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(id, 1, time.Now())
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})
	for _, e := range h.evs {
		g.Apply(e)
	}
	_ = g.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	if n := testing.AllocsPerRun(1000, func() {
		if s, err := g.Check(id); err != nil || s == "" {
			panic("closed")
		}
	}); n != 0 {
		t.Fatalf("open Check allocates %v times", n)
	}
	g.Close(id, domain.ReasonInvalidGrant)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := g.Check(id); err == nil {
			panic("open")
		}
	}); n != 0 {
		t.Fatalf("refusing Check allocates %v times", n)
	}
}

// The gate's payload-determined destinations agree with the transition
// table from every state, and reasonOf with the aggregate.
func TestFoldMatchesDomain(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, d := range domain.Transitions {
		for _, src := range d.Src {
			var p domain.Payload
			for try := 0; try < 50 && p == nil; try++ {
				for _, cand := range samplePayloads(rng) {
					if domain.TransitionName(cand) == d.Name {
						p = cand
					}
				}
			}
			if p == nil {
				t.Fatalf("no sample payload for %s", d.Name)
			}
			dst, moves := destinationOf(p)
			if !moves {
				dst = domain.State(src)
			}
			if dst != domain.State(d.Dst) {
				t.Errorf("%s from %s: gate says %s, table %s", d.Name, src, dst, d.Dst)
			}
		}
	}
	// reasonOf against Apply, over random valid histories.
	for round := 0; round < 100; round++ {
		id := uuid.NewString()
		h := newHistory(id, 0)
		var l liteConn
		if _, err := l.apply(h.exec(t, domain.Create{Provider: "p"})); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			before := h.conn.Reason
			var cmd domain.Command
			switch h.conn.State {
			case domain.StateUnauthenticated:
				cmd = domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}
			case domain.StateReauthorising:
				if rng.IntN(2) == 0 {
					cmd = domain.FailAuthorisation{AttemptID: "a", Expired: rng.IntN(2) == 0}
				} else {
					cmd = domain.CompleteAuthorisation{AttemptID: "a", Tokens: tokens(id, i, t0).Info()}
				}
			case domain.StateActive:
				cmd = []domain.Command{domain.StartRefresh{LeaseUntil: t0.Add(time.Minute), Trigger: domain.TriggerAccessRejected}, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.conn.Tokens.AccessTokenFP}}[rng.IntN(2)]
			case domain.StateRefreshing:
				cmd = []domain.Command{domain.SucceedRefresh{Tokens: tokens(id, i, t0).Info()}, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_scope"}, domain.FailRefresh{ErrorCode: "x", MaxAttempts: 2}}[rng.IntN(3)]
			}
			e := h.exec(t, cmd)
			r, sets := reasonOf(e.Payload)
			if !sets {
				r = before
			}
			if r != h.conn.Reason {
				t.Fatalf("%s: reasonOf gives %q, Apply %q", e.Type(), r, h.conn.Reason)
			}
			if _, err := l.apply(e); err != nil {
				t.Fatal(err)
			}
			if l.State != h.conn.State || l.Reason != h.conn.Reason {
				t.Fatalf("%s: timeline fold %s/%s, Apply %s/%s", e.Type(), l.State, l.Reason, h.conn.State, h.conn.Reason)
			}
		}
	}
}

// A Close holds against everything that is not newer than what the gate had
// seen when it was called: late events, a seed, an instance still starting.
func TestGateCloseHoldsUntilANewerEvent(t *testing.T) {
	clk := newClock(t0)
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(id, 1, t0)
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})
	st := NewStatus()
	for _, e := range h.evs {
		st.Apply(e)
	}

	// Closed before the gate was seeded (the instance is starting), by a
	// decision taken against the aggregate at its version.
	g := NewGate(GateOptions{Now: clk.now})
	_ = g.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	g.CloseAfter(id, domain.ReasonAccessTokenRejected, h.conn.Version)
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	g.Seed(st, false)
	for _, e := range h.evs {
		g.Apply(e)
	}
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	// The next event re-derives the entry (a 403: open again).
	g.Apply(h.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"}))
	mustOpen(t, g, id, tok.AccessToken)

	// Closed after: a late event of another connection does not matter, a
	// seed does not reopen, the terminal event re-derives.
	g2 := NewGate(GateOptions{Now: clk.now})
	g2.Seed(st, false)
	_ = g2.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	mustOpen(t, g2, id, tok.AccessToken)
	g2.Close(id, domain.ReasonInvalidGrant)
	g2.Seed(st, false)
	g2.Apply(h.evs[1])
	mustGateErr(t, g2, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	g2.Apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g2, id, domain.StateRefreshing, "", domain.DetailRefreshing)
}
