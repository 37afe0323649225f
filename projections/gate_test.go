package projections

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
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

// following returns a status projection that g follows, as cmd/tokenline
// wires them, and a function applying events to it.
func following(t testing.TB, g *Gate) (*Status, func(e domain.Event)) {
	st := NewStatus()
	st.OnChange(g.Observe)
	return st, func(e domain.Event) {
		t.Helper()
		if _, err := st.Apply(e); err != nil {
			t.Fatalf("apply %s: %v", e.Type(), err)
		}
	}
}

func TestGateLifecycle(t *testing.T) {
	clk := newClock(t0)
	g := NewGate(GateOptions{Now: clk.now})
	_, apply := following(t, g)
	id := uuid.NewString()
	h := newHistory(id, 10)
	mustGateErr(t, g, id, "", "", domain.DetailUnknownConnection)

	apply(h.exec(t, domain.Create{Provider: "pleo"}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonNeverAuthorised, domain.DetailUnauthenticated)
	apply(h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
	mustGateErr(t, g, id, domain.StateReauthorising, domain.ReasonNeverAuthorised, domain.DetailReauthorising)

	tok1 := tokens(id, 1, t0)
	// The vault is written, and the token handed over, before the event.
	if err := g.SetToken(id, domain.Fingerprint(tok1.AccessToken), tok1.AccessToken); err != nil {
		t.Fatal(err)
	}
	mustGateErr(t, g, id, domain.StateReauthorising, domain.ReasonNeverAuthorised, domain.DetailReauthorising)
	apply(h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok1.Info()}))
	mustOpen(t, g, id, tok1.AccessToken)

	// Expiry, with the margin.
	clk.set(tok1.Expiry.Add(-DefaultExpiryMargin - time.Millisecond))
	mustOpen(t, g, id, tok1.AccessToken)
	clk.set(tok1.Expiry.Add(-DefaultExpiryMargin))
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenExpired)
	clk.set(t0)

	// Refreshing closes the gate; success with a token the gate does not hold
	// yet (another instance refreshed) is token_not_loaded, never the old one.
	apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
	tok2 := tokens(id, 2, t0)
	apply(h.exec(t, domain.SucceedRefresh{Tokens: tok2.Info(), Rotated: true}))
	mustGateErr(t, g, id, domain.StateActive, "", domain.DetailTokenNotLoaded)
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

	// A transient failure returns to active with the same token.
	apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	apply(h.exec(t, domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: t0.Add(time.Minute)}))
	mustOpen(t, g, id, tok2.AccessToken)
	// A non-terminal rejection keeps it open.
	apply(h.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"}))
	mustOpen(t, g, id, tok2.AccessToken)

	// CloseAfter shuts at once; an older or repeated event does not reopen
	// it; Reopen does; the next event re-derives.
	g.CloseAfter(id, domain.ReasonInvalidGrant, h.conn.Version)
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	apply(h.evs[len(h.evs)-1])
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	g.Reopen(id)
	mustOpen(t, g, id, tok2.AccessToken)
	g.CloseAfter(id, domain.ReasonInvalidGrant, h.conn.Version)
	apply(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
	apply(h.exec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant", HTTPStatus: 400}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)

	// The dead token is gone from memory.
	if v := g.view(id); v.st.loaded != "" || v.token != "" {
		t.Fatalf("token kept after terminal failure: %+v", v.st.loadedFP)
	}
	apply(h.exec(t, domain.InvalidateTokens{}))
	apply(h.exec(t, domain.Delete{}))
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonConnectionDeleted, domain.DetailUnauthenticated)
}

// randomHistory scripts a valid random history of one connection; it
// returns the number of token generations issued.
func randomHistory(t *testing.T, rng *rand.Rand, h *history) int {
	h.exec(t, domain.Create{Provider: "pleo"})
	gen := 0
	for i := 0; i < 3+rng.IntN(15); i++ {
		switch h.conn.State {
		case domain.StateUnauthenticated, domain.StateReauthorising:
			if h.conn.State == domain.StateUnauthenticated || rng.IntN(3) == 0 {
				h.exec(t, domain.StartAuthorisation{AttemptID: fmt.Sprint(i), ExpiresAt: t0.Add(time.Hour)})
			}
			gen++
			h.exec(t, domain.CompleteAuthorisation{AttemptID: h.conn.AttemptID, Tokens: tokens(h.id, gen, t0).Info()})
		case domain.StateActive:
			switch rng.IntN(4) {
			case 0:
				h.exec(t, domain.RejectAccess{HTTPStatus: 401, AccessTokenFP: h.conn.Tokens.AccessTokenFP})
			case 1:
				h.exec(t, domain.Update{Config: map[string]string{"i": fmt.Sprint(i)}})
			default:
				h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})
			}
		case domain.StateRefreshing:
			switch rng.IntN(3) {
			case 0:
				gen++
				h.exec(t, domain.SucceedRefresh{Tokens: tokens(h.id, gen, t0).Info()})
			case 1:
				h.exec(t, domain.FailRefresh{ErrorCode: "x", RetryAt: t0})
			default:
				h.exec(t, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_client"})
			}
		}
	}
	return gen
}

