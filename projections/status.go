package projections

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/tokenline/tokenline/domain"
)

// Status is the durable read model of every connection: the aggregate of
// each, folded from the stream with domain.Connection.Apply (so it agrees
// with the event store's Load by construction). The HTTP API describes the
// connections it returns (adapters/httpapi/apitypes.ConnectionStatus).
//
// The stream is the source of truth and the Runner feeds it to Status in
// stream order (the confirmed state); it is idempotent by sequence. Events
// the aggregate refuses, and undecodable messages on a connection's subject
// (Skip), still advance the connection's version, as jsstore's Load does,
// so Version is the expected sequence for the next append.
//
// Read-your-own-writes: once a Runner follows a Status, Apply is for the
// events this instance appends (register it with jsstore's OnAppend). Such
// an event may arrive ahead of the stream, even before another instance's
// earlier event on the same connection; it is kept as an event "ahead" of
// the confirmed state, readers see the confirmed state with the events
// ahead applied on top, and when the stream delivers the events they are
// folded in stream order, whatever order they came in. Without a Runner,
// Apply is the stream-order path itself.
//
// Entries are copy-on-write with respect to snapshots: capture marks the
// current entries as shared and the next change to one replaces it, so a
// snapshot (of the confirmed state) is encoded without holding the lock.
type Status struct {
	mu       sync.RWMutex
	conns    map[string]*statusEntry
	gen      uint64
	followed bool // a Runner confirms events; Apply is read-your-own-writes
}

type statusEntry struct {
	c   domain.Connection // what readers see
	gen uint64            // entries with an older gen belong to a snapshot: copy first
	// confirmed is the state from the stream while events are ahead of it
	// (nil: c is confirmed); ahead are those events, by sequence.
	confirmed *domain.Connection
	ahead     []domain.Event
}

// base returns the confirmed state.
func (e *statusEntry) base() *domain.Connection {
	if e.confirmed != nil {
		return e.confirmed
	}
	return &e.c
}

// NewStatus returns an empty status projection.
func NewStatus() *Status { return &Status{conns: map[string]*statusEntry{}} }

// follow makes Apply the read-your-own-writes path (the Runner confirms).
func (s *Status) follow() {
	s.mu.Lock()
	s.followed = true
	s.mu.Unlock()
}

// Apply folds a stored event (Seq > 0) into the status. It reports whether
// the event changed what readers see: false with a nil error for an event
// already applied, false with an error for an event the aggregate refuses
// (for example a transition the table does not allow, or an event before
// connection.created). With a Runner following the status, an event that
// the confirmed state does not accept yet is kept until the stream brings
// the events before it.
func (s *Status) Apply(e domain.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.followed {
		return s.applyAheadLocked(e)
	}
	return s.applyLocked(e)
}

// applyStream is the Runner's path: e comes from the stream, in order.
func (s *Status) applyStream(e domain.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(e)
}

// applyLocked folds an event of the stream, in stream order, into the
// confirmed state (s.mu held).
func (s *Status) applyLocked(e domain.Event) (bool, error) {
	if e.Seq == 0 {
		return false, fmt.Errorf("projections: event %s has no stream sequence", e.ID)
	}
	ent := s.conns[e.ConnectionID]
	if ent == nil {
		if _, ok := e.Payload.(domain.ConnectionCreated); !ok {
			return false, fmt.Errorf("%w: %s before connection.created", domain.ErrNotFound, e.Type())
		}
		ent = &statusEntry{gen: s.gen}
		if err := ent.c.Apply(e); err != nil {
			return false, err
		}
		s.conns[e.ConnectionID] = ent
		return true, nil
	}
	if e.Seq <= ent.base().Version {
		return false, nil
	}
	ent = s.own(e.ConnectionID, ent)
	if ent.confirmed == nil {
		if err := ent.c.Apply(e); err != nil {
			ent.c.Version = e.Seq
			return false, err
		}
		return true, nil
	}
	version, events := ent.c.Version, ent.c.Events
	err := ent.confirmed.Apply(e)
	if err != nil {
		ent.confirmed.Version = e.Seq
	}
	s.confirm(ent, e.Seq)
	if err != nil {
		return false, err
	}
	return ent.c.Version != version || ent.c.Events != events, nil
}

// confirm drops the events ahead that the confirmed state reached (seq) and
// folds the rest on top of it again.
func (s *Status) confirm(ent *statusEntry, seq uint64) {
	i := 0
	for i < len(ent.ahead) && ent.ahead[i].Seq <= seq {
		i++
	}
	ent.ahead = ent.ahead[i:]
	if len(ent.ahead) == 0 {
		ent.c, ent.confirmed, ent.ahead = *ent.confirmed, nil, nil
		return
	}
	c := ent.confirmed.Clone()
	for _, a := range ent.ahead {
		_ = c.Apply(a) // one refused now waits for the events before it
	}
	ent.c = c
}

