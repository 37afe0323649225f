package porttest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Actor is the actor an EventStore factory must configure its handles to
// write on events that have none.
const Actor = "porttest"

// OpenEventStore returns two handles on one event store (two instances on
// one stream), both configured with Actor. They may be the same value.
type OpenEventStore func(t *testing.T) (a, b domain.EventStore)

// EventStore runs the contract of domain.EventStore.
func EventStore(t *testing.T, open OpenEventStore) {
	run(t, open, []subtest[OpenEventStore]{
		{"AppendFillsAndLoad", esAppendFills},
		{"HistoryOrderAndVersions", esHistory},
		{"OneGlobalSequence", esGlobalSequence},
		{"StaleExpectedSequenceConflicts", esConflict},
		{"IdempotentResend", esResend},
		{"UnknownConnection", esUnknown},
		{"InvalidIDs", esInvalid},
		{"SecondInstanceSeesWrites", esTwoHandles},
		{"RacingWritersOneWinnerPerRound", esRacing},
		{"RefusedEventSkippedByLoad", esRefused},
		{"NoAliasing", esNoAliasing},
		{"ConcurrentConnections", esConcurrentConnections},
	})
}

// NewConnectionID returns a random canonical connection id.
func NewConnectionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func created() domain.Event {
	return domain.Event{Payload: domain.ConnectionCreated{Provider: "porttest", Scopes: []string{"users:read"}, Config: map[string]string{"team": "a"}}}
}

func updated(n int) domain.Event {
	return domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"n": strconv.Itoa(n)}}}
}

// mustAppend appends e and fails the test on error.
func mustAppend(t *testing.T, s domain.EventStore, id string, expected uint64, e domain.Event) domain.Event {
	t.Helper()
	out, err := s.Append(ctxT(t), id, expected, e)
	if err != nil {
		t.Fatalf("append %s at %d: %v", e.Type(), expected, err)
	}
	return out
}

func mustHistory(t *testing.T, s domain.EventStore, id string) []domain.Event {
	t.Helper()
	h, err := s.History(ctxT(t), id)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	return h
}

func esAppendFills(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	e := mustAppend(t, s, id, 0, created())
	if e.Seq == 0 || e.ID == "" || e.ConnectionID != id || e.Time.IsZero() || e.Actor != Actor {
		t.Fatalf("append did not fill the event: seq %d id %q conn %q time %v actor %q", e.Seq, e.ID, e.ConnectionID, e.Time, e.Actor)
	}
	c, err := s.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != id || c.Version != e.Seq || c.Events != 1 || c.State != domain.StateUnauthenticated || c.Provider != "porttest" || c.Config["team"] != "a" {
		t.Fatalf("loaded %+v, want version %d", c, e.Seq)
	}
	// What the caller sets is kept.
	at := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	u := updated(1)
	u.ID, u.Time, u.Actor = "porttest-event-"+NewConnectionID(), at, "user"
	got := mustAppend(t, s, id, e.Seq, u)
	h := mustHistory(t, s, id)
	if len(h) != 2 || got.ID != u.ID || h[1].ID != u.ID || !h[1].Time.Equal(at) || h[1].Actor != "user" || h[1].Seq != got.Seq {
		t.Fatalf("caller's fields not kept: returned %+v, stored %+v", got, h)
	}
	if !h[0].Time.Equal(e.Time) || h[0].Actor != Actor || h[0].ID != e.ID || h[0].ConnectionID != id {
		t.Fatalf("stored event differs from the returned one: %+v vs %+v", h[0], e)
	}
}

