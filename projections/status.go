package projections

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tokenline/tokenline/domain"
)

// Status is the durable read model of every connection: the aggregate of
// each, folded from the stream with domain.Connection.Apply (so it agrees
// with the event store's Load by construction); the HTTP API describes the
// connections it returns (adapters/httpapi/apitypes.ConnectionStatus). It is
// the one place in the projections that applies events: the gate (and any
// other observer, such as the lifecycle's scheduler) derives from the
// changes it reports (OnChange).
//
// The stream is the source of truth and the Runner feeds it to Status in
// stream order (the confirmed state); it is idempotent by sequence. Events
// the aggregate refuses, and undecodable messages on a connection's subject,
// still advance the connection's version, as jsstore's Load does, so
// Version is the expected sequence for the next append. An event that does
// not extend the connection's hash chain (domain.ErrChainBroken: forged,
// altered, out of order) is refused like that and counted in the
// connection's ChainBreaks: it changes nothing else, so no observer acts
// on it.
//
// Read-your-own-writes: once a Runner follows a Status, Apply is for the
// events this instance appends (register it with jsstore's OnAppend). Such
// an event may arrive ahead of the stream, even before another instance's
// earlier event on the same connection; it is kept as an event "ahead" of
// the confirmed state, readers see the confirmed state with the events
// ahead applied on top, and when the stream delivers the events they are
// folded in stream order, whatever order they came in. An event that the
// state readers see cannot take yet (it follows another instance's event
// the stream has not delivered) changes nothing until the stream brings
// that event. In the usual case, an event appended on the very state the
// stream confirmed (its chain link's previous hash is that state's head,
// so the subject's expected last sequence was that state's version), the
// acknowledgement confirms it: the stream holds it right after that
// state, as optimistic concurrency guarantees, and Apply folds it into
// the confirmed state at once; the stream's copy, when the Runner takes
// it, changes nothing, and the Runner takes the event from this instance
// instead of decoding its message (takeAcked). At most MaxAhead events are
// held ahead in all: beyond that
// (the stream has not confirmed this instance's writes for a long while)
// Apply refuses with ErrAheadFull and the event reaches readers when the
// stream delivers it. Without a Runner, Apply is the stream-order path
// itself.
//
// Entries are copy-on-write with respect to snapshots: capture marks the
// current entries as shared and the next change to one replaces it, so a
// snapshot (of the confirmed state) is encoded without holding the lock.
type Status struct {
	mu       sync.RWMutex
	conns    map[string]*statusEntry
	gen      uint64
	followed bool // a Runner confirms events; Apply is read-your-own-writes

	observers []func(before, after *domain.Connection)
	seeders   []func(conns []*domain.Connection) // per observer; nil: seeded by observers' calls
	// quiet: a Runner is catching up; stream records do not notify (the
	// catch-up ends with one notification per connection, see OnChange).
	quiet    bool
	ahead    int // events held ahead of the stream, all connections
	maxAhead int
	shared   sharedValues      // scope lists and configs, one copy of each
	before   domain.Connection // what observers are told a change started from (look)
	// aheads holds, per connection with events ahead of the stream (rare,
	// and brief), the confirmed state and those events: kept beside the
	// entries so that an entry is exactly a 512-byte size class.
	aheads map[string]*aheadState
	// acked holds the events Apply confirmed from their acknowledgement
	// (see applyAheadLocked) until the Runner takes each from the stream
	// (takeAcked) instead of decoding its message.
	acked ackedQueue

	chainBreaks atomic.Int64
}

// MaxAhead is how many of this instance's events, in all, a followed
// Status holds ahead of the stream (see Status).
const MaxAhead = 10000

// ErrAheadFull is returned by Apply when MaxAhead events are already held
// ahead of the stream: the event reaches readers when the stream delivers it.
var ErrAheadFull = errors.New("projections: too many events ahead of the stream")

