package projections

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// DefaultExpiryMargin caps how long before its recorded expiry an access
// token stops being handed out (as golang.org/x/oauth2 does with its expiry
// delta). A token of lifetime L is refused min(margin, L/10) before its
// expiry (domain.TokenTiming.GateMargin), so that short-lived tokens are
// handed out for most of their life.
const DefaultExpiryMargin = domain.DefaultMaxGateMargin

// GateOptions configures a Gate.
type GateOptions struct {
	// ExpiryMargin caps the gate margin: a token of lifetime L is refused
	// min(ExpiryMargin, L/10) before its recorded expiry
	// (domain.TokenTiming.GateMargin; the lifetime is counted from when the
	// connection's tokens were stored). Default DefaultExpiryMargin; the
	// margin of the shortest lifetime must stay well above ClockResolution.
	ExpiryMargin time.Duration
	// Now replaces the coarse process clock (tests). It is called on every
	// Check, so it makes Check slower.
	Now func() time.Time
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
// Writers (Observe, SetToken, CloseAfter, Reopen) are rare: they serialise
// on one mutex, build a new view and store it in the slot; adding a
// connection fills an empty slot (view first, then hash), and the table is
// copied only to grow it (load factor ½). A refusal of a known connection allocates nothing
// either; only an unknown connection allocates its error. Callers must treat
// returned errors as read-only.
//
// Time comes from a coarse clock (see ClockResolution and ExpiryMargin).
//
// # Following the connections
//
// The gate applies no event itself. It follows the Status projection:
// register Observe with Status.OnChange, and every change of a connection
// (this instance's appends before Append returns, the stream's records, the
// start-up seeding) reaches the gate as the connection after the change,
// from which Observe derives the entry: state, reason, the fingerprint and
// expiry of the current access token, and the version. The Status delivers
// the changes in order, so the entry is always the latest state readers
// see. The lifecycle writes to the gate only through the domain.GateWriter
// methods (CloseAfter, Reopen, SetToken).
//
// The gate is open only when the connection is active, was not closed by
// CloseAfter since, the gate holds the access token whose fingerprint the
// connection records (SetToken), and that token's expiry (minus the
// margin) has not passed.
type Gate struct {
	// Read by every Check; written only when the table grows.
	tab    atomic.Pointer[gateTable]
	seed   maphash.Seed
	margin int64
	now    func() time.Time
	_      [64]byte // keep the writers' fields off the readers' cache line

	mu       sync.Mutex // serialises writers
	maxSeen  uint64     // highest connection version observed (mu)
	seedSink uint64     // what Seed read ahead (mu; keeps the loads)
	// changed holds, per connection someone waits on (Wait), one channel
	// closed at the connection's next change: a broadcast to every waiter,
	// at most one channel per connection (mu).
	changed map[string]chan struct{}
	waiting atomic.Int64 // Wait calls waiting now (bounded by maxWaiters)
}

// MaxWaiters bounds the Wait calls waiting at once on one gate; beyond it
// Wait answers the refusal at once.
const MaxWaiters = 10000

var _ domain.GateWriter = (*Gate)(nil)

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
	return v.st.id() == id
}

// gateState is the gate's record of one connection, immutable once
// published: what Observe derived from the connection, the CloseAfter
// flag and the token handed over by SetToken. One is kept per connection:
// 184 bytes (the id is err's, the state in one byte, the flags together;
// the size class of 192).
type gateState struct {
	reason    domain.Reason
	fp        string // fingerprint of the connection's access token
	expiresAt int64  // its recorded expiry (Unix ns) or noExpiry
	issuedAt  int64  // when the tokens were stored (Unix ns; lifetime = expiresAt − issuedAt)
	version   uint64 // the connection's version

	closedAt    uint64
	closeReason domain.Reason

	// loadedFP is fp's string itself when they are equal (SetToken,
	// observeLocked), so that the entry holds one copy.
	loadedFP, loaded string

	err domain.GateError // derived; err.ConnectionID is the connection's id from the start

	state     gateStateCode
	noRefresh bool // the grant has no refresh token: nothing will renew the access token
	closed    bool // CloseAfter was called and no newer version arrived since
}

// id is the connection's id.
func (s *gateState) id() string { return s.err.ConnectionID }

// gateStateCode is a connection's state in one byte (domain.StateCode).
type gateStateCode = domain.StateCode