func esHistory(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	var appended []domain.Event
	last := uint64(0)
	for i := 0; i < 6; i++ {
		e := updated(i)
		if i == 0 {
			e = created()
		}
		out := mustAppend(t, s, id, last, e)
		if out.Seq <= last {
			t.Fatalf("sequence %d not after %d", out.Seq, last)
		}
		last = out.Seq
		appended = append(appended, out)
	}
	h := mustHistory(t, s, id)
	if len(h) != len(appended) {
		t.Fatalf("history has %d events, want %d", len(h), len(appended))
	}
	for i := range h {
		if h[i].ID != appended[i].ID || h[i].Seq != appended[i].Seq || h[i].Type() != appended[i].Type() {
			t.Fatalf("history[%d] = %s %s seq %d, want %s %s seq %d", i, h[i].ID, h[i].Type(), h[i].Seq, appended[i].ID, appended[i].Type(), appended[i].Seq)
		}
	}
	c, err := s.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	want, err := domain.Replay(h)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != last || c.Events != len(h) || c.Config["n"] != "5" || c.Version != want.Version || c.State != want.State {
		t.Fatalf("load: version %d events %d config %v; want version %d events %d n=5", c.Version, c.Events, c.Config, last, len(h))
	}
}

func esGlobalSequence(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	a, b := NewConnectionID(), NewConnectionID()
	var seqs []uint64
	la, lb := uint64(0), uint64(0)
	for i := 0; i < 3; i++ {
		ea, eb := updated(i), updated(i)
		if i == 0 {
			ea, eb = created(), created()
		}
		la = mustAppend(t, s, a, la, ea).Seq
		lb = mustAppend(t, s, b, lb, eb).Seq
		seqs = append(seqs, la, lb)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("sequences across connections not increasing: %v", seqs)
		}
	}
	// Each connection's expected sequence is its own last one, not the
	// stream's.
	if _, err := s.Append(ctxT(t), a, lb, updated(9)); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("append to a at b's last sequence: %v, want ErrConflict", err)
	}
	mustAppend(t, s, a, la, updated(9))
}

func esConflict(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	first := mustAppend(t, s, id, 0, created())
	cases := []struct {
		name     string
		expected uint64
	}{
		{"zero for an existing connection", 0},
		{"before the last", first.Seq - 1},
		{"after the last", first.Seq + 1},
		{"far ahead", first.Seq + 1000},
	}
	for _, c := range cases {
		if c.expected == first.Seq {
			continue
		}
		if _, err := s.Append(ctxT(t), id, c.expected, updated(1)); !errors.Is(err, domain.ErrConflict) {
			t.Fatalf("%s (%d, last %d): %v, want ErrConflict", c.name, c.expected, first.Seq, err)
		}
	}
	if h := mustHistory(t, s, id); len(h) != 1 {
		t.Fatalf("a conflicting append stored something: %d events", len(h))
	}
	c, err := s.Load(ctxT(t), id)
	if err != nil || c.Version != first.Seq || c.Events != 1 {
		t.Fatalf("load after conflicts: %+v %v", c, err)
	}
	// A fresh connection must be appended at 0.
	other := NewConnectionID()
	if _, err := s.Append(ctxT(t), other, first.Seq, created()); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("first event at a non-zero sequence: %v, want ErrConflict", err)
	}
	if h := mustHistory(t, s, other); len(h) != 0 {
		t.Fatalf("conflict stored %d events", len(h))
	}
}

func esResend(t *testing.T, open OpenEventStore) {
	s, b := open(t)
	id := NewConnectionID()
	e := created()
	e.ID = "resend-" + NewConnectionID()
	first := mustAppend(t, s, id, 0, e)
	// The writer did not see the answer and sends the same event again,
	// decided against the same version (stale now), on either instance.
	for _, st := range []domain.EventStore{s, b} {
		again, err := st.Append(ctxT(t), id, 0, e)
		if err != nil || again.Seq != first.Seq || again.ID != e.ID {
			t.Fatalf("resend at the old expected sequence: seq %d err %v, want seq %d", again.Seq, err, first.Seq)
		}
		again, err = st.Append(ctxT(t), id, first.Seq, e)
		if err != nil || again.Seq != first.Seq {
			t.Fatalf("resend at the current sequence: seq %d err %v, want seq %d", again.Seq, err, first.Seq)
		}
	}
	if h := mustHistory(t, s, id); len(h) != 1 {
		t.Fatalf("resend stored the event twice: %d events", len(h))
	}
	// Once another event follows, the old one is no longer the last: a
	// resend against a stale version is a conflict.
	next := mustAppend(t, s, id, first.Seq, updated(1))
	if _, err := s.Append(ctxT(t), id, 0, e); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("resend of an event that is not the last: %v, want ErrConflict", err)
	}
	c, err := s.Load(ctxT(t), id)
	if err != nil || c.Version != next.Seq || c.Events != 2 {
		t.Fatalf("load: %+v %v", c, err)
	}
}

