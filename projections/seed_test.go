package projections

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// The start-up seeding: an observer registered with OnChangeSeeded gets
// every connection in one seed call, one registered with OnChange one call
// per connection, and a gate seeded in bulk (Gate.Seed) answers every
// Check as a gate seeded by Observe does. After the seeding both kinds of
// observer are told of each change by their per-change function.
func TestSeedAtOnceAsObserve(t *testing.T) {
	clk := newClock(t0.Add(time.Minute))
	byObserve := NewGate(GateOptions{Now: clk.now})
	bySeed := NewGate(GateOptions{Now: clk.now})
	st := NewStatus()
	st.follow() // as a Runner does: stream records do not notify until announce
	var calls, seeds, seeded, changes int
	st.OnChange(byObserve.Observe)
	st.OnChange(func(before, after *domain.Connection) {
		if before == nil {
			calls++
		}
	})
	st.OnChangeSeeded(func(_, after *domain.Connection) { changes++; bySeed.Observe(nil, after) }, func(conns []*domain.Connection) {
		seeds++
		seeded += len(conns)
		bySeed.Seed(conns)
	})

	var ids []string
	var last *history
	tok := map[string]domain.Tokens{}
	for i := range 40 {
		id := uuid.NewString()
		ids = append(ids, id)
		h := newHistory(id, uint64(i))
		evs := []domain.Event{h.exec(t, domain.Create{Provider: "pleo"})}
		if i%5 != 0 {
			evs = append(evs, h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
		}
		if i%5 > 1 {
			tk := tokens(id, 1, t0)
			tok[id] = tk
			evs = append(evs, h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tk.Info()}))
		}
		if i%5 == 3 {
			evs = append(evs, h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Hour)}))
		}
		if i%10 == 4 {
			evs = append(evs, h.exec(t, domain.Delete{}))
		}
		for _, e := range evs {
			if _, err := st.applyStream(e); err != nil {
				t.Fatalf("%s: %v", e.Type(), err)
			}
		}
		last = h
	}
	for id, tk := range tok { // handed over before the start-up seeding
		for _, g := range []*Gate{byObserve, bySeed} {
			if err := g.SetToken(id, domain.Fingerprint(tk.AccessToken), tk.AccessToken); err != nil {
				t.Fatal(err)
			}
		}
	}
	if calls != 0 || seeds != 0 {
		t.Fatalf("observers told before announce: %d calls, %d seeds", calls, seeds)
	}
	st.announce()
	if calls != len(ids) || seeds != 1 || seeded != len(ids) || changes != 0 {
		t.Fatalf("announce: %d calls (want %d), %d seeds of %d connections (want 1 of %d), %d per-change calls (want 0)",
			calls, len(ids), seeds, seeded, len(ids), changes)
	}
	same := func() {
		t.Helper()
		open := 0
		for _, id := range append(ids, "unknown") {
			a, errA := byObserve.Check(id)
			b, errB := bySeed.Check(id)
			if a != b || fmt.Sprint(errA) != fmt.Sprint(errB) || !reflect.DeepEqual(gateErr(errA), gateErr(errB)) {
				t.Fatalf("Check(%s): Observe %q, %v; Seed %q, %v", id, a, errA, b, errB)
			}
			if a != "" {
				open++
			}
		}
		if open == 0 {
			t.Fatal("no connection is open: the mix does not test tokens")
		}
	}
	same()

	e := last.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(2 * time.Hour)})
	if _, err := st.applyStream(e); err != nil {
		t.Fatal(err)
	}
	if changes != 1 || calls != len(ids) {
		t.Fatalf("after the seeding: %d per-change calls (want 1), %d seeding calls (want %d)", changes, calls, len(ids))
	}
	same()
}

func gateErr(err error) *domain.GateError {
	var ge *domain.GateError
	if errors.As(err, &ge) {
		return ge
	}
	return nil
}