var (
	gateActive          = domain.CodeOf(domain.StateActive)
	gateRefreshing      = domain.CodeOf(domain.StateRefreshing)
	gateUnauthenticated = domain.CodeOf(domain.StateUnauthenticated)
	gateReauthorising   = domain.CodeOf(domain.StateReauthorising)
)

// noExpiry marks an access token without a known expiry.
const noExpiry = int64(1<<63 - 1)

func unixNanos(t domain.TokenInfo) int64 {
	if t.AccessTokenExpiresAt.IsZero() {
		return noExpiry
	}
	return t.AccessTokenExpiresAt.UnixNano()
}

// NewGate returns an empty gate.
func NewGate(opts GateOptions) *Gate {
	if opts.ExpiryMargin <= 0 {
		opts.ExpiryMargin = DefaultExpiryMargin
	}
	if opts.Now == nil {
		startCoarseClock()
	}
	g := &Gate{seed: maphash.MakeSeed(), margin: int64(opts.ExpiryMargin), now: opts.Now, changed: map[string]chan struct{}{}}
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

// Observe derives the connection's entry from after, the connection as
// the Status now shows it (register it with Status.OnChange; before is not
// used). A CloseAfter holds until after's version is newer than the one it
// was made against. It is safe for concurrent use.
func (g *Gate) Observe(_, after *domain.Connection) {
	if after == nil || after.ID == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.observeLocked(g.hash(after.ID), after)
}

// Seed is Observe(nil, c) for every connection of conns, in order, under
// one lock and with the table grown once: the start-up seeding (register
// it with Observe through Status.OnChangeSeeded).
//
// The connections come in no particular order of memory (the status
// projection's map order): each one's struct, id and table slot are a
// cache miss. Seed takes them in batches and reads that memory for the
// whole batch first, in short loops whose loads do not wait for each
// other, so that the misses overlap; then observes the batch from cache.
func (g *Gate) Seed(conns []*domain.Connection) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.reserve(len(conns))
	var hs [seedBatch]uint64 // 0: skipped
	for lo := 0; lo < len(conns); lo += seedBatch {
		batch := conns[lo:min(lo+seedBatch, len(conns))]
		var sink uint64
		for _, c := range batch {
			if c != nil {
				sink += touchConnection(c)
			}
		}
		for i, c := range batch {
			hs[i] = 0
			if c != nil && c.ID != "" {
				hs[i] = g.hash(c.ID)
				sink += t.slots[hs[i]&t.mask].h.Load()
			}
		}
		g.seedSink += sink
		for i, c := range batch {
			if hs[i] != 0 {
				g.observeLocked(hs[i], c)
			}
		}
	}
}

// seedBatch is how many connections Seed reads ahead.
const seedBatch = 32

// touchConnection reads a word of each part of c that observing it reads,
// and of its id (the sum is of no use but to keep the loads).
func touchConnection(c *domain.Connection) uint64 {
	n := uint64(len(c.ID)) + uint64(len(c.State)) + c.Version + uint64(len(c.Tokens.RefreshTokenFP)) +
		uint64(c.Tokens.AccessTokenExpiresAt.Nanosecond()) + uint64(c.LastRefreshAt.Nanosecond())
	if len(c.ID) > 0 {
		n += uint64(c.ID[0])
	}
	return n
}

// observeLocked is Observe with g.mu held; h is g.hash(after.ID).
func (g *Gate) observeLocked(h uint64, after *domain.Connection) {
	g.updateLocked(h, after.ID, true, func(s *gateState) bool {
		g.maxSeen = max(g.maxSeen, after.Version) // g.mu is held
		fp, exp, iss, noRefresh := "", noExpiry, int64(0), false
		if after.TokensHeld {
			fp, exp, noRefresh = after.Tokens.AccessTokenFP, unixNanos(after.Tokens), after.Tokens.RefreshTokenFP == ""
			if at := domain.TokensIssuedAt(after); !at.IsZero() {
				iss = at.UnixNano()
			}
		}
		next := *s
		next.state, next.reason, next.fp, next.expiresAt, next.issuedAt, next.version = domain.CodeOf(after.State), after.Reason, fp, exp, iss, after.Version
		next.noRefresh = noRefresh
		if next.loadedFP == fp {
			next.loadedFP = fp // one copy of the string
		}
		if next.closed && after.Version > next.closedAt {
			next.closed, next.closedAt, next.closeReason = false, 0, domain.ReasonNone
		}
		if next == *s {
			return false
		}
		*s = next
		return true
	})
}

