package projections

import (
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// DefaultExpiryMargin is how long before its recorded expiry an access token
// stops being handed out (as golang.org/x/oauth2 does with its expiry delta).
const DefaultExpiryMargin = 10 * time.Second

// GateOptions configures a Gate.
type GateOptions struct {
	// ExpiryMargin: a token is refused this long before its recorded expiry.
	// Default DefaultExpiryMargin; it must stay well above ClockResolution.
	ExpiryMargin time.Duration
	// Now replaces the coarse process clock (tests). It is called on every
	// Check, so it makes Check slower.
	Now func() time.Time
	// TokenNeeded, if set, is called when a connection becomes usable (active)
	// with an access token the gate does not hold: typically because another
	// instance refreshed it, so the token is in the vault but not in this
	// process. It is called synchronously from Apply, SetToken or Seed (that
	// is, possibly from jsstore's OnAppend hook or the Runner), after the gate
	// was updated, once per new fingerprint. It must not block and must not
	// call back into the store: hand the id to a loader goroutine, which reads
	// the vault and calls SetToken. Missing lists the same connections.
	TokenNeeded func(connectionID, accessTokenFP string)
}

// Gate answers, on every outbound API call, "may this connection be used now,
// and with which access token?". It is a projection of the event stream plus
// the access tokens the lifecycle service hands it (SetToken): tokens never
// travel in events.
//
// # Hot path
//
// Check takes no lock, writes no shared memory and allocates nothing when
// the gate is open. The gate is an open-addressing hash table published
// behind an atomic.Pointer: each slot holds the 64-bit hash of a connection
// id and an atomic.Pointer to the connection's current view, an immutable
// struct that also carries the id inline (to confirm the match without
// chasing another pointer), the token, its expiry and a preallocated
// *domain.GateError. A reader hashes the id, loads the table, probes (one
// slot, almost always) and loads the view: two dependent memory accesses,
// the least a lookup by string can do, and no reader counter to contend on
// (an RWMutex's reader count is a cache line written by every reader).
// Writers (events, SetToken, Close) are rare: they serialise on one mutex,
// build a new view and store it in the slot; adding a connection fills an
// empty slot (view first, then hash), and the table is copied only to grow
// it (load factor ½). A refusal of a known connection allocates nothing
// either; only an unknown connection allocates its error. Callers must treat
// returned errors as read-only.
//
// Time comes from a coarse clock (see ClockResolution and ExpiryMargin).
//
// # Applying events
//
// Apply folds an event into the connection's entry. The entry keeps each
// field the gate needs (state, reason, access-token fingerprint and expiry)
// as a register stamped with the stream sequence of the event that last set
// it; an event updates a register only if its sequence is newer. Which field
// an event sets, and to what, depends on the event alone (see destinationOf,
// derived from the transition table). Applying an event twice therefore
// changes nothing, and events applied out of order (the OnAppend hook
// delivers this instance's event N+1 before the stream delivers another
// instance's event N) give the same entry as in-order application. Events
// with Seq 0 (not stored) are ignored.
//
// The gate is open only when the connection is active, was not closed by
// Close since its last event, and the gate holds the access token whose
// fingerprint equals the one recorded by the latest token-bearing event, and
// that token's expiry (minus the margin) has not passed.
type Gate struct {
	// Read by every Check; written only when the table grows.
	tab    atomic.Pointer[gateTable]
	seed   maphash.Seed
	margin int64
	now    func() time.Time
	_      [64]byte // keep the writers' fields off the readers' cache line

	mu      sync.Mutex // serialises writers
	maxSeen uint64     // highest sequence applied or seeded (mu)
	needed  func(connectionID, accessTokenFP string)
}

type gateTable struct {
	mask  uint64
	slots []gateSlot
	n     int // used slots (writers only)
}

type gateSlot struct {
	h atomic.Uint64 // hash of the id, with the low bit set; 0: empty
	v atomic.Pointer[gateView]
}

// gateInlineID is how many bytes of the id a view keeps inline (a UUID).
const gateInlineID = 36

// gateView is what Check reads: small (80 bytes) so that 100k of them stay
// cache-friendly, and immutable once published.
type gateView struct {
	token    string            // non-empty: open until expires
	expires  int64             // Unix ns: expiry − margin, or noExpiry
	err      *domain.GateError // the refusal (token_expired for an open view)
	st       *gateState        // what the view was derived from (writers)
	idLen    int32             // len(id); the bytes are in idInline when they fit
	idInline [gateInlineID]byte
}

func (v *gateView) is(id string) bool {
	if len(id) != int(v.idLen) {
		return false
	}
	if len(id) <= gateInlineID {
		return string(v.idInline[:len(id)]) == id
	}
	return v.st.id == id
}

// gateState is the gate's record of one connection, immutable once
// published: registers, each with the sequence of the event that set it,
// the Close flag and the token handed over by SetToken.
type gateState struct {
	id                  string
	state               domain.State
	reason              domain.Reason
	fp                  string // access-token fingerprint of the latest token event
	expiresAt           int64  // recorded expiry (Unix ns) or noExpiry
	stateSeq, reasonSeq uint64
	tokSeq, maxSeq      uint64

	closed      bool // Close was called and no newer event arrived since
	closedAt    uint64
	closeReason domain.Reason

	loadedFP, loaded string

	err domain.GateError // derived
}

// NewGate returns an empty gate.
func NewGate(opts GateOptions) *Gate {
	if opts.ExpiryMargin <= 0 {
		opts.ExpiryMargin = DefaultExpiryMargin
	}
	if opts.Now == nil {
		startCoarseClock()
	}
	g := &Gate{seed: maphash.MakeSeed(), margin: int64(opts.ExpiryMargin), now: opts.Now, needed: opts.TokenNeeded}
	g.tab.Store(&gateTable{mask: 63, slots: make([]gateSlot, 64)})
	return g
}

func (g *Gate) hash(id string) uint64 { return maphash.String(g.seed, id) | 1 }

// lookup returns the slot of id in t, or nil.
func (t *gateTable) lookup(h uint64, id string) *gateSlot {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		switch s.h.Load() {
		case h:
			if s.v.Load().is(id) {
				return s
			}
		case 0:
			return nil
		}
	}
}