// statusEntry is one connection: 504 bytes, in the 512-byte size class
// (TestStatusEntrySize). While events this instance appended are ahead of
// the stream, Status.aheads holds the confirmed state beside it (see ah);
// else c is confirmed. c.Config is always nil: cfg holds the config packed
// (config.go), and readers get it back as a map of their own.
type statusEntry struct {
	c   domain.Connection // what readers see, without its Config
	cfg string            // c's config, packed (packConfig)
	gen uint64            // entries with an older gen belong to a snapshot: copy first
}

// connection returns a deep copy of the entry's aggregate, its config as a
// map of the caller's own.
func (ent *statusEntry) connection() domain.Connection {
	c := ent.c.Clone()
	c.Config = unpackConfig(ent.cfg)
	return c
}

// aheadState is the state from the stream while events this instance
// appended are ahead of it, and those events, by sequence. It is shared
// with a snapshot exactly when its entry is (own copies both).
type aheadState struct {
	confirmed domain.Connection // without its Config, as in statusEntry
	cfg       string            // confirmed's config, packed
	events    []domain.Event
}

// ah returns the connection's events ahead of the stream, or nil (s.mu
// held).
func (s *Status) ah(id string) *aheadState {
	if len(s.aheads) == 0 {
		return nil
	}
	return s.aheads[id]
}

// setAh sets (nil: removes) the connection's events ahead (s.mu held).
func (s *Status) setAh(id string, ah *aheadState) {
	if ah == nil {
		delete(s.aheads, id)
		return
	}
	if s.aheads == nil {
		s.aheads = map[string]*aheadState{}
	}
	s.aheads[id] = ah
}

// base returns the confirmed state of id, whose entry is ent (s.mu held).
func (s *Status) base(id string, ent *statusEntry) *domain.Connection {
	if ah := s.ah(id); ah != nil {
		return &ah.confirmed
	}
	return &ent.c
}

// baseEntry returns the confirmed state of id as an entry: ent itself, or a
// copy of the state held beside it (s.mu held).
func (s *Status) baseEntry(id string, ent *statusEntry) *statusEntry {
	if ah := s.ah(id); ah != nil {
		return &statusEntry{c: ah.confirmed, cfg: ah.cfg, gen: ent.gen}
	}
	return ent
}

// ahead returns the events of id held ahead of the stream (s.mu held).
func (s *Status) aheadOf(id string) []domain.Event {
	if ah := s.ah(id); ah != nil {
		return ah.events
	}
	return nil
}

// NewStatus returns an empty status projection.
func NewStatus() *Status { return &Status{conns: map[string]*statusEntry{}, maxAhead: MaxAhead} }

// OnChange registers fn to be told of every change of what readers see:
// before is the connection as readers saw it (nil: the connection was
// unknown, or this is the start-up notification), after as they see it now
// (never nil). Register observers before the Runner starts.
//
// When it fires, synchronously and in the order of the changes (under the
// projection's lock: the last change an observer was told of is what
// readers see). An own event applied ahead of another instance's earlier
// one that the stream has not delivered yet shows a state folded without
// it; when the stream brings it, the events are folded again in stream
// order and the observer is told of the result, whose version may then be
// lower than the one it was told before.
//
//   - for Apply (this instance's appends, from jsstore's OnAppend hook),
//     before Apply returns, and so before the event store's Append returns,
//     whenever the event changed what readers see; always, including while
//     a Runner catches up;
//   - for the stream records a Runner applies once it has caught up, when
//     they change what readers see (a record confirming an own event that
//     Apply already showed changes nothing and does not fire);
//   - at start-up: while a Runner restores its snapshot and replays the
//     stream's tail, the records it applies do not fire; when the catch-up
//     is complete, just before the Runner becomes ready, fn is called once
//     for every connection with before == nil and after the state readers
//     see then. That call seeds an observer: it needs no other start-up
//     pass. After a snapshot, a short tail (fewer records than half the
//     connections) is replayed while the observers are seeded from the
//     snapshot: records applied before that call are in the state it
//     gives, those after it fire as changes; the Runner is ready once
//     both are done.
//
// Without a Runner every change fires. fn must be fast, must not retain or
// modify the pointers it is given, and must not call back into the Status.
// The connections fn is given have no Config (the projection holds it
// packed, see statusEntry): Connection and List give it.
func (s *Status) OnChange(fn func(before, after *domain.Connection)) {
	s.OnChangeSeeded(fn, nil)
}

