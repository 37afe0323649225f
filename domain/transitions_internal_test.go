package domain

import (
	"errors"
	"testing"
)

// The looplab/fsm machine (check, used by Decide) and the index (Next, used
// by Apply) are built from the same table and must agree on every pair,
// including names that are not transitions at all.
func TestCheckAndNextAgree(t *testing.T) {
	names := append(TransitionNames(), "", "refresh.failed", "connection.created", "no.such.event")
	allowed := 0
	for _, st := range States {
		for _, name := range names {
			cTo, cErr := check(st, name)
			nTo, nErr := Next(st, name)
			if (cErr == nil) != (nErr == nil) || cTo != nTo {
				t.Errorf("(%s, %q): check = %s, %v; Next = %s, %v", st, name, cTo, cErr, nTo, nErr)
				continue
			}
			if cErr == nil {
				allowed++
				if !cTo.Valid() {
					t.Errorf("(%s, %q) leads to invalid state %q", st, name, cTo)
				}
				continue
			}
			for _, err := range []error{cErr, nErr} {
				var te *TransitionError
				if !errors.Is(err, ErrInvalidTransition) || !errors.As(err, &te) || te.From != st || te.Event != name {
					t.Errorf("(%s, %q): error %#v is not a *TransitionError for the pair", st, name, err)
				}
			}
			if cTo != st {
				t.Errorf("(%s, %q): refused pair reports state %s", st, name, cTo)
			}
		}
	}
	// Count the rows of the table: every (source, transition) pair once.
	rows := 0
	for _, d := range Transitions {
		rows += len(d.Src)
	}
	if allowed != rows || rows != len(index) {
		t.Errorf("allowed pairs %d, table rows %d, index entries %d: the table has a duplicate or conflicting row", allowed, rows, len(index))
	}
}

// Every table entry names valid states, so no transition can lead outside
// the four.
func TestTableUsesOnlyTheFourStates(t *testing.T) {
	for _, d := range Transitions {
		if !State(d.Dst).Valid() {
			t.Errorf("%s: destination %q", d.Name, d.Dst)
		}
		for _, src := range d.Src {
			if !State(src).Valid() {
				t.Errorf("%s: source %q", d.Name, src)
			}
		}
	}
}

// check answers from a table derived at init by asking looplab/fsm; a
// fresh machine, asked again now, must agree with it on every pair: every
// state (and two that are not states) against every transition name (and
// names that are not transitions).
func TestCheckedTableAgreesWithFSM(t *testing.T) {
	states := append([]State{"", "no_such_state"}, States...)
	names := append(TransitionNames(), "", "refresh.failed", "connection.created", "no.such.event")
	for _, st := range states {
		for _, name := range names {
			fTo, fErr := askFSM(st, name)
			cTo, cErr := check(st, name)
			if (fErr == nil) != (cErr == nil) || fTo != cTo {
				t.Errorf("(%s, %q): fresh looplab machine = %s, %v; check = %s, %v", st, name, fTo, fErr, cTo, cErr)
			}
		}
	}
}

// A check of an allowed pair does not allocate (it ran a fresh looplab
// machine per Decide before).
func TestCheckDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if _, err := check(StateActive, TransRefreshStarted); err != nil {
			t.Fatal(err)
		}
		if _, err := check(StateRefreshing, TransRefreshSucceeded); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("check allocates %.1f times per call", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := check(StateRefreshing, TransRefreshSucceeded); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckFreshFSM(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := askFSM(StateRefreshing, TransRefreshSucceeded); err != nil {
			b.Fatal(err)
		}
	}
}