// insert puts a view for a new id into t (g.mu held, room checked).
func (t *gateTable) insert(h uint64, v *gateView) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.h.Load() == 0 {
			s.v.Store(v)
			s.h.Store(h) // publish after the view
			t.n++
			return
		}
	}
}

// reserve makes room for more new connections (g.mu held): the table is
// copied into one twice as large (or more) when it would pass half full.
func (g *Gate) reserve(more int) *gateTable {
	t := g.tab.Load()
	if (t.n+more)*2 <= len(t.slots) {
		return t
	}
	size := len(t.slots)
	for (t.n+more)*2 > size {
		size *= 2
	}
	nt := &gateTable{mask: uint64(size - 1), slots: make([]gateSlot, size)}
	for i := range t.slots {
		if h := t.slots[i].h.Load(); h != 0 {
			nt.insert(h, t.slots[i].v.Load())
		}
	}
	g.tab.Store(nt)
	return nt
}

// view returns the current view of a connection, or nil.
func (g *Gate) view(id string) *gateView {
	if s := g.tab.Load().lookup(g.hash(id), id); s != nil {
		return s.v.Load()
	}
	return nil
}

// each calls fn with every connection's state (immutable).
func (g *Gate) each(fn func(s *gateState)) {
	t := g.tab.Load()
	for i := range t.slots {
		if t.slots[i].h.Load() != 0 {
			fn(t.slots[i].v.Load().st)
		}
	}
}