// OnChangeSeeded is OnChange for an observer that is seeded at once: at
// the end of the catch-up, instead of one call of fn per connection, seed
// is called once with every connection that fn would have been told of
// (the same pointers, valid only during the call, in the order fn would
// have been called). seed must leave the observer as those calls would,
// and must not modify conns; it runs on a goroutine of its own, alongside
// the other observers' seeding (under the projection's lock, which the
// announcement holds until every seed returned). nil seed is OnChange.
func (s *Status) OnChangeSeeded(fn func(before, after *domain.Connection), seed func(conns []*domain.Connection)) {
	s.mu.Lock()
	s.observers = append(s.observers, fn)
	s.seeders = append(s.seeders, seed)
	s.mu.Unlock()
}

// follow makes Apply the read-your-own-writes path (the Runner confirms)
// and stops notifying stream records until announce.
func (s *Status) follow() {
	s.mu.Lock()
	s.followed, s.quiet = true, true
	s.mu.Unlock()
}

// announce ends the catch-up: every observer is told of every connection
// (before == nil), and stream records notify from now on.
func (s *Status) announce() { s.announceAfter(-1) }

// announceAfter is announce at the end of a catch-up that applied records
// stream records (negative: unknown). The entries are compacted first
// unless the catch-up applied fewer records than half the connections (a
// restored snapshot is compact already, and a short tail leaves little
// garbage among the entries).
func (s *Status) announceAfter(records int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quiet = false
	if records < 0 || records >= len(s.conns)/2 {
		s.compact()
	}
	conns := make([]*domain.Connection, 0, len(s.conns))
	for _, ent := range s.conns {
		if ent.c.Exists() {
			conns = append(conns, &ent.c)
		}
	}
	// The observers seeded at once run side by side (they share nothing),
	// while this goroutine tells the others of each connection.
	var wg sync.WaitGroup
	for _, seed := range s.seeders {
		if seed != nil {
			wg.Go(func() { seed(conns) })
		}
	}
	for _, c := range conns {
		for i, fn := range s.observers {
			if s.seeders[i] == nil {
				fn(nil, c)
			}
		}
	}
	wg.Wait()
}

// size returns how many entries the projection holds.
func (s *Status) size() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

// seen is what readers saw of a connection before a change.
type seen struct {
	known   bool
	version uint64
	events  int
}

// look records what readers see of id before a change (s.mu held): its
// version and number of events, and, when observers will be told (not
// quiet), a copy of the aggregate in s.before, which is reused so that a
// change allocates nothing for it.
func (s *Status) look(id string, quiet bool) seen {
	ent := s.conns[id]
	if ent == nil || !ent.c.Exists() {
		return seen{}
	}
	if !quiet && len(s.observers) > 0 {
		s.before = ent.c // Apply replaces slices and maps, never writes into them
	}
	return seen{true, ent.c.Version, ent.c.Events}
}

// notify tells the observers of a change of id from was (s.mu held). It
// reports whether what readers see changed: every change moves the version
// or the number of events applied.
func (s *Status) notify(id string, was seen, quiet bool) bool {
	ent := s.conns[id]
	if ent == nil || !ent.c.Exists() {
		return false
	}
	if was.known && was.version == ent.c.Version && was.events == ent.c.Events {
		return false
	}
	if !quiet && len(s.observers) > 0 {
		var b *domain.Connection
		if was.known {
			b = &s.before
		}
		for _, fn := range s.observers {
			fn(b, &ent.c)
		}
		s.before = domain.Connection{}
	}
	return true
}

