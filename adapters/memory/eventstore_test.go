package memory_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
)

var t0 = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

func created() domain.Event {
	return domain.Event{Payload: domain.ConnectionCreated{Provider: "p", Scopes: []string{"users:read"}}}
}

func updated(v string) domain.Event {
	return domain.Event{Payload: domain.ConnectionUpdated{Config: map[string]string{"v": v}}}
}

func TestEventStoreHooksCountersAndClock(t *testing.T) {
	clock := memory.NewClock(t0)
	s := memory.NewEventStore(memory.EventStoreConfig{Actor: "instance/a", Clock: clock})
	var seen []domain.Event
	s.OnAppend(func(e domain.Event) { seen = append(seen, e) })
	id := porttest.NewConnectionID()
	e, err := s.Append(t.Context(), id, 0, created())
	if err != nil {
		t.Fatal(err)
	}
	if !e.Time.Equal(t0) || e.Actor != "instance/a" {
		t.Fatalf("time %v actor %q, want the clock's and the configured actor", e.Time, e.Actor)
	}
	if len(seen) != 1 || seen[0].Seq != e.Seq || seen[0].ID != e.ID {
		t.Fatalf("OnAppend saw %+v before Append returned", seen)
	}
	// An idempotent resend is reported to the hooks too, as by jsstore.
	if _, err := s.Append(t.Context(), id, 0, e); err != nil || len(seen) != 2 || seen[1].Seq != e.Seq {
		t.Fatalf("resend: %v, hooks saw %d", err, len(seen))
	}
	if _, err := s.Append(t.Context(), id, 0, updated("x")); !errors.Is(err, domain.ErrConflict) || len(seen) != 2 {
		t.Fatalf("conflict: %v, hooks saw %d", err, len(seen))
	}
	if _, err := s.Load(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.History(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if s.Appends() != 3 || s.Conflicts() != 1 || s.Loads() != 1 || s.Histories() != 1 || s.LastSeq() != 1 || len(s.Events()) != 1 {
		t.Fatalf("counters: appends %d conflicts %d loads %d histories %d last %d events %d",
			s.Appends(), s.Conflicts(), s.Loads(), s.Histories(), s.LastSeq(), len(s.Events()))
	}
	s.ResetCounters()
	if s.Appends()+s.Loads()+s.Histories()+s.Conflicts() != 0 {
		t.Fatal("ResetCounters left a count")
	}
}

func TestEventStoreFailureInjection(t *testing.T) {
	s := memory.NewEventStore(memory.EventStoreConfig{})
	id := porttest.NewConnectionID()
	outage := errors.New("stream unavailable")
	s.FailAppends(2, outage)
	for i := 0; i < 2; i++ {
		if _, err := s.Append(t.Context(), id, 0, created()); !errors.Is(err, outage) {
			t.Fatalf("append %d: %v, want the injected error", i, err)
		}
	}
	if len(s.Events()) != 0 {
		t.Fatal("a failed append stored an event")
	}
	if _, err := s.Append(t.Context(), id, 0, created()); err != nil {
		t.Fatalf("append after the outage: %v", err)
	}
	s.FailLoads(1, outage)
	if _, err := s.Load(t.Context(), id); !errors.Is(err, outage) {
		t.Fatalf("load: %v", err)
	}
	if _, err := s.Load(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, id, 1, updated("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a canceled context: %v", err)
	}
}

// BeforeAppend lets a test put a racing writer between a use case's Load and
// its Append.
func TestEventStoreBeforeAppendRacingWriter(t *testing.T) {
	s := memory.NewEventStore(memory.EventStoreConfig{})
	id := porttest.NewConnectionID()
	first, err := s.Append(t.Context(), id, 0, created())
	if err != nil {
		t.Fatal(err)
	}
	var raced atomic.Bool
	var calls atomic.Int32
	s.BeforeAppend(func(conn string, expected uint64, e domain.Event) {
		calls.Add(1)
		if raced.CompareAndSwap(false, true) {
			if _, err := s.Append(t.Context(), conn, expected, updated("racer")); err != nil {
				t.Errorf("racer: %v", err)
			}
		}
	})
	if _, err := s.Append(t.Context(), id, first.Seq, updated("mine")); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("append after a racing writer: %v, want ErrConflict", err)
	}
	c, err := s.Load(t.Context(), id)
	if err != nil || c.Config["v"] != "racer" || calls.Load() != 2 {
		t.Fatalf("load: %+v %v (hook called %d times)", c, err, calls.Load())
	}
	// RaceNextAppend does the same once, without a guard.
	s.RaceNextAppend(func() {
		if _, err := s.Append(t.Context(), id, c.Version, updated("racer-2")); err != nil {
			t.Errorf("racer: %v", err)
		}
	})
	if _, err := s.Append(t.Context(), id, c.Version, updated("mine")); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("append after RaceNextAppend: %v, want ErrConflict", err)
	}
	if c, err = s.Load(t.Context(), id); err != nil || c.Config["v"] != "racer-2" {
		t.Fatalf("load: %+v %v", c, err)
	}
	if _, err := s.Append(t.Context(), id, c.Version, updated("mine")); err != nil {
		t.Fatalf("append after reloading: %v", err)
	}
}
