package memory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// EventStoreConfig configures an EventStore. The zero value is usable.
type EventStoreConfig struct {
	// Actor is written on events that have none, like jsstore.Config.Actor.
	Actor string
	// Clock stamps events that have no time; default domain.SystemClock.
	Clock domain.Clock
}

// EventStore implements domain.EventStore in memory with the semantics of
// adapters/jsstore: one global sequence shared by every connection (like a
// stream), optimistic concurrency on the sequence of the connection's last
// event, de-duplication by event id, and events stored in their wire
// encoding (events.Encode), so that a payload the schema cannot carry fails
// as it would on JetStream and no stored event aliases a caller's slice.
// It is safe for concurrent use.
type EventStore struct {
	cfg EventStoreConfig

	mu     sync.Mutex
	log    []record            // the stream: log[i] has sequence i+1
	bySubj map[string][]uint64 // connection id -> sequences, in order
	byID   map[string]uint64   // event id -> sequence (de-duplication)

	hookMu sync.RWMutex
	hooks  []func(domain.Event)
	before []func(connectionID string, expectedLastSeq uint64, e domain.Event)
	race   atomic.Pointer[func()]

	failAppends failures
	failLoads   failures

	loads, appends, histories, conflicts atomic.Int64
}

type record struct {
	seq  uint64
	id   string
	conn string
	data []byte
}

var _ domain.EventStore = (*EventStore)(nil)

// NewEventStore returns an empty store.
func NewEventStore(cfg EventStoreConfig) *EventStore {
	if cfg.Clock == nil {
		cfg.Clock = domain.SystemClock{}
	}
	return &EventStore{cfg: cfg, bySubj: map[string][]uint64{}, byID: map[string]uint64{}}
}

// OnAppend registers f to be called, synchronously and before Append
// returns, with every event Append reports as stored (Seq set), including
// an idempotent resend, exactly like jsstore.Store.OnAppend. f is called
// without any lock of the store held; it must be fast. Hooks of concurrent
// Appends may run concurrently.
func (s *EventStore) OnAppend(f func(domain.Event)) {
	s.hookMu.Lock()
	s.hooks = append(s.hooks, f)
	s.hookMu.Unlock()
}

// BeforeAppend registers f to be called at the start of every Append that
// passed validation, before its concurrency check and without any lock
// held, with the event as it will be stored (ID, ConnectionID, Time and
// Actor filled). f may call Append itself, e.g. to let a racing writer win;
// it is then called for that nested Append too, so guard it with an atomic
// flag (not a sync.Once, whose Do would deadlock on the nested call), or
// use RaceNextAppend.
func (s *EventStore) BeforeAppend(f func(connectionID string, expectedLastSeq uint64, e domain.Event)) {
	s.hookMu.Lock()
	s.before = append(s.before, f)
	s.hookMu.Unlock()
}

// RaceNextAppend runs f once, without any lock held, just before the
// concurrency check of the next Append that passed validation: whatever f
// appends (a racing writer) lands first, so that Append, decided against
// the old version, gets domain.ErrConflict. Appends made by f do not
// trigger it again.
func (s *EventStore) RaceNextAppend(f func()) {
	s.race.Store(&f)
}

// FailAppends makes the next n Appends fail with an error wrapping err
// (storing nothing, calling no hook), as when the stream is unreachable.
func (s *EventStore) FailAppends(n int, err error) {
	s.failAppends.set(n, err)
}

// FailLoads makes the next n Loads fail with an error wrapping err.
func (s *EventStore) FailLoads(n int, err error) {
	s.failLoads.set(n, err)
}

// Appends returns how many times Append was called (successful or not).
func (s *EventStore) Appends() int { return int(s.appends.Load()) }

// Loads returns how many times Load was called (successful or not).
func (s *EventStore) Loads() int { return int(s.loads.Load()) }

// Histories returns how many times History was called.
func (s *EventStore) Histories() int { return int(s.histories.Load()) }

// Conflicts returns how many Appends failed with domain.ErrConflict.
func (s *EventStore) Conflicts() int { return int(s.conflicts.Load()) }

// ResetCounters sets Appends, Loads, Histories and Conflicts to zero.
func (s *EventStore) ResetCounters() {
	s.appends.Store(0)
	s.loads.Store(0)
	s.histories.Store(0)
	s.conflicts.Store(0)
}

// LastSeq returns the sequence of the last stored event (0: none).
func (s *EventStore) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.log))
}

// Events returns every stored event of every connection in stream order
// (as History does, events that do not decode are left out).
func (s *EventStore) Events() []domain.Event {
	s.mu.Lock()
	recs := append([]record(nil), s.log...)
	s.mu.Unlock()
	out := make([]domain.Event, 0, len(recs))
	for _, r := range recs {
		if e, err := r.event(); err == nil {
			out = append(out, e)
		}
	}
	return out
}

func (r record) event() (domain.Event, error) {
	e, err := events.Decode(r.data)
	if err != nil {
		return domain.Event{}, err
	}
	if e.ConnectionID != r.conn {
		return domain.Event{}, fmt.Errorf("memory: event subject %s does not match %s", e.ConnectionID, r.conn)
	}
	e.Seq = r.seq
	return e, nil
}