// This instance's events reach the status (and so the gate) through Apply
// in any order, ahead of the stream, some twice; the stream delivers every
// event in order, interleaved at random. The status, the changes it tells
// and the gate always end where the in-order fold ends.
func TestGateFollowsOutOfOrderOwnWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 200; round++ {
		id := uuid.NewString()
		h := newHistory(id, uint64(rng.IntN(100)))
		gen := randomHistory(t, rng, h)
		clk := newClock(t0)
		want := NewGate(GateOptions{Now: clk.now})
		got := NewGate(GateOptions{Now: clk.now})
		_, applyWant := following(t, want)
		st := NewStatus()
		st.OnChange(got.Observe)
		st.follow()
		st.announce()
		var last domain.Connection
		st.OnChange(func(_, after *domain.Connection) { last = after.Clone() })
		own := map[int]bool{}
		for i := range h.evs {
			own[i] = rng.IntN(2) == 0
		}
		next := 0 // the stream's next event
		for _, i := range rng.Perm(len(h.evs)) {
			for next < len(h.evs) && rng.IntN(3) == 0 {
				_, _ = st.applyStream(h.evs[next])
				next++
			}
			if own[i] {
				_, _ = st.Apply(h.evs[i])
				if rng.IntN(3) == 0 {
					_, _ = st.Apply(h.evs[i]) // again
				}
			}
		}
		for ; next < len(h.evs); next++ {
			_, _ = st.applyStream(h.evs[next])
		}
		for _, e := range h.evs {
			applyWant(e)
		}
		for _, g := range []*Gate{want, got} {
			for n := 1; n <= gen; n++ {
				tok := tokens(id, n, t0).AccessToken
				_ = g.SetToken(id, domain.Fingerprint(tok), tok)
			}
		}
		wt, werr := want.Check(id)
		gt, gerr := got.Check(id)
		if wt != gt || fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Fatalf("round %d: in order %q %v, out of order %q %v", round, wt, werr, gt, gerr)
		}
		if c, _ := st.Connection(id); !reflect.DeepEqual(c, h.conn) {
			t.Fatalf("round %d: status differs from the in-order fold", round)
		}
		// And the in-order gate agrees with the aggregate.
		open := h.conn.State == domain.StateActive
		if (wt != "") != open || (open && wt != tokens(id, gen, t0).AccessToken) {
			t.Fatalf("round %d: gate %q %v for aggregate in %s", round, wt, werr, h.conn.State)
		}
		// The last change told is the final state (without its Config,
		// which observers are not given: see OnChange).
		final := h.conn.Clone()
		final.Config = nil
		if !reflect.DeepEqual(last, final) {
			t.Fatalf("round %d: last change told differs from the in-order fold", round)
		}
	}
}