func esUnknown(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	if _, err := s.Load(ctxT(t), id); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("load unknown: %v, want ErrNotFound", err)
	}
	h, err := s.History(ctxT(t), id)
	if err != nil || len(h) != 0 {
		t.Fatalf("history of an unknown connection: %d events, %v; want empty, nil", len(h), err)
	}
}

func esInvalid(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	valid := NewConnectionID()
	bad := []string{"", "not-a-uuid", "tokenline.conn.x", "*", ">", "123E4567-E89B-12D3-A456-426614174000", "123e4567-e89b-12d3-a456-42661417400.", "123e4567-e89b-12d3-a456-426614174000 "}
	for _, id := range bad {
		if _, err := s.Append(ctxT(t), id, 0, created()); err == nil || errors.Is(err, domain.ErrConflict) {
			t.Fatalf("append to invalid id %q: %v, want a (non-conflict) error", id, err)
		}
		if _, err := s.Load(ctxT(t), id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("load invalid id %q: %v, want ErrNotFound", id, err)
		}
		if h, err := s.History(ctxT(t), id); err == nil && len(h) > 0 {
			t.Fatalf("history of invalid id %q: %d events", id, len(h))
		}
	}
	// An event that names another connection is refused.
	e := created()
	e.ConnectionID = NewConnectionID()
	if _, err := s.Append(ctxT(t), valid, 0, e); err == nil {
		t.Fatal("append of an event for another connection succeeded")
	}
	if h := mustHistory(t, s, valid); len(h) != 0 {
		t.Fatalf("refused event stored: %d", len(h))
	}
	if h := mustHistory(t, s, e.ConnectionID); len(h) != 0 {
		t.Fatalf("refused event stored under its own id: %d", len(h))
	}
}

func esTwoHandles(t *testing.T, open OpenEventStore) {
	a, b := open(t)
	id := NewConnectionID()
	e1 := mustAppend(t, a, id, 0, created())
	if _, err := a.Load(ctxT(t), id); err != nil { // a may cache it now
		t.Fatal(err)
	}
	cb, err := b.Load(ctxT(t), id)
	if err != nil || cb.Version != e1.Seq {
		t.Fatalf("b loads %+v %v, want version %d", cb, err, e1.Seq)
	}
	e2 := mustAppend(t, b, id, cb.Version, updated(2))
	ca, err := a.Load(ctxT(t), id)
	if err != nil || ca.Version != e2.Seq || ca.Config["n"] != "2" || ca.Events != 2 {
		t.Fatalf("a does not see b's append: %+v %v", ca, err)
	}
	// a decided against e1: stale.
	if _, err := a.Append(ctxT(t), id, e1.Seq, updated(3)); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append on a: %v, want ErrConflict", err)
	}
	if h := mustHistory(t, a, id); len(h) != 2 {
		t.Fatalf("history on a: %d events, want 2", len(h))
	}
}