// ErrFingerprintMismatch is returned by SetToken when the token does not
// have the fingerprint it is handed over with.
var ErrFingerprintMismatch = errors.New("projections: access token does not match its fingerprint")

// SetToken hands the gate the access token whose fingerprint is
// accessTokenFP (as domain.Fingerprint computes it). The gate uses it only
// while that fingerprint is the one the connection records (its latest
// authorisation or refresh), so a stale token is never handed out; a token
// set ahead of its event (the vault is written before the event is
// appended) waits for it. The token is dropped from memory once the connection is
// unauthenticated or reauthorising with it.
func (g *Gate) SetToken(connectionID, accessTokenFP, accessToken string) error {
	if accessToken == "" || domain.Fingerprint(accessToken) != accessTokenFP {
		return ErrFingerprintMismatch
	}
	g.update(connectionID, true, func(s *gateState) bool {
		if s.loadedFP == accessTokenFP && s.loaded == accessToken {
			return false
		}
		if accessTokenFP == s.fp {
			accessTokenFP = s.fp // one copy of the string
		}
		s.loadedFP, s.loaded = accessTokenFP, accessToken
		return true
	})
	return nil
}

// CloseAfter closes the gate of a connection at once, before the event
// that makes it unusable is appended: the lifecycle calls it ahead of a
// terminal event so that no call slips through after tokenline decided the
// connection is dead. Check then reports it unauthenticated with reason.
// version is the version of the aggregate the decision was made against:
// only a newer version of the connection (the terminal event itself, or
// another instance's event) re-derives the entry; older events arriving late
// do not reopen it. On an instance still starting, the gate holds the close
// against every version it has observed of any connection as well. Reopen
// undoes it if the terminal event could not be appended.
func (g *Gate) CloseAfter(connectionID string, reason domain.Reason, version uint64) {
	g.update(connectionID, true, func(s *gateState) bool {
		at := max(g.maxSeen, s.version, version) // g.mu is held
		if s.closed && s.closeReason == reason && s.closedAt == at {
			return false
		}
		s.closed, s.closedAt, s.closeReason = true, at, reason
		return true
	})
}

// Reopen clears a CloseAfter that no newer version has superseded.
func (g *Gate) Reopen(connectionID string) {
	g.update(connectionID, false, func(s *gateState) bool {
		if !s.closed {
			return false
		}
		s.closed, s.closedAt, s.closeReason = false, 0, domain.ReasonNone
		return true
	})
}

// derive computes the refusal and the view Check reads from a state.
func (g *Gate) derive(s *gateState) *gateView {
	id := s.id()
	v := &gateView{st: s, err: &s.err, idLen: int32(len(id))}
	if len(id) <= gateInlineID {
		copy(v.idInline[:], id)
	}
	if (s.state == gateUnauthenticated || s.state == gateReauthorising) &&
		s.loadedFP != "" && s.loadedFP == s.fp {
		s.loadedFP, s.loaded = "", "" // can never be handed out again
	}
	e := domain.GateError{ConnectionID: id, State: s.state.State()}
	switch {
	case s.closed:
		e.State, e.Reason, e.Detail = domain.StateUnauthenticated, s.closeReason, domain.DetailUnauthenticated
	case s.state == gateActive && s.fp != "" && s.loadedFP == s.fp:
		v.token, v.expires = s.loaded, s.expiresAt
		if s.expiresAt != noExpiry {
			v.expires = s.expiresAt - int64(g.marginFor(s))
		}
		e.Detail = domain.DetailTokenExpired
		if s.noRefresh {
			// Nothing will renew this token (its grant has no refresh
			// token): once it may no longer be handed out, waiting cures
			// nothing and the user must reconnect. The lapse job records
			// refresh.failed (refresh_not_granted) at the expiry itself;
			// the gate answers so already, as CloseAfter does ahead of a
			// terminal event.
			e.State, e.Reason, e.Detail = domain.StateUnauthenticated, domain.ReasonRefreshNotGranted, domain.DetailUnauthenticated
		}
	case s.state == gateActive:
		e.Detail = domain.DetailTokenNotLoaded
	case s.state == gateRefreshing:
		e.Detail = domain.DetailRefreshing
	case s.state == gateUnauthenticated:
		e.Reason, e.Detail = s.reason, domain.DetailUnauthenticated
	case s.state == gateReauthorising:
		e.Reason, e.Detail = s.reason, domain.DetailReauthorising
	default: // only a token or a CloseAfter is known: no connection.created yet
		e.Detail = domain.DetailUnknownConnection
	}
	s.err = e
	return v
}

