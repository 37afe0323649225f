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