// Apply folds a stored event (Seq > 0) into the status. It reports whether
// the event changed what readers see: false with a nil error for an event
// already applied, false with an error for an event the aggregate refuses
// (for example a transition the table does not allow, or an event before
// connection.created). With a Runner following the status, an event that
// the state readers see does not accept yet is kept until the stream brings
// the events before it, and ErrAheadFull says that too many are kept.
func (s *Status) Apply(e domain.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.look(e.ConnectionID, false)
	var err error
	if s.followed {
		err = s.applyAheadLocked(e)
	} else {
		err = s.applyLocked(e)
	}
	changed := s.notify(e.ConnectionID, was, false)
	return changed && err == nil, err
}

// applyStream is the Runner's path: e comes from the stream, in order.
// While a Runner catches up (quiet) it reports no change, only the error.
func (s *Status) applyStream(e domain.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ent := s.conns[e.ConnectionID]; ent != nil && e.Seq != 0 && e.Seq <= s.base(e.ConnectionID, ent).Version {
		return false, nil // folded already: the acknowledgement confirmed it
	}
	if s.quiet {
		// Catching up: nobody is told, and the Runner does not ask what
		// changed; one map lookup per record instead of three.
		return false, s.applyLocked(e)
	}
	was := s.look(e.ConnectionID, s.quiet)
	err := s.applyLocked(e)
	changed := s.notify(e.ConnectionID, was, s.quiet)
	return changed && err == nil, err
}

// applyLocked folds an event of the stream, in stream order, into the
// confirmed state (s.mu held).
func (s *Status) applyLocked(e domain.Event) error {
	if e.Seq == 0 {
		return fmt.Errorf("projections: event %s has no stream sequence", e.ID)
	}
	ent := s.conns[e.ConnectionID]
	if ent == nil {
		if _, ok := e.Payload.(domain.ConnectionCreated); !ok {
			return fmt.Errorf("%w: %s before connection.created", domain.ErrNotFound, e.Type())
		}
		ent = &statusEntry{gen: s.gen}
		if err := s.applyTo(&ent.c, &ent.cfg, e); err != nil {
			return err
		}
		s.conns[e.ConnectionID] = ent
		return nil
	}
	if e.Seq <= s.base(e.ConnectionID, ent).Version {
		return nil
	}
	ent = s.own(e.ConnectionID, ent)
	ah := s.ah(e.ConnectionID)
	if ah == nil {
		if err := s.applyTo(&ent.c, &ent.cfg, e); err != nil {
			s.refused(&ent.c, e.Seq, err)
			return err
		}
		return nil
	}
	err := s.applyTo(&ah.confirmed, &ah.cfg, e)
	if err != nil {
		s.refused(&ah.confirmed, e.Seq, err)
	}
	s.confirm(e.ConnectionID, ent, e.Seq)
	return err
}

// refused records a stream event the aggregate refused: the version
// advances; one that breaks the hash chain is counted (ChainBreaks: the
// API shows the connection as flagged).
func (s *Status) refused(c *domain.Connection, seq uint64, err error) {
	c.Version = seq
	if errors.Is(err, domain.ErrChainBroken) {
		c.ChainBreaks++
		s.chainBreaks.Add(1)
	}
}

// ChainBreaks counts the stream events this projection refused because
// they do not extend their connection's hash chain (a metric).
func (s *Status) ChainBreaks() int64 { return s.chainBreaks.Load() }

// applyOwn applies an event this instance appended on top of a state that
// may lack another instance's earlier event the stream has not delivered:
// its chain link is this instance's own (it is not read from the stream,
// so it cannot be forged) and is checked when the stream delivers it.
func (s *Status) applyOwn(c *domain.Connection, cfg *string, e domain.Event) error {
	if e.Link.Chained {
		e.Link.Prev = c.Head.Hash
	}
	return s.applyTo(c, cfg, e)
}