func esRacing(t *testing.T, open OpenEventStore) {
	const writers, rounds = 6, 5
	a, b := open(t)
	id := NewConnectionID()
	version := mustAppend(t, a, id, 0, created()).Seq
	for round := 0; round < rounds; round++ {
		var (
			mu        sync.Mutex
			winners   []domain.Event
			conflicts int
		)
		together(writers, func(w int) {
			e, err := either(w, a, b).Append(ctxT(t), id, version, updated(round*writers+w))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, e)
			case errors.Is(err, domain.ErrConflict):
				conflicts++
			default:
				t.Errorf("writer %d: %v", w, err)
			}
		})
		if len(winners) != 1 || conflicts != writers-1 {
			t.Fatalf("round %d: %d winners and %d conflicts, want 1 and %d", round, len(winners), conflicts, writers-1)
		}
		if winners[0].Seq <= version {
			t.Fatalf("round %d: winner's sequence %d not after %d", round, winners[0].Seq, version)
		}
		version = winners[0].Seq
		c, err := b.Load(ctxT(t), id)
		if err != nil || c.Version != version {
			t.Fatalf("round %d: load %+v %v, want version %d", round, c, err, version)
		}
	}
	if h := mustHistory(t, a, id); len(h) != rounds+1 {
		t.Fatalf("history: %d events, want %d", len(h), rounds+1)
	}
}

func esRefused(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	first := mustAppend(t, s, id, 0, created())
	// Not allowed in unauthenticated: stored (the store does not decide),
	// skipped by Load, which still advances Version past it.
	bad := mustAppend(t, s, id, first.Seq, domain.Event{Payload: domain.RefreshSucceeded{Attempt: 1}})
	c, err := s.Load(ctxT(t), id)
	if err != nil || c.Version != bad.Seq || c.Events != 1 || c.State != domain.StateUnauthenticated {
		t.Fatalf("load after a refused event: %+v %v, want version %d and 1 applied event", c, err, bad.Seq)
	}
	next := mustAppend(t, s, id, c.Version, updated(1))
	if c, err = s.Load(ctxT(t), id); err != nil || c.Version != next.Seq || c.Config["n"] != "1" {
		t.Fatalf("load after appending past a refused event: %+v %v", c, err)
	}
	if h := mustHistory(t, s, id); len(h) != 3 {
		t.Fatalf("history: %d events, want 3 (the refused one included)", len(h))
	}
}

func esNoAliasing(t *testing.T, open OpenEventStore) {
	s, _ := open(t)
	id := NewConnectionID()
	scopes := []string{"users:read", "accounts:read"}
	cfg := map[string]string{"team": "a"}
	mustAppend(t, s, id, 0, domain.Event{Payload: domain.ConnectionCreated{Provider: "porttest", Scopes: scopes, Config: cfg}})
	scopes[0], cfg["team"] = "changed:write", "changed"
	c, err := s.Load(ctxT(t), id)
	if err != nil || c.Scopes[0] != "users:read" || c.Config["team"] != "a" {
		t.Fatalf("stored event aliases the caller's data: %+v %v", c, err)
	}
	c.Scopes[0], c.Config["team"] = "mutated:read", "mutated"
	h := mustHistory(t, s, id)
	h[0].Payload.(domain.ConnectionCreated).Scopes[0] = "mutated:read"
	c2, err := s.Load(ctxT(t), id)
	if err != nil || c2.Scopes[0] != "users:read" || c2.Config["team"] != "a" {
		t.Fatalf("a returned aggregate or history aliases the store: %+v %v", c2, err)
	}
}

func esConcurrentConnections(t *testing.T, open OpenEventStore) {
	const conns, per = 8, 4
	a, b := open(t)
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = NewConnectionID()
	}
	together(conns, func(i int) {
		last := uint64(0)
		for j := 0; j < per; j++ {
			e := updated(j)
			if j == 0 {
				e = created()
			}
			out, err := either(i, a, b).Append(ctxT(t), ids[i], last, e)
			if err != nil {
				t.Errorf("connection %d event %d: %v", i, j, err)
				return
			}
			last = out.Seq
		}
	})
	if t.Failed() {
		return
	}
	for _, id := range ids {
		h := mustHistory(t, a, id)
		if len(h) != per {
			t.Fatalf("%s: %d events, want %d", id, len(h), per)
		}
		for j := 1; j < len(h); j++ {
			if h[j].Seq <= h[j-1].Seq {
				t.Fatalf("%s: history out of order", id)
			}
		}
	}
}