// prepare fills in what the event leaves empty, as jsstore does.
func (s *EventStore) prepare(connectionID string, e *domain.Event) ([]byte, error) {
	if err := e.Stamp(connectionID, s.cfg.Clock.Now, s.cfg.Actor); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return events.Encode(*e)
}

// Append implements domain.EventStore. Like jsstore it checks the
// expected sequence first: a stale one is a conflict unless the
// connection's last event has this event's id (a resend of an event that
// landed, reported as the success it was, with the stored sequence). When
// the expected sequence is current, an id already stored is de-duplicated
// (JetStream's Nats-Msg-Id) and reported with its stored sequence.
func (s *EventStore) Append(ctx context.Context, connectionID string, expectedLastSeq uint64, e domain.Event) (domain.Event, error) {
	s.appends.Add(1)
	if !domain.ValidConnectionID(connectionID) {
		return domain.Event{}, fmt.Errorf("memory: invalid connection id %q", connectionID)
	}
	if err := ctx.Err(); err != nil {
		return domain.Event{}, fmt.Errorf("memory: append to %s: %w", connectionID, err)
	}
	body, err := s.prepare(connectionID, &e)
	if err != nil {
		return domain.Event{}, err
	}
	if ferr := s.failAppends.take(); ferr != nil {
		return domain.Event{}, fmt.Errorf("memory: append to %s: %w", connectionID, ferr)
	}
	s.hookMu.RLock()
	before := s.before
	s.hookMu.RUnlock()
	for _, f := range before {
		f(connectionID, expectedLastSeq, e)
	}
	if race := s.race.Swap(nil); race != nil {
		(*race)()
	}

	s.mu.Lock()
	seqs := s.bySubj[connectionID]
	var last uint64
	if len(seqs) > 0 {
		last = seqs[len(seqs)-1]
	}
	switch {
	case expectedLastSeq != last:
		if last != 0 && s.log[last-1].id == e.ID {
			e.Seq = last
			break
		}
		s.mu.Unlock()
		s.conflicts.Add(1)
		return domain.Event{}, fmt.Errorf("memory: append to %s: %w", connectionID, domain.ErrConflict)
	case s.byID[e.ID] != 0:
		e.Seq = s.byID[e.ID]
	default:
		e.Seq = uint64(len(s.log)) + 1
		s.log = append(s.log, record{seq: e.Seq, id: e.ID, conn: connectionID, data: body})
		s.bySubj[connectionID] = append(seqs, e.Seq)
		s.byID[e.ID] = e.Seq
	}
	s.mu.Unlock()

	s.hookMu.RLock()
	hooks := s.hooks
	s.hookMu.RUnlock()
	for _, h := range hooks {
		h(e)
	}
	return e, nil
}

// subject returns the connection's records in order.
func (s *EventStore) subject(connectionID string) []record {
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := s.bySubj[connectionID]
	out := make([]record, len(seqs))
	for i, seq := range seqs {
		out[i] = s.log[seq-1]
	}
	return out
}

// Load implements domain.EventStore: it folds the connection's events with
// domain.Connection.Apply. Like jsstore, an event that does not decode or
// that the transition table refuses is skipped but still advances Version.
func (s *EventStore) Load(ctx context.Context, connectionID string) (domain.Connection, error) {
	s.loads.Add(1)
	if !domain.ValidConnectionID(connectionID) {
		return domain.Connection{}, fmt.Errorf("memory: invalid connection id %q: %w", connectionID, domain.ErrNotFound)
	}
	if err := ctx.Err(); err != nil {
		return domain.Connection{}, fmt.Errorf("memory: load %s: %w", connectionID, err)
	}
	if ferr := s.failLoads.take(); ferr != nil {
		return domain.Connection{}, fmt.Errorf("memory: load %s: %w", connectionID, ferr)
	}
	var c domain.Connection
	for _, r := range s.subject(connectionID) {
		if e, err := r.event(); err == nil {
			_ = c.Apply(e) // refused: skipped, as jsstore does
		}
		c.Version = r.seq
	}
	if !c.Exists() {
		return domain.Connection{}, fmt.Errorf("memory: load %s: %w", connectionID, domain.ErrNotFound)
	}
	return c, nil
}

// History implements domain.EventStore. Events that do not decode are left
// out, as jsstore does.
func (s *EventStore) History(ctx context.Context, connectionID string) ([]domain.Event, error) {
	s.histories.Add(1)
	if !domain.ValidConnectionID(connectionID) {
		return nil, fmt.Errorf("memory: invalid connection id %q: %w", connectionID, domain.ErrNotFound)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: history %s: %w", connectionID, err)
	}
	recs := s.subject(connectionID)
	out := make([]domain.Event, 0, len(recs))
	for _, r := range recs {
		if e, err := r.event(); err == nil {
			out = append(out, e)
		}
	}
	return out, nil
}