// applyTo folds e into c, whose config is *cfg (packed; c.Config is nil),
// and then shares the scope lists and config the event gave it with every
// other connection holding equal ones (s.mu held). Sharing is safe because
// Apply replaces slices and maps and never writes into them, and every
// reader gets a deep copy (Clone, unpackConfig).
func (s *Status) applyTo(c *domain.Connection, cfg *string, e domain.Event) error {
	if err := c.Apply(e); err != nil {
		return err
	}
	switch e.Payload.(type) {
	case domain.ConnectionCreated, domain.ConnectionUpdated:
		c.Scopes = s.shared.list(c.Scopes)
		if c.Config != nil { // given by the event (an update without config keeps it)
			*cfg = s.shared.config(c.Config)
		} else if _, created := e.Payload.(domain.ConnectionCreated); created {
			*cfg = ""
		}
		c.Config = nil
	case domain.AuthorisationCompleted, domain.RefreshSucceeded:
		c.Tokens.Scopes = s.shared.list(c.Tokens.Scopes)
	}
	return nil
}

// confirm drops the events ahead that the confirmed state reached (seq) and
// folds the rest on top of it again.
func (s *Status) confirm(id string, ent *statusEntry, seq uint64) {
	ah := s.ah(id)
	i := 0
	for i < len(ah.events) && ah.events[i].Seq <= seq {
		i++
	}
	s.ahead -= i
	ah.events = ah.events[i:]
	if len(ah.events) == 0 {
		c := ah.confirmed
		keepStrings(&c, &ent.c)
		ent.c, ent.cfg = c, ah.cfg
		s.setAh(id, nil)
		return
	}
	c, cfg := ah.confirmed, ah.cfg // Apply replaces slices and maps, never writes into them
	for _, a := range ah.events {
		_ = s.applyOwn(&c, &cfg, a) // one refused now waits for the events before it
	}
	keepStrings(&c, &ent.c)
	ent.c, ent.cfg = c, cfg
}

// keepStrings makes c, a state folded from the stream's copies of events
// readers saw already, hold the strings of was, what readers saw, where
// they are equal: the observers (the gate, the scheduler) hold those, so
// the connection keeps one copy of each instead of two.
func keepStrings(c, was *domain.Connection) {
	for _, f := range [...]struct{ dst, src *string }{
		{&c.ID, &was.ID},
		{&c.Tokens.AccessTokenFP, &was.Tokens.AccessTokenFP},
		{&c.Tokens.RefreshTokenFP, &was.Tokens.RefreshTokenFP},
		{&c.AttemptID, &was.AttemptID},
		{&c.LeaseID, &was.LeaseID},
	} {
		if *f.dst == *f.src {
			*f.dst = *f.src
		}
	}
}

// applyAheadLocked takes an event this instance appended, possibly ahead of
// the stream (s.mu held).
func (s *Status) applyAheadLocked(e domain.Event) error {
	if e.Seq == 0 {
		return fmt.Errorf("projections: event %s has no stream sequence", e.ID)
	}
	ent := s.conns[e.ConnectionID]
	if ent != nil {
		if e.Seq <= s.base(e.ConnectionID, ent).Version {
			return nil
		}
		if slices.ContainsFunc(s.aheadOf(e.ConnectionID), func(a domain.Event) bool { return a.Seq == e.Seq }) {
			return nil
		}
	}
	if ent != nil && !s.quiet && s.ah(e.ConnectionID) == nil && ackConfirms(&ent.c, e) {
		// Appended on the confirmed state itself: the acknowledgement
		// confirms it (see Status).
		own := s.own(e.ConnectionID, ent)
		if err := s.applyTo(&own.c, &own.cfg, e); err == nil {
			s.acked.push(e)
			return nil
		}
		// Refused by the aggregate (it should not be): kept ahead as any
		// other, and judged when the stream delivers it.
	}
	if s.ahead >= s.maxAhead {
		return ErrAheadFull
	}
	if ent == nil {
		if _, ok := e.Payload.(domain.ConnectionCreated); !ok {
			// Not known yet (still catching up): the stream will bring it.
			return fmt.Errorf("%w: %s before connection.created", domain.ErrNotFound, e.Type())
		}
		ent = &statusEntry{gen: s.gen}
		s.conns[e.ConnectionID] = ent
		s.setAh(e.ConnectionID, &aheadState{})
	} else {
		ent = s.own(e.ConnectionID, ent)
	}
	ah := s.ah(e.ConnectionID)
	if ah == nil {
		ah = &aheadState{confirmed: ent.c, cfg: ent.cfg} // Apply replaces slices and maps, never writes into them
		s.setAh(e.ConnectionID, ah)
	}
	at := len(ah.events)
	for at > 0 && ah.events[at-1].Seq > e.Seq {
		at--
	}
	ah.events = slices.Insert(ah.events, at, e)
	s.ahead++
	if at == len(ah.events)-1 {
		// Refused: kept ahead, the events before it have not arrived.
		return s.applyOwn(&ent.c, &ent.cfg, e)
	}
	s.confirm(e.ConnectionID, ent, ah.confirmed.Version) // an earlier event arrived late: fold again
	return nil
}

