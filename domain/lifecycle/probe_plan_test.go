package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

type everyProber time.Duration

func (p everyProber) Probe(context.Context, domain.Tokens) (domain.ProbeAnswer, error) {
	return domain.ProbeAnswer{}, nil
}
func (p everyProber) Every() time.Duration { return time.Duration(p) }

// The prober's plan (take, probeDone, observeProbe) as the old full scan
// made it: a connection of a provider with a prober that is active with
// tokens is first probed at firstProbe from the tick that first sees it,
// then every interval (±10 %) after its probe ended; one that is not
// active, holds no tokens, is running or is not owned is not probed; a
// connection that stops being active is planned afresh when active again,
// and one whose probe ended while it was not active is probed at the time
// that probe planned once active again. Deleted connections leave, and
// connections of a provider without a prober are not kept.
func TestProbePlan(t *testing.T) {
	const every = time.Minute
	s := &Service{cfg: Config{Probers: map[string]domain.Prober{"p": everyProber(every)}}}
	ps := &s.probes
	t0 := time.Unix(1_700_000_000, 0)
	conn := func(id, provider string, st domain.State, tokens bool) *domain.Connection {
		return &domain.Connection{ID: id, Provider: provider, State: st, TokensHeld: tokens}
	}
	var ids []string
	for i := range 50 {
		id := fmt.Sprintf("c-%d", i)
		ids = append(ids, id)
		s.observeProbe(conn(id, "p", domain.StateActive, true))
	}
	s.observeProbe(conn("other", "q", domain.StateActive, true))       // no prober
	s.observeProbe(conn("idle", "p", domain.StateReauthorising, true)) // not active
	s.observeProbe(conn("bare", "p", domain.StateActive, false))       // no tokens
	s.observeProbe(conn("notmine", "p", domain.StateActive, true))     // another instance's
	owner := func(id string) bool { return id != "notmine" }
	if _, ok := ps.conns["other"]; ok {
		t.Fatal("the prober keeps a connection of a provider without a prober")
	}

	// Every active connection is probed once within the first interval,
	// at its firstProbe time.
	probed := map[string]time.Time{}
	for at := t0; at.Before(t0.Add(every)); at = at.Add(time.Second) {
		for _, id := range ps.take(at, s.cfg.Probers, owner) {
			if _, dup := probed[id]; dup {
				t.Fatalf("%s probed twice in the first interval", id)
			}
			want := firstProbe(id, t0, every)
			if at.Before(want) || !at.Before(want.Add(time.Second)) {
				t.Fatalf("%s probed at +%v, planned +%v", id, at.Sub(t0), want.Sub(t0))
			}
			probed[id] = at
		}
	}
	got := slices.Sorted(func(yield func(string) bool) {
		for id := range probed {
			if !yield(id) {
				return
			}
		}
	})
	if want := slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
		t.Fatalf("probed %v, want %v", got, want)
	}
	// Running: not probed again until done; then every ±10 % after.
	end := t0.Add(every)
	if due := ps.take(end.Add(10*every), s.cfg.Probers, owner); len(due) != 0 {
		t.Fatalf("running probes taken again: %v", due)
	}
	for _, id := range ids {
		s.probeDone(id, end)
	}
	if due := ps.take(end.Add(every*9/10-time.Millisecond), s.cfg.Probers, owner); len(due) != 0 {
		t.Fatalf("probed before 0.9 intervals: %v", due)
	}
	if due := ps.take(end.Add(every*11/10), s.cfg.Probers, owner); len(due) != len(ids) {
		t.Fatalf("%d probed within 1.1 intervals, want %d", len(due), len(ids))
	}
	end = end.Add(every * 11 / 10)

	// c-0 stops being active while its probe runs, the probe ends, and it
	// is active again: probed at the time the ended probe planned.
	s.observeProbe(conn("c-0", "p", domain.StateRefreshing, true))
	s.probeDone("c-0", end)
	s.observeProbe(conn("c-0", "p", domain.StateActive, true))
	// c-1 stops being active after its probe ended, and is active again:
	// planned afresh (firstProbe from the next tick).
	s.probeDone("c-1", end)
	s.observeProbe(conn("c-1", "p", domain.StateRefreshing, true))
	s.observeProbe(conn("c-1", "p", domain.StateActive, true))
	// c-2 is deleted.
	s.probeDone("c-2", end)
	s.observeProbe(&domain.Connection{ID: "c-2", Provider: "p", Deleted: true})
	tick := end.Add(time.Second)
	first := map[string]time.Time{"c-1": firstProbe("c-1", tick, every)}
	seen := map[string]bool{}
	for at := tick; at.Before(end.Add(3 * every)); at = at.Add(time.Second) {
		for _, id := range ps.take(at, s.cfg.Probers, owner) {
			switch id {
			case "c-0", "c-1", "c-2":
				if seen[id] {
					t.Fatalf("%s probed twice", id)
				}
				seen[id] = true
				if w, ok := first[id]; ok && (at.Before(w) || !at.Before(w.Add(time.Second))) {
					t.Fatalf("%s probed at +%v, planned +%v", id, at.Sub(tick), w.Sub(tick))
				}
				if id == "c-0" && (at.Before(end.Add(every*9/10)) || at.After(end.Add(every*11/10+time.Second))) {
					t.Fatalf("c-0 probed at +%v after its last probe ended", at.Sub(end))
				}
			}
		}
	}
	if !seen["c-0"] || !seen["c-1"] || seen["c-2"] {
		t.Fatalf("probed after the changes: %v (want c-0 and c-1, not c-2)", seen)
	}
	if _, ok := ps.conns["c-2"]; ok {
		t.Fatal("a deleted connection is still known to the prober")
	}
}