func (g *Gate) nowNanos() int64 {
	if g.now != nil {
		return g.now().UnixNano()
	}
	return coarseNow()
}

// Check returns the access token to call the API with for connectionID, or a
// *domain.GateError (errors.Is(err, domain.ErrUnauthenticated)) saying why the
// connection may not be used now. The returned error must not be modified.
func (g *Gate) Check(connectionID string) (accessToken string, err error) {
	h := g.hash(connectionID)
	t := g.tab.Load()
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		sh := s.h.Load()
		if sh == h {
			if v := s.v.Load(); v.is(connectionID) {
				if v.token != "" && g.nowNanos() < v.expires {
					return v.token, nil
				}
				return "", v.err
			}
		} else if sh == 0 {
			return "", &domain.GateError{ConnectionID: connectionID, Detail: domain.DetailUnknownConnection}
		}
	}
}

// Apply folds one stored event into the gate (see the type documentation).
// It is safe for concurrent use; register it with jsstore's OnAppend so this
// instance's own decisions reach the gate before Append returns.
func (g *Gate) Apply(e domain.Event) {
	if e.Seq == 0 || e.Payload == nil || e.ConnectionID == "" {
		return
	}
	g.update(e.ConnectionID, true, func(s *gateState) bool {
		g.maxSeen = max(g.maxSeen, e.Seq) // g.mu is held
		return s.apply(e)
	})
}

// ErrFingerprintMismatch is returned by SetToken when the token does not
// have the fingerprint it is handed over with.
var ErrFingerprintMismatch = errors.New("projections: access token does not match its fingerprint")

// SetToken hands the gate the access token whose fingerprint is
// accessTokenFP (as domain.Fingerprint computes it). The gate uses it only
// while that fingerprint is the one recorded by the connection's latest
// token-bearing event, so a stale token is never handed out; a token set
// ahead of its event (the vault is written before the event is appended)
// waits for it. The token is dropped from memory once the connection is
// unauthenticated or reauthorising with it.
func (g *Gate) SetToken(connectionID, accessTokenFP, accessToken string) error {
	if accessToken == "" || domain.Fingerprint(accessToken) != accessTokenFP {
		return ErrFingerprintMismatch
	}
	g.update(connectionID, true, func(s *gateState) bool {
		if s.loadedFP == accessTokenFP && s.loaded == accessToken {
			return false
		}
		s.loadedFP, s.loaded = accessTokenFP, accessToken
		return true
	})
	return nil
}

// Close closes the gate of a connection at once, before the event that makes
// it unusable is appended: the lifecycle calls it ahead of a terminal event so
// that no call slips through after tokenline decided the connection is dead.
// Check then reports it unauthenticated with reason. The next event, that is
// an event newer than every event the gate had seen when Close was called
// (the terminal event itself, or another instance's), re-derives the entry
// from the events; older events arriving late and Seed do not reopen it.
// Reopen undoes Close if the terminal event could not be appended.
//
// The lifecycle knows the version of the aggregate it decided against and
// should pass it with CloseAfter: on an instance still starting, whose gate
// has not been seeded yet, Close alone cannot tell the events the decision
// saw from newer ones.
func (g *Gate) Close(connectionID string, reason domain.Reason) {
	g.CloseAfter(connectionID, reason, 0)
}

// CloseAfter is Close for a decision taken against the connection's
// aggregate at version: only an event with a greater sequence re-derives the
// entry.
func (g *Gate) CloseAfter(connectionID string, reason domain.Reason, version uint64) {
	g.update(connectionID, true, func(s *gateState) bool {
		at := max(g.maxSeen, s.maxSeq, version) // g.mu is held
		if s.closed && s.closeReason == reason && s.closedAt == at {
			return false
		}
		s.closed, s.closedAt, s.closeReason = true, at, reason
		return true
	})
}