// applyAheadLocked takes an event this instance appended, possibly ahead of
// the stream (s.mu held).
func (s *Status) applyAheadLocked(e domain.Event) (bool, error) {
	if e.Seq == 0 {
		return false, fmt.Errorf("projections: event %s has no stream sequence", e.ID)
	}
	ent := s.conns[e.ConnectionID]
	if ent == nil {
		if _, ok := e.Payload.(domain.ConnectionCreated); !ok {
			// Not known yet (still catching up): the stream will bring it.
			return false, fmt.Errorf("%w: %s before connection.created", domain.ErrNotFound, e.Type())
		}
		ent = &statusEntry{gen: s.gen, confirmed: &domain.Connection{}}
		s.conns[e.ConnectionID] = ent
	} else {
		if e.Seq <= ent.base().Version {
			return false, nil
		}
		for _, a := range ent.ahead {
			if a.Seq == e.Seq {
				return false, nil
			}
		}
		ent = s.own(e.ConnectionID, ent)
	}
	if ent.confirmed == nil {
		cc := ent.c // Apply replaces slices and maps, never writes into them
		ent.confirmed = &cc
	}
	version, events := ent.c.Version, ent.c.Events
	at := len(ent.ahead)
	for at > 0 && ent.ahead[at-1].Seq > e.Seq {
		at--
	}
	ent.ahead = slices.Insert(ent.ahead, at, e)
	if at == len(ent.ahead)-1 {
		if err := ent.c.Apply(e); err != nil {
			return false, err // kept ahead: the events before it have not arrived
		}
		return true, nil
	}
	s.confirm(ent, ent.confirmed.Version) // an earlier event arrived late: fold again
	return ent.c.Version != version || ent.c.Events != events, nil
}

// own returns an entry that no snapshot shares (s.mu held).
func (s *Status) own(id string, ent *statusEntry) *statusEntry {
	if ent.gen == s.gen {
		return ent
	}
	n := &statusEntry{c: ent.c.Clone(), gen: s.gen, ahead: slices.Clone(ent.ahead)}
	if ent.confirmed != nil {
		cc := ent.confirmed.Clone()
		n.confirmed = &cc
	}
	s.conns[id] = n
	return n
}

// Skip records that the message at seq on a connection's subject could not
// be applied (it does not decode): the connection's version advances.
func (s *Status) Skip(connectionID string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.skipLocked(connectionID, seq)
}

func (s *Status) skipLocked(connectionID string, seq uint64) {
	ent := s.conns[connectionID]
	if ent == nil || seq <= ent.base().Version {
		return
	}
	ent = s.own(connectionID, ent)
	ent.base().Version = seq
	if ent.confirmed != nil {
		s.confirm(ent, seq)
	}
}

// Get returns a copy of one connection's aggregate, as readers see it (the
// same as Connection).
func (s *Status) Get(connectionID string) (domain.Connection, bool) {
	return s.Connection(connectionID)
}

// Connection returns a copy of one connection's aggregate.
func (s *Status) Connection(connectionID string) (domain.Connection, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil || !ent.c.Exists() {
		return domain.Connection{}, false
	}
	return ent.c.Clone(), true
}

// Confirmed returns the connection as the stream has confirmed it: every
// event up to its Version applied in stream order, none of this instance's
// appends that the stream has not delivered yet. The event store seeds its
// Load from it (jsstore.Config.Seed), so the aggregates are held once.
func (s *Status) Confirmed(connectionID string) (domain.Connection, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil {
		return domain.Connection{}, false
	}
	c := ent.base()
	if !c.Exists() {
		return domain.Connection{}, false
	}
	return c.Clone(), true
}

// List returns a copy of every connection's aggregate (deleted ones
// included), sorted by creation time and then id.
func (s *Status) List() []domain.Connection {
	s.mu.RLock()
	out := make([]domain.Connection, 0, len(s.conns))
	for _, ent := range s.conns {
		if ent.c.Exists() {
			out = append(out, ent.c.Clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b domain.Connection) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// Len returns the number of connections (an upper bound while events of
// new connections are ahead of the stream).
func (s *Status) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

// each calls fn with the confirmed state of every connection under the read
// lock; fn must not keep the pointer.
func (s *Status) each(fn func(c *domain.Connection)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ent := range s.conns {
		if c := ent.base(); c.Exists() {
			fn(c)
		}
	}
}

// capture returns the confirmed state of every connection for a snapshot.
// The returned aggregates are never modified afterwards (see own); the
// caller must not modify them either.
func (s *Status) capture() []*domain.Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	out := make([]*domain.Connection, 0, len(s.conns))
	for _, ent := range s.conns {
		if c := ent.base(); c.Exists() {
			out = append(out, c)
		}
	}
	return out
}

// replace swaps in the contents of o (a rebuilt or restored projection,
// all confirmed). Events this instance applied ahead of the stream are
// carried over when o has not reached them.
func (s *Status) replace(o *Status) {
	o.mu.Lock()
	conns := o.conns
	o.conns = map[string]*statusEntry{}
	o.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, ent := range conns {
		ent.gen = s.gen
	}
	for id, old := range s.conns {
		for _, a := range old.ahead {
			ent := conns[id]
			if ent == nil {
				if _, ok := a.Payload.(domain.ConnectionCreated); !ok {
					continue
				}
				ent = &statusEntry{gen: s.gen, confirmed: &domain.Connection{}}
				conns[id] = ent
			}
			if a.Seq <= ent.base().Version {
				continue
			}
			if ent.confirmed == nil {
				cc := ent.c
				ent.confirmed = &cc
			}
			ent.ahead = append(ent.ahead, a)
		}
		if ent := conns[id]; ent != nil && ent.confirmed != nil {
			s.confirm(ent, ent.confirmed.Version)
		}
	}
	s.conns = conns
}

// Each calls fn with the stream-confirmed aggregate of every connection, in
// no particular order, under the projection's read lock: fn must be quick,
// must not modify or retain c, and must not call back into the Status. It
// serves start-up seeding without copying 100k aggregates.
func (s *Status) Each(fn func(c *domain.Connection)) { s.each(fn) }