// ackConfirms reports whether an event this instance appended, now
// acknowledged, was appended on c itself: it is chained, and its previous
// hash is c's head (the hash of the message at c.Version, which the
// append gave as the subject's expected last sequence), so the stream
// holds it right after c.
func ackConfirms(c *domain.Connection, e domain.Event) bool {
	return e.Link.Chained && c.Exists() && e.Seq > c.Version && c.Head.Hash != [32]byte{} && e.Link.Prev == c.Head.Hash
}

// takeAcked returns the event this instance appended at stream sequence
// seq if Apply confirmed it from its acknowledgement and the Runner has
// not taken it yet, and forgets it and every earlier one (the Runner takes
// the stream in order). The event is the one whose bytes the stream holds
// at seq: the Runner uses it instead of decoding the message.
func (s *Status) takeAcked(seq uint64) (domain.Event, bool) {
	return s.acked.take(seq)
}

// ackedQueue is Status.acked: events by sequence, at most maxAcked.
type ackedQueue struct {
	mu     sync.Mutex
	events []domain.Event // events[head:] in sequence order
	head   int
}

// maxAcked bounds the events held for the Runner: beyond it (the Runner
// is far behind, or stopped) an event is not kept and the Runner decodes
// its message.
const maxAcked = 4096

func (q *ackedQueue) push(e domain.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events)-q.head >= maxAcked {
		return
	}
	if q.head > 0 && q.head >= len(q.events)/2 {
		n := copy(q.events, q.events[q.head:])
		clear(q.events[n:])
		q.events, q.head = q.events[:n], 0
	}
	// Appends are acknowledged in about their sequence order: the place
	// is found from the end.
	i := len(q.events)
	for i > q.head && q.events[i-1].Seq > e.Seq {
		i--
	}
	q.events = slices.Insert(q.events, i, e)
}

func (q *ackedQueue) take(seq uint64) (domain.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head < len(q.events) && q.events[q.head].Seq < seq {
		q.events[q.head] = domain.Event{}
		q.head++
	}
	if q.head == len(q.events) || q.events[q.head].Seq != seq {
		return domain.Event{}, false
	}
	e := q.events[q.head]
	q.events[q.head] = domain.Event{}
	q.head++
	return e, true
}

// drain removes and returns every event held.
func (q *ackedQueue) drain() []domain.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := slices.Clone(q.events[q.head:])
	clear(q.events)
	q.events, q.head = q.events[:0], 0
	return out
}

// own returns an entry that no snapshot shares (s.mu held).
func (s *Status) own(id string, ent *statusEntry) *statusEntry {
	if ent.gen == s.gen {
		return ent
	}
	// A shallow copy: Apply replaces slices and maps, never writes into
	// them, so the snapshot's copy cannot change through the new one.
	n := &statusEntry{c: ent.c, cfg: ent.cfg, gen: s.gen}
	if ah := s.ah(id); ah != nil {
		s.setAh(id, &aheadState{confirmed: ah.confirmed, cfg: ah.cfg, events: slices.Clone(ah.events)})
	}
	s.conns[id] = n
	return n
}