// A followed status tells its observers nothing while the runner catches
// up, then once of every connection (before == nil), then of every change.
// Own writes are told at once, even during the catch-up.
func TestStatusSeedsObserversAfterCatchUp(t *testing.T) {
	st := NewStatus()
	g := NewGate(GateOptions{Now: testClock})
	st.OnChange(g.Observe)
	type call struct {
		before bool
		id     string
		v      uint64
	}
	var calls []call
	st.OnChange(func(before, after *domain.Connection) {
		calls = append(calls, call{before != nil, after.ID, after.Version})
	})
	st.follow()
	a, b := uuid.NewString(), uuid.NewString()
	ha, hb := newHistory(a, 0), newHistory(b, 1)
	ha.exec(t, domain.Create{Provider: "pleo"})
	ha.exec(t, domain.StartAuthorisation{AttemptID: "x", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(a, 1, t0)
	ha.exec(t, domain.CompleteAuthorisation{AttemptID: "x", Tokens: tok.Info()})
	hb.exec(t, domain.Create{Provider: "pleo"})
	for _, e := range append(slices.Clone(ha.evs), hb.evs...) {
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != 0 {
		t.Fatalf("observers told during the catch-up: %v", calls)
	}
	mustGateErr(t, g, a, "", "", domain.DetailUnknownConnection)
	// An own write during the catch-up is told at once.
	own := ha.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"})
	if changed, err := st.Apply(own); err != nil || !changed {
		t.Fatalf("own write: %v %v", changed, err)
	}
	if len(calls) != 1 || calls[0] != (call{true, a, own.Seq}) {
		t.Fatalf("own write during the catch-up: %v", calls)
	}
	calls = nil
	st.announce()
	slices.SortFunc(calls, func(x, y call) int { return strings.Compare(x.id, y.id) })
	want := []call{{false, a, own.Seq}, {false, b, hb.seq}}
	slices.SortFunc(want, func(x, y call) int { return strings.Compare(x.id, y.id) })
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("seeding calls %v, want %v", calls, want)
	}
	_ = g.SetToken(a, tok.Info().AccessTokenFP, tok.AccessToken)
	mustOpen(t, g, a, tok.AccessToken)
	mustGateErr(t, g, b, domain.StateUnauthenticated, domain.ReasonNeverAuthorised, domain.DetailUnauthenticated)
	// Live: the stream confirming the own write changes nothing; a new
	// event is told.
	calls = nil
	if changed, _ := st.applyStream(own); changed || len(calls) != 0 {
		t.Fatalf("confirming an own write: changed %v, calls %v", changed, calls)
	}
	e := hb.exec(t, domain.Delete{})
	if _, err := st.applyStream(e); err != nil || len(calls) != 1 || calls[0] != (call{true, b, e.Seq}) {
		t.Fatalf("live event: %v %v", err, calls)
	}
	mustGateErr(t, g, b, domain.StateUnauthenticated, domain.ReasonConnectionDeleted, domain.DetailUnauthenticated)
}

func TestGateCheckDoesNotAllocate(t *testing.T) {
	g := NewGate(GateOptions{})
	_, apply := following(t, g)
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(id, 1, time.Now())
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})
	for _, e := range h.evs {
		apply(e)
	}
	_ = g.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	if n := testing.AllocsPerRun(1000, func() {
		if s, err := g.Check(id); err != nil || s == "" {
			panic("closed")
		}
	}); n != 0 {
		t.Fatalf("open Check allocates %v times", n)
	}
	g.CloseAfter(id, domain.ReasonInvalidGrant, h.conn.Version)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := g.Check(id); err == nil {
			panic("open")
		}
	}); n != 0 {
		t.Fatalf("refusing Check allocates %v times", n)
	}
}

// A CloseAfter holds against everything that is not newer than the version
// it was made against: late events, the start-up seeding, an instance still
// starting.
func TestGateCloseHoldsUntilANewerEvent(t *testing.T) {
	clk := newClock(t0)
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(id, 1, t0)
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})

	// Closed before the gate heard of the connection (the instance is
	// starting), by a decision taken against the aggregate at its version.
	g := NewGate(GateOptions{Now: clk.now})
	st := NewStatus()
	st.OnChange(g.Observe)
	st.follow()
	_ = g.SetToken(id, tok.Info().AccessTokenFP, tok.AccessToken)
	g.CloseAfter(id, domain.ReasonAccessTokenRejected, h.conn.Version)
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	for _, e := range h.evs {
		_, _ = st.applyStream(e)
	}
	st.announce()
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonAccessTokenRejected, domain.DetailUnauthenticated)
	// The next event re-derives the entry (a 403: open again).
	_, _ = st.applyStream(h.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"}))
	mustOpen(t, g, id, tok.AccessToken)

	// Closed with no version (0): the gate holds it against every version
	// it has seen. A late event of the connection does not reopen it, nor
	// does another connection's, nor a second seeding; the terminal event
	// re-derives.
	g.CloseAfter(id, domain.ReasonInvalidGrant, 0)
	_, _ = st.Apply(h.evs[1])
	other := newHistory(uuid.NewString(), h.seq+1)
	_, _ = st.applyStream(other.exec(t, domain.Create{Provider: "pleo"}))
	st.announce()
	mustGateErr(t, g, id, domain.StateUnauthenticated, domain.ReasonInvalidGrant, domain.DetailUnauthenticated)
	_, _ = st.applyStream(h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)}))
	mustGateErr(t, g, id, domain.StateRefreshing, "", domain.DetailRefreshing)
}