// Reopen clears a Close that no event has superseded.
func (g *Gate) Reopen(connectionID string) {
	g.update(connectionID, false, func(s *gateState) bool {
		if !s.closed {
			return false
		}
		s.closed, s.closedAt, s.closeReason = false, 0, domain.ReasonNone
		return true
	})
}

// Missing lists, sorted, the active connections whose current access token
// the gate does not hold (token_not_loaded): an instance loads them from the
// vault and calls SetToken (see GateOptions.TokenNeeded for the push form).
func (g *Gate) Missing() []string {
	var out []string
	g.each(func(s *gateState) {
		if s.needsToken() {
			out = append(out, s.id)
		}
	})
	slices.Sort(out)
	return out
}

// Len returns how many connections the gate knows.
func (g *Gate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tab.Load().n
}

func (v *gateState) needsToken() bool {
	return v.state == domain.StateActive && !v.closed && v.fp != "" && v.loadedFP != v.fp
}

// apply updates the registers an event sets, if it is newer than what set
// them. It reports whether anything changed.
func (v *gateState) apply(e domain.Event) bool {
	seq, changed := e.Seq, false
	if st, ok := destinationOf(e.Payload); ok && seq > v.stateSeq {
		v.state, v.stateSeq, changed = st, seq, true
	}
	if r, ok := reasonOf(e.Payload); ok && seq > v.reasonSeq {
		v.reason, v.reasonSeq, changed = r, seq, true
	}
	if fp, exp, ok := tokensOf(e.Payload); ok && seq > v.tokSeq {
		v.fp, v.expiresAt, v.tokSeq, changed = fp, exp, seq, true
	}
	if seq > v.maxSeq {
		v.maxSeq, changed = seq, true
	}
	if v.closed && seq > v.closedAt {
		v.closed, v.closedAt, v.closeReason, changed = false, 0, domain.ReasonNone, true
	}
	return changed
}

// merge takes every register of o that is newer than v's.
func (v *gateState) merge(o *gateState) {
	if o.stateSeq > v.stateSeq {
		v.state, v.stateSeq = o.state, o.stateSeq
	}
	if o.reasonSeq > v.reasonSeq {
		v.reason, v.reasonSeq = o.reason, o.reasonSeq
	}
	if o.tokSeq > v.tokSeq {
		v.fp, v.expiresAt, v.tokSeq = o.fp, o.expiresAt, o.tokSeq
	}
	if o.maxSeq > v.maxSeq {
		v.maxSeq = o.maxSeq
	}
	if v.closed && o.maxSeq > v.closedAt {
		v.closed, v.closedAt, v.closeReason = false, 0, domain.ReasonNone
	}
}

// derive computes the refusal and the view Check reads from a state.
func (g *Gate) derive(s *gateState) *gateView {
	v := &gateView{st: s, err: &s.err, idLen: int32(len(s.id))}
	if len(s.id) <= gateInlineID {
		copy(v.idInline[:], s.id)
	}
	if (s.state == domain.StateUnauthenticated || s.state == domain.StateReauthorising) &&
		s.loadedFP != "" && s.loadedFP == s.fp {
		s.loadedFP, s.loaded = "", "" // can never be handed out again
	}
	e := domain.GateError{ConnectionID: s.id, State: s.state}
	switch {
	case s.closed:
		e.State, e.Reason, e.Detail = domain.StateUnauthenticated, s.closeReason, domain.DetailUnauthenticated
	case s.state == domain.StateActive && s.fp != "" && s.loadedFP == s.fp:
		v.token, v.expires = s.loaded, s.expiresAt
		if s.expiresAt != noExpiry {
			v.expires = s.expiresAt - g.margin
		}
		e.Detail = domain.DetailTokenExpired
	case s.state == domain.StateActive:
		e.Detail = domain.DetailTokenNotLoaded
	case s.state == domain.StateRefreshing:
		e.Detail = domain.DetailRefreshing
	case s.state == domain.StateUnauthenticated:
		e.Reason, e.Detail = s.reason, domain.DetailUnauthenticated
	case s.state == domain.StateReauthorising:
		e.Reason, e.Detail = s.reason, domain.DetailReauthorising
	default: // only a token or a Close is known: no connection.created yet
		e.Detail = domain.DetailUnknownConnection
	}
	s.err = e
	return v
}