// marginFor is the gate margin of the connection's current token: the
// rule of domain.TokenTiming for its lifetime, capped by the configured
// margin (an unknown lifetime gets the cap); for a token no refresh will
// replace, the smaller margin of GateMarginWithoutRefresh.
func (g *Gate) marginFor(s *gateState) time.Duration {
	var life time.Duration
	if s.issuedAt > 0 && s.issuedAt < s.expiresAt {
		life = time.Duration(s.expiresAt - s.issuedAt)
	}
	tt := domain.TokenTiming{MaxGateMargin: time.Duration(g.margin)}
	if s.noRefresh {
		return tt.GateMarginWithoutRefresh(life)
	}
	return tt.GateMargin(life)
}

// update applies f to a copy of the connection's state under the writers'
// lock and publishes the view derived from it. create says whether an
// unknown connection gets an entry.
func (g *Gate) update(id string, create bool, f func(s *gateState) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.updateLocked(g.hash(id), id, create, f)
}

// updateLocked is update with g.mu held; h is g.hash(id).
func (g *Gate) updateLocked(h uint64, id string, create bool, f func(s *gateState) bool) {
	slot := g.tab.Load().lookup(h, id)
	next := new(gateState)
	if slot != nil {
		*next = *slot.v.Load().st
	} else if !create {
		return
	} else {
		next.err.ConnectionID = id
	}
	if !f(next) {
		return
	}
	v := g.derive(next)
	if slot != nil {
		slot.v.Store(v)
	} else {
		g.reserve(1).insert(h, v)
	}
	if ch, ok := g.changed[id]; ok {
		close(ch) // wake every waiter of this connection
		delete(g.changed, id)
	}
}

// next returns a channel closed at the connection's next change (the
// writers' lock: a slow path, never taken by Check).
func (g *Gate) next(id string) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.changed[id]
	if !ok {
		ch = make(chan struct{})
		g.changed[id] = ch
	}
	return ch
}

// Await is Check that waits while ctx lasts for a refusal that time cures
// (domain.(*GateError).RetryLater: a refresh due or in flight, a token not
// loaded yet): see Wait.
func (g *Gate) Await(ctx context.Context, connectionID string) (string, error) {
	return g.Wait(ctx, connectionID, func(context.Context) (string, error) { return g.Check(connectionID) })
}

// Wait calls check (a gate check, possibly with a slow path such as
// loading a token another instance refreshed) and, while it refuses the
// connection with a refusal that time cures, waits for the connection's
// next change in the gate and calls it again, until it hands out a token,
// refuses for good (a person must act), or ctx ends; then it returns
// check's last answer. It is not on the fast path: an open gate answers
// from the first check; a waiter costs one shared channel per connection
// (closed by the next change, whoever waits on it) and no polling. At most
// MaxWaiters calls wait at once; beyond that Wait answers the refusal at
// once.
func (g *Gate) Wait(ctx context.Context, connectionID string, check func(context.Context) (string, error)) (string, error) {
	tok, err := check(ctx)
	if err == nil || !retryLater(err) || ctx.Err() != nil {
		return tok, err
	}
	if g.waiting.Add(1) > MaxWaiters {
		g.waiting.Add(-1)
		return tok, err
	}
	defer g.waiting.Add(-1)
	for range maxWaitRounds {
		ch := g.next(connectionID) // before the check: no change is missed
		if tok, err = check(ctx); err == nil || !retryLater(err) {
			return tok, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return tok, err
		}
	}
	return tok, err
}

// Waiters is how many Wait calls are waiting now.
func (g *Gate) Waiters() int64 { return g.waiting.Load() }

// maxWaitRounds bounds the changes one Wait follows (a refresh is two or
// three: refresh.started, the token, refresh.completed).
const maxWaitRounds = 64

func retryLater(err error) bool {
	var ge *domain.GateError
	return errors.As(err, &ge) && ge.RetryLater()
}