// compact allocates every connection's entry and unique strings afresh,
// one after the other (s.mu held). Folding a stream leaves the live
// aggregates scattered among the garbage of the events that built them
// (superseded fingerprints, decoded payloads), so the heap in use stays
// well above the live heap; after this pass the old spans hold nothing
// and are returned. The catch-up calls it once, before the observers are
// seeded (announce). Shared strings (providers, scopes, reasons, codes)
// stay shared.
func (s *Status) compact() {
	conns := make(map[string]*statusEntry, len(s.conns))
	var aheads map[string]*aheadState
	for key, ent := range s.conns {
		n := &statusEntry{c: ent.c, cfg: ent.cfg, gen: s.gen}
		id := strings.Clone(key)
		rehome(&n.c, id)
		if ah := s.ah(key); ah != nil {
			nah := &aheadState{confirmed: ah.confirmed, cfg: ah.cfg, events: slices.Clone(ah.events)}
			rehome(&nah.confirmed, id)
			if aheads == nil {
				aheads = map[string]*aheadState{}
			}
			aheads[id] = nah
		}
		conns[id] = n
	}
	s.conns, s.aheads = conns, aheads
}

// rehome gives c fresh copies of its unique strings, id as its ID.
func rehome(c *domain.Connection, id string) {
	if c.ID != "" {
		c.ID = id
	}
	c.Tokens.AccessTokenFP = strings.Clone(c.Tokens.AccessTokenFP)
	c.Tokens.RefreshTokenFP = strings.Clone(c.Tokens.RefreshTokenFP)
	c.AttemptID = strings.Clone(c.AttemptID)
	c.LeaseID = strings.Clone(c.LeaseID)
}

// skip records that the message at seq on a connection's subject could not
// be applied (it does not decode): the connection's version advances.
func (s *Status) skip(connectionID string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.look(connectionID, s.quiet)
	s.skipLocked(connectionID, seq)
	s.notify(connectionID, was, s.quiet)
}

func (s *Status) skipLocked(connectionID string, seq uint64) {
	ent := s.conns[connectionID]
	if ent == nil || seq <= s.base(connectionID, ent).Version {
		return
	}
	ent = s.own(connectionID, ent)
	s.base(connectionID, ent).Version = seq
	if s.ah(connectionID) != nil {
		s.confirm(connectionID, ent, seq)
	}
}

// Connection returns a copy of one connection's aggregate.
func (s *Status) Connection(connectionID string) (domain.Connection, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil || !ent.c.Exists() {
		return domain.Connection{}, false
	}
	return ent.connection(), true
}

// Confirmed returns the connection as the stream has confirmed it: every
// event up to its Version applied in stream order, none of this instance's
// appends held ahead of the stream (an append on the confirmed state is
// confirmed by its acknowledgement: see Status). The event store seeds its
// Load from it (jsstore.Config.Seed), so the aggregates are held once.
func (s *Status) Confirmed(connectionID string) (domain.Connection, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil {
		return domain.Connection{}, false
	}
	if ah := s.ah(connectionID); ah != nil {
		if !ah.confirmed.Exists() {
			return domain.Connection{}, false
		}
		c := ah.confirmed.Clone()
		c.Config = unpackConfig(ah.cfg)
		return c, true
	}
	if !ent.c.Exists() {
		return domain.Connection{}, false
	}
	return ent.connection(), true
}