// update applies f to a copy of the connection's state under the writers'
// lock and publishes the view derived from it. create says whether an
// unknown connection gets an entry.
func (g *Gate) update(id string, create bool, f func(s *gateState) bool) {
	h := g.hash(id)
	g.mu.Lock()
	slot := g.tab.Load().lookup(h, id)
	var prev *gateState
	next := new(gateState)
	if slot != nil {
		prev = slot.v.Load().st
		*next = *prev
	} else if !create {
		g.mu.Unlock()
		return
	} else {
		next.id = id
	}
	if !f(next) {
		g.mu.Unlock()
		return
	}
	v := g.derive(next)
	if slot != nil {
		slot.v.Store(v)
	} else {
		g.reserve(1).insert(h, v)
	}
	g.mu.Unlock()
	g.notify(id, prev, next)
}

func (g *Gate) notify(id string, prev, next *gateState) {
	if g.needed == nil || !next.needsToken() {
		return
	}
	if prev != nil && prev.needsToken() && prev.fp == next.fp {
		return
	}
	g.needed(id, next.fp)
}

// Seed loads the gate from a Status projection, as at start-up when the
// status was restored from a snapshot: every register takes the
// connection's version as its sequence. Registers already newer (events
// applied through the OnAppend hook meanwhile) are kept, and so are the
// tokens handed over by SetToken, and so is a Close. Seeding again from a
// rebuilt status is safe the same way. With reset, the registers are
// replaced instead (only for a stream deleted and created again, whose
// sequences start over) and connections unknown to st keep nothing but
// their token.
func (g *Gate) Seed(st *Status, reset bool) {
	type note struct {
		id         string
		prev, next *gateState
	}
	var notes []note
	n := st.Len()
	g.mu.Lock()
	g.reserve(n)
	seen := map[string]bool{}
	st.each(func(c *domain.Connection) {
		next := &gateState{
			id: c.ID, state: c.State, reason: c.Reason, maxSeq: c.Version,
			stateSeq: c.Version, reasonSeq: c.Version, tokSeq: c.Version, expiresAt: noExpiry,
		}
		if c.TokensHeld {
			next.fp, next.expiresAt = c.Tokens.AccessTokenFP, unixNanos(c.Tokens)
		}
		if reset {
			seen[c.ID] = true
		}
		g.maxSeen = max(g.maxSeen, c.Version)
		h := g.hash(c.ID)
		slot := g.reserve(1).lookup(h, c.ID)
		var prev *gateState
		if slot != nil {
			prev = slot.v.Load().st
			if reset {
				next.loadedFP, next.loaded = prev.loadedFP, prev.loaded
			} else {
				cp := *prev
				cp.merge(next)
				next = &cp
			}
		}
		v := g.derive(next)
		if slot != nil {
			slot.v.Store(v)
		} else {
			g.tab.Load().insert(h, v)
		}
		if g.needed != nil && next.needsToken() {
			notes = append(notes, note{c.ID, prev, next})
		}
	})
	if reset {
		// Connections the status does not know keep nothing but a token.
		t := g.tab.Load()
		for i := range t.slots {
			if t.slots[i].h.Load() == 0 {
				continue
			}
			old := t.slots[i].v.Load().st
			if seen[old.id] {
				continue
			}
			t.slots[i].v.Store(g.derive(&gateState{id: old.id, loadedFP: old.loadedFP, loaded: old.loaded}))
		}
	}
	g.mu.Unlock()
	for _, n := range notes {
		g.notify(n.id, n.prev, n.next)
	}
}
