package domain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/looplab/fsm"
)

// Transition names used by the FSM. Most equal the event type; an event type
// whose outcome depends on its data has one transition name per outcome
// (refresh.failed is transient or terminal, access.rejected recorded or
// terminal). connection.created is not a transition: it brings the aggregate
// into existence in StateUnauthenticated (reason never_authorised) and is
// accepted only by a connection that does not exist yet.
const (
	TransAuthorisationStarted   = string(EventAuthorisationStarted)
	TransAuthorisationCompleted = string(EventAuthorisationCompleted)
	TransAuthorisationFailed    = string(EventAuthorisationFailed)
	TransRefreshStarted         = string(EventRefreshStarted)
	TransRefreshSucceeded       = string(EventRefreshSucceeded)
	TransRefreshFailedTransient = string(EventRefreshFailed) + ".transient"
	TransRefreshFailedTerminal  = string(EventRefreshFailed) + ".terminal"
	// TransRefreshNotGranted: the access token of a grant without a
	// refresh token expired (reason refresh_not_granted). No refresh was
	// started, so it leaves active, not refreshing.
	TransRefreshNotGranted      = string(EventRefreshFailed) + ".not_granted"
	TransRefreshLeaseExtended   = string(EventRefreshLeaseExtended)
	TransAccessRejected         = string(EventAccessRejected)
	TransAccessRejectedTerminal = string(EventAccessRejected) + ".terminal"
	TransTokensInvalidated      = string(EventTokensInvalidated)
	TransConnectionUpdated      = string(EventConnectionUpdated)
	TransConnectionDeleted      = string(EventConnectionDeleted)
)

func s(states ...State) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = string(st)
	}
	return out
}

func selfLoops(name string, states ...State) []fsm.EventDesc {
	out := make([]fsm.EventDesc, 0, len(states))
	for _, st := range states {
		out = append(out, fsm.EventDesc{Name: name, Src: s(st), Dst: string(st)})
	}
	return out
}

// Transitions is the transition table: the single source of truth for which
// event may follow which state. Decide checks commands against what a
// looplab/fsm machine built from it answers (asked once per pair at init:
// checked); Apply follows it through an index built from it. It must not
// be changed after init.
var Transitions = func() []fsm.EventDesc {
	t := []fsm.EventDesc{
		{Name: TransAuthorisationStarted, Src: s(StateUnauthenticated, StateReauthorising), Dst: string(StateReauthorising)},
		{Name: TransAuthorisationCompleted, Src: s(StateReauthorising), Dst: string(StateActive)},
		{Name: TransAuthorisationFailed, Src: s(StateReauthorising), Dst: string(StateUnauthenticated)},
		{Name: TransRefreshStarted, Src: s(StateActive), Dst: string(StateRefreshing)},
		{Name: TransRefreshSucceeded, Src: s(StateRefreshing), Dst: string(StateActive)},
		{Name: TransRefreshFailedTransient, Src: s(StateRefreshing), Dst: string(StateActive)},
		{Name: TransRefreshFailedTerminal, Src: s(StateRefreshing), Dst: string(StateUnauthenticated)},
		{Name: TransRefreshNotGranted, Src: s(StateActive), Dst: string(StateUnauthenticated)},
		{Name: TransAccessRejectedTerminal, Src: s(StateActive), Dst: string(StateUnauthenticated)},
		{Name: TransConnectionDeleted, Src: s(States...), Dst: string(StateUnauthenticated)},
	}
	t = append(t, selfLoops(TransAccessRejected, StateActive, StateRefreshing)...)
	t = append(t, selfLoops(TransRefreshLeaseExtended, StateRefreshing)...)
	t = append(t, selfLoops(TransTokensInvalidated, StateUnauthenticated, StateReauthorising)...)
	// A connection being deleted has its tokens destroyed first, in any state.
	t = append(t, fsm.EventDesc{Name: TransTokensInvalidated, Src: s(StateActive, StateRefreshing), Dst: string(StateUnauthenticated)})
	t = append(t, selfLoops(TransConnectionUpdated, States...)...)
	return t
}()

type transKey struct {
	from  State
	trans string
}

// index maps (state, transition) to the destination, built from Transitions.
var index = func() map[transKey]State {
	m := make(map[transKey]State)
	for _, d := range Transitions {
		for _, src := range d.Src {
			m[transKey{State(src), d.Name}] = State(d.Dst)
		}
	}
	return m
}()

// TransitionNames lists every transition name in the table, sorted.
func TransitionNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range Transitions {
		if !seen[d.Name] {
			seen[d.Name] = true
			out = append(out, d.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Next returns the state that follows transition trans in state from, by the
// table, without side effects.
func Next(from State, trans string) (State, error) {
	if to, ok := index[transKey{from, trans}]; ok {
		return to, nil
	}
	return from, &TransitionError{From: from, Event: trans}
}

// checked is what looplab/fsm answers for every (state, transition name)
// pair of the table: the destination, or absent when the machine refuses
// it. It is asked once, at init, so that Decide does not build a machine
// per call (a fresh machine cost about 12 % of a refresh's CPU); check is a
// map read that does not allocate. A test asks a fresh machine again for
// every pair and compares (TestCheckedTableAgreesWithFSM).
var checked = func() map[transKey]State {
	m := make(map[transKey]State)
	for _, st := range States {
		for _, name := range TransitionNames() {
			if to, err := askFSM(st, name); err == nil {
				m[transKey{st, name}] = to
			}
		}
	}
	return m
}()

// askFSM asks a fresh looplab/fsm machine whether trans may fire in state
// from. It uses a non-cancellable context (looplab/fsm #115: a cancelled
// context can wedge a machine mid-transition). A self-transition is
// reported by the library as NoTransitionError and is allowed.
func askFSM(from State, trans string) (State, error) {
	m := fsm.NewFSM(string(from), Transitions, nil)
	err := m.Event(context.Background(), trans)
	var noTrans fsm.NoTransitionError
	if err != nil && !errors.As(err, &noTrans) {
		return from, &TransitionError{From: from, Event: trans}
	}
	return State(m.Current()), nil
}

// check reports whether trans may fire in state from, as looplab/fsm
// answered it at init (checked), and the state it leads to.
func check(from State, trans string) (State, error) {
	if to, ok := checked[transKey{from, trans}]; ok {
		return to, nil
	}
	return from, &TransitionError{From: from, Event: trans}
}

// TransitionName returns the FSM transition a payload takes.
func TransitionName(p Payload) string {
	switch d := p.(type) {
	case RefreshFailed:
		if d.Terminal && d.Reason == ReasonRefreshNotGranted {
			return TransRefreshNotGranted
		}
		if d.Terminal {
			return TransRefreshFailedTerminal
		}
		return TransRefreshFailedTransient
	case AccessRejected:
		if d.Terminal {
			return TransAccessRejectedTerminal
		}
		return TransAccessRejected
	case nil:
		return ""
	}
	return string(p.EventType())
}

// TableMarkdown renders the transition table as a Markdown table: one row per
// (transition, source state). docs/transitions.md is generated from it and a
// test checks the two agree.
func TableMarkdown() string {
	var b strings.Builder
	b.WriteString("| transition (event) | from | to |\n|---|---|---|\n")
	b.WriteString("| `connection.created` | (none: the connection does not exist) | `unauthenticated` (`never_authorised`) |\n")
	for _, name := range TransitionNames() {
		for _, st := range States {
			if to, ok := index[transKey{st, name}]; ok {
				fmt.Fprintf(&b, "| `%s` | `%s` | `%s` |\n", name, st, to)
			}
		}
	}
	return b.String()
}
