package projections

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// Incident replay: what was the state of a connection at an instant, and
// what happened across all connections in a window. Both are pure reads of
// the stream (an ephemeral ordered consumer): no event is appended, no token
// is requested, nothing outside the process changes.

// StateAt returns the state of one connection at the instant at, and the
// events that led there: the connection's history in stream order up to the
// last event whose time is not after at (the replay stops at the first event
// stamped later, so clock skew between instances cannot reorder a history).
// Events the aggregate refuses, and messages that do not decode, are passed
// over as jsstore's Load does. The error wraps domain.ErrNotFound if the
// connection did not exist yet.
func StateAt(ctx context.Context, src Source, connectionID string, at time.Time) (domain.Connection, []domain.Event, error) {
	var c domain.Connection
	var evs []domain.Event
	_, err := src.Read(ctx, events.Range{ConnectionID: connectionID}, func(rec *events.Record) error {
		if rec.Err != nil {
			c.Version = max(c.Version, rec.Seq)
			return nil
		}
		if rec.Event.Time.After(at) {
			return errStopScan
		}
		if err := c.Apply(rec.Event); err != nil {
			c.Version = max(c.Version, rec.Seq)
			return nil
		}
		evs = append(evs, rec.Event)
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return domain.Connection{}, nil, err
	}
	if !c.Exists() {
		return domain.Connection{}, nil, fmt.Errorf("%w: %s at %s", domain.ErrNotFound, connectionID, at.UTC().Format(time.RFC3339Nano))
	}
	return c, evs, nil
}

// Transition is one event in a timeline with the state it moved the
// connection from and to (equal for self-loops such as connection.updated).
type Transition struct {
	Seq          uint64           `json:"seq"`
	Time         time.Time        `json:"time"`
	ConnectionID string           `json:"connection_id"`
	Type         domain.EventType `json:"type"`
	Actor        string           `json:"actor,omitempty"`
	// From is "" for connection.created.
	From domain.State `json:"from,omitempty"`
	To   domain.State `json:"to"`
	// Reason is the connection's reason after the event (set while it is
	// unauthenticated or reauthorising).
	Reason domain.Reason `json:"reason,omitempty"`
	// ErrorCode is the provider's error code a failure or a rejection
	// records.
	ErrorCode string `json:"error_code,omitempty"`
}

// transitionOf describes e, which moved a connection from before (nil:
// e created it) to after, as domain.Connection.Apply folded it.
func transitionOf(e domain.Event, before, after *domain.Connection) Transition {
	t := Transition{Seq: e.Seq, Time: e.Time, ConnectionID: e.ConnectionID, Type: e.Type(), Actor: e.Actor, To: after.State}
	if before != nil {
		t.From = before.State
	}
	if after.State == domain.StateUnauthenticated || after.State == domain.StateReauthorising {
		t.Reason = after.Reason
	}
	t.ErrorCode, _ = failureOf(e.Payload)
	return t
}

// Changed reports whether the event changed the connection's state.
func (t Transition) Changed() bool { return t.From != t.To }

// TransitionCount counts the state changes into one (state, reason).
type TransitionCount struct {
	To     domain.State  `json:"to"`
	Reason domain.Reason `json:"reason,omitempty"`
	// Connections is how many distinct connections entered it; Transitions
	// how many times.
	Connections int `json:"connections"`
	Transitions int `json:"transitions"`
}

// TimelineReport is what happened between From and To.
type TimelineReport struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Transitions lists every event in the window in stream order (the
	// first ones only when Truncated).
	Transitions []Transition `json:"transitions"`
	// Events is how many events the window holds.
	Events int `json:"events"`
	// Truncated reports that Transitions stops short of Events (WithLimit).
	Truncated bool `json:"truncated"`
	// Counts groups the state changes of the whole window by destination
	// and reason, most connections first.
	Counts []TransitionCount `json:"counts"`
	// Skipped counts records that did not decode or that the transition
	// table refuses (they are not in Transitions).
	Skipped int `json:"skipped"`
}

// TimelineOption adjusts Timeline.
type TimelineOption func(*timelineOptions)

type timelineOptions struct {
	storedSlack time.Duration
	limit       int
}

// WithStoredSlack stops the replay at the first message stored at or after
// to+slack (see AuditQuery.StoredSlack); by default the whole stream is read.
// The replay always starts at sequence 1: the state each connection was in
// when the window opened comes from its earlier events.
func WithStoredSlack(slack time.Duration) TimelineOption {
	return func(o *timelineOptions) { o.storedSlack = slack }
}

// WithLimit keeps at most n events in Transitions (the first n) and sets
// Truncated when the window holds more; Events and Counts still cover the
// whole window. n ≤ 0 keeps them all.
func WithLimit(n int) TimelineOption {
	return func(o *timelineOptions) { o.limit = n }
}

// Timeline replays the stream and reports every event whose time is in
// [from, to), with the transition it made, and counts the state changes by
// (destination state, reason), e.g. 412 connections went unauthenticated
// with invalid_client.
func Timeline(ctx context.Context, src Source, from, to time.Time, opts ...TimelineOption) (TimelineReport, error) {
	var o timelineOptions
	for _, f := range opts {
		f(&o)
	}
	rep := TimelineReport{From: from, To: to, Transitions: []Transition{}, Counts: []TransitionCount{}}
	conns := map[string]*domain.Connection{}
	type key struct {
		to     domain.State
		reason domain.Reason
	}
	counts := map[key]*TransitionCount{}
	type seenKey struct {
		key
		id string
	}
	seen := map[seenKey]bool{}
	var stopAt time.Time
	if o.storedSlack > 0 {
		stopAt = to.Add(o.storedSlack)
	}
	_, err := src.Read(ctx, events.Range{}, func(rec *events.Record) error {
		if !stopAt.IsZero() && !rec.Stored.Before(stopAt) {
			return errStopScan
		}
		if rec.Err != nil {
			rep.Skipped++
			return nil
		}
		e := rec.Event
		in := !e.Time.Before(from) && e.Time.Before(to)
		c := conns[e.ConnectionID]
		var before *domain.Connection
		if c == nil {
			c = &domain.Connection{}
		} else if in {
			b := *c // Apply replaces slices and maps, never writes into them
			before = &b
		}
		if err := c.Apply(e); err != nil {
			if in {
				rep.Skipped++
			}
			return nil
		}
		conns[e.ConnectionID] = c
		if !in {
			return nil
		}
		t := transitionOf(e, before, c)
		rep.Events++
		if o.limit <= 0 || len(rep.Transitions) < o.limit {
			rep.Transitions = append(rep.Transitions, t)
		} else {
			rep.Truncated = true
		}
		if t.Changed() {
			k := key{t.To, t.Reason}
			n := counts[k]
			if n == nil {
				n = &TransitionCount{To: t.To, Reason: t.Reason}
				counts[k] = n
			}
			n.Transitions++
			if sk := (seenKey{k, t.ConnectionID}); !seen[sk] {
				seen[sk] = true
				n.Connections++
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return TimelineReport{}, err
	}
	for _, n := range counts {
		rep.Counts = append(rep.Counts, *n)
	}
	slices.SortFunc(rep.Counts, func(a, b TransitionCount) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(b.Transitions, a.Transitions),
			cmp.Compare(a.To, b.To), cmp.Compare(a.Reason, b.Reason))
	})
	return rep, nil
}

const textTime = "2006-01-02T15:04:05.000Z07:00"

// WriteText renders the report for a terminal: the summary counts, then one
// line per event.
func (r TimelineReport) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Timeline %s – %s: %d events, %d state changes", r.From.UTC().Format(textTime), r.To.UTC().Format(textTime), r.Events, r.changes())
	if r.Truncated {
		fmt.Fprintf(bw, ", the first %d listed", len(r.Transitions))
	}
	if r.Skipped > 0 {
		fmt.Fprintf(bw, ", %d records skipped", r.Skipped)
	}
	bw.WriteString("\n")
	for _, c := range r.Counts {
		bw.WriteString("  " + c.String() + "\n")
	}
	if len(r.Transitions) > 0 {
		bw.WriteString("\n")
	}
	for _, t := range r.Transitions {
		bw.WriteString(t.String() + "\n")
	}
	return bw.Flush()
}

func (r TimelineReport) changes() int {
	n := 0
	for _, c := range r.Counts {
		n += c.Transitions
	}
	return n
}

// String renders a count: "412 connections went unauthenticated with
// invalid_client".
func (c TransitionCount) String() string {
	noun := "connections"
	if c.Connections == 1 {
		noun = "connection"
	}
	s := fmt.Sprintf("%d %s went %s", c.Connections, noun, c.To)
	if c.Reason != domain.ReasonNone {
		s += " with " + string(c.Reason)
	}
	if c.Transitions != c.Connections {
		s += fmt.Sprintf(" (%d times)", c.Transitions)
	}
	return s
}

// String renders one line of a timeline.
func (t Transition) String() string {
	from := cmp.Or(string(t.From), "(new)")
	arrow := from + " → " + string(t.To)
	if !t.Changed() {
		arrow = string(t.To)
	}
	s := fmt.Sprintf("%s  #%-8d %s  %-24s %s", t.Time.UTC().Format(textTime), t.Seq, t.ConnectionID, t.Type, arrow)
	if t.Reason != domain.ReasonNone {
		s += " (" + string(t.Reason) + ")"
	}
	if t.ErrorCode != "" && t.ErrorCode != string(t.Reason) {
		s += " error " + t.ErrorCode
	}
	if t.Actor != "" {
		s += "  by " + t.Actor
	}
	return s
}