// List returns a copy of every connection's aggregate (deleted ones
// included), sorted by creation time and then id.
func (s *Status) List() []domain.Connection {
	s.mu.RLock()
	out := make([]domain.Connection, 0, len(s.conns))
	for _, ent := range s.conns {
		if ent.c.Exists() {
			out = append(out, ent.connection())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b domain.Connection) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// capture returns the confirmed state of every connection for a snapshot.
// The returned entries are never modified afterwards (see own); the
// caller must not modify them either.
func (s *Status) capture() []*statusEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	out := make([]*statusEntry, 0, len(s.conns))
	for id, ent := range s.conns {
		if b := s.baseEntry(id, ent); b.c.Exists() {
			out = append(out, b)
		}
	}
	return out
}

// replace swaps in the contents of o (a restored projection, all
// confirmed), as the Runner does before its catch-up (observers hear of it
// when the catch-up ends). Events this instance applied ahead of the
// stream are carried over when o has not reached them.
func (s *Status) replace(o *Status) {
	o.mu.Lock()
	conns, restored := o.conns, o.aheads // a restored projection holds none ahead
	o.conns, o.aheads = map[string]*statusEntry{}, nil
	o.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, ent := range conns {
		ent.gen = s.gen
	}
	old := s.aheads
	// Events the acknowledgement confirmed and the stream has not
	// delivered yet are re-applied on the new state as the events ahead
	// are: the Runner takes the stream again from the new state's
	// position.
	if acked := s.acked.drain(); len(acked) > 0 {
		merged := make(map[string]*aheadState, len(old)+len(acked))
		for id, ah := range old {
			merged[id] = &aheadState{events: slices.Clone(ah.events)}
		}
		for _, a := range acked {
			ah := merged[a.ConnectionID]
			if ah == nil {
				ah = &aheadState{}
				merged[a.ConnectionID] = ah
			}
			ah.events = append(ah.events, a)
		}
		for _, ah := range merged {
			slices.SortFunc(ah.events, func(a, b domain.Event) int { return cmp.Compare(a.Seq, b.Seq) })
		}
		old = merged
	}
	s.aheads = restored
	for id, oldAh := range old {
		for _, a := range oldAh.events {
			ent := conns[id]
			if ent == nil {
				if _, ok := a.Payload.(domain.ConnectionCreated); !ok {
					continue
				}
				ent = &statusEntry{gen: s.gen}
				conns[id] = ent
				s.setAh(id, &aheadState{})
			}
			if a.Seq <= s.base(id, ent).Version {
				continue
			}
			ah := s.ah(id)
			if ah == nil {
				ah = &aheadState{confirmed: ent.c, cfg: ent.cfg}
				s.setAh(id, ah)
			}
			ah.events = append(ah.events, a)
		}
		if ent, ah := conns[id], s.ah(id); ent != nil && ah != nil {
			s.confirm(id, ent, ah.confirmed.Version)
		}
	}
	s.conns = conns
	s.shared = o.shared
	s.ahead = 0
	for _, ah := range s.aheads {
		s.ahead += len(ah.events)
	}
}

// sharedValues keeps one copy of each distinct scope list and packed
// config the connections hold (most connections of a provider have the
// same), at most maxShared of each; the values are never written into.
type sharedValues struct {
	lists   map[string][]string
	configs map[string]string // packed config: the same string
	key     []byte
	keys    []string
}

const maxShared = 1 << 16

func (sv *sharedValues) appendStr(s string) {
	sv.key = binary.AppendUvarint(sv.key, uint64(len(s)))
	sv.key = append(sv.key, s...)
}

// list returns the shared copy of v (nil stays nil).
func (sv *sharedValues) list(v []string) []string {
	if v == nil {
		return nil
	}
	sv.key = sv.key[:0]
	for _, s := range v {
		sv.appendStr(s)
	}
	if w, ok := sv.lists[string(sv.key)]; ok {
		return w
	}
	if len(sv.lists) >= maxShared {
		return v
	}
	if sv.lists == nil {
		sv.lists = map[string][]string{}
	}
	w := slices.Clip(slices.Clone(v))
	sv.lists[string(sv.key)] = w
	return w
}

// config returns m packed (packConfig), the shared copy of an equal
// config when there is one ("" for nil).
func (sv *sharedValues) config(m map[string]string) string {
	if m == nil {
		return ""
	}
	sv.key, sv.keys = packConfig(sv.key[:0], sv.keys, m)
	if w, ok := sv.configs[string(sv.key)]; ok {
		return w
	}
	w := string(sv.key)
	if len(sv.configs) < maxShared {
		if sv.configs == nil {
			sv.configs = map[string]string{}
		}
		sv.configs[w] = w
	}
	return w
}
