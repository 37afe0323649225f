package projections

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

func TestStatusApply(t *testing.T) {
	st := NewStatus()
	a, b := uuid.NewString(), uuid.NewString()
	ha, hb := newHistory(a, 0), newHistory(b, 1)
	ha.exec(t, domain.Create{Provider: "pleo", Scopes: []string{"users:read"}, Config: map[string]string{"team": "x"}})
	hb.now = hb.now.Add(-time.Hour) // b was created first
	hb.exec(t, domain.Create{Provider: "pleo"})
	ha.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	tok := tokens(a, 1, t0)
	ha.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()})
	ha.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})
	ha.exec(t, domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: t0.Add(time.Minute)})
	for _, e := range append(ha.evs, hb.evs...) {
		if changed, err := st.Apply(e); err != nil || !changed {
			t.Fatalf("apply %s: %v %v", e.Type(), changed, err)
		}
	}
	// Idempotent.
	for _, e := range ha.evs {
		if changed, err := st.Apply(e); err != nil || changed {
			t.Fatalf("re-apply %s: %v %v", e.Type(), changed, err)
		}
	}
	s, ok := st.Connection(a)
	if !ok || s.State != domain.StateActive || s.Tokens.AccessTokenFP != tok.Info().AccessTokenFP || s.TransientFailures != 1 ||
		s.LastRefreshAt.IsZero() || s.LastRefreshOK || s.LastErrorCode != "temporarily_unavailable" || s.RetryAt.IsZero() ||
		s.Version != ha.seq || s.Events != 5 || s.NeedsReauthorisation() || s.Config["team"] != "x" ||
		!s.TokensHeld || !s.Tokens.AccessTokenExpiresAt.Equal(tok.Info().AccessTokenExpiresAt) || len(s.Tokens.Scopes) == 0 {
		t.Fatalf("status %+v", s)
	}
	if c, _ := st.Connection(a); !reflect.DeepEqual(c, ha.conn) {
		t.Fatalf("aggregate differs:\n%+v\n%+v", c, ha.conn)
	}
	list := st.List()
	if len(list) != 2 || list[0].ID != b || list[1].ID != a {
		t.Fatalf("list order %v", list)
	}
	if !list[0].NeedsReauthorisation() || list[0].Reason != domain.ReasonNeverAuthorised || list[0].TokensHeld || !list[0].LastRefreshAt.IsZero() {
		t.Fatalf("b: %+v", list[0])
	}
	if !reflect.DeepEqual(list[1], s) {
		t.Fatalf("List and Get disagree:\n%+v\n%+v", list[1], s)
	}
	// Refused events are reported and still advance the version.
	bad := domain.Event{ID: "x", ConnectionID: a, Time: t0, Seq: ha.seq + 10, Payload: domain.AuthorisationCompleted{}}
	if _, err := st.Apply(bad); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("refused event: %v", err)
	}
	if s, _ := st.Connection(a); s.Version != ha.seq+10 || s.Events != 5 {
		t.Fatalf("after refused event: %+v", s)
	}
	if _, err := st.Apply(domain.Event{ConnectionID: uuid.NewString(), Seq: 99, Payload: domain.ConnectionDeleted{}}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("event for unknown connection: %v", err)
	}
	// The aggregate holds no token, only fingerprints (its JSON form is
	// apitypes.StatusOf's business, tested there).
	if b2, _ := json.Marshal(s); strings.Contains(string(b2), tok.AccessToken) || strings.Contains(string(b2), tok.RefreshToken) {
		t.Fatal("the aggregate holds a token")
	}
}

// Snapshots are copy-on-write: entries captured for a snapshot do not
// change while the status keeps applying events.
func TestStatusCaptureIsStable(t *testing.T) {
	st := NewStatus()
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	st.Apply(h.evs[0])
	snap := st.capture()
	before := snap[0].connection()
	st.Apply(h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)}))
	if !reflect.DeepEqual(snap[0].connection(), before) {
		t.Fatal("captured entry changed")
	}
	if s, _ := st.Connection(id); s.State != domain.StateReauthorising {
		t.Fatalf("live entry %+v", s)
	}
}

// With a Runner following it, Apply takes this instance's own events, which
// may arrive before another instance's earlier event: the result is the
// in-order fold whatever the order, and the confirmed state (what snapshots
// and the gate seed read) never holds an event the stream has not delivered.
func TestStatusOwnWritesAheadOfTheStream(t *testing.T) {
	id, h := authorised(t)
	other1 := h.exec(t, domain.Update{Config: map[string]string{"by": "other"}}) // another instance
	own1 := h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})      // accepted without other1
	other2 := h.exec(t, domain.SucceedRefresh{Tokens: tokens(id, 2, t0).Info()}) // another instance
	own2 := h.exec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope"})
	own3 := h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})

	st := NewStatus()
	st.follow()
	for _, e := range h.evs[:3] {
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	must := func(changed bool, _ error) bool { return changed } // refusals are expected here
	// own1 arrives through the hook before the stream brings other1.
	if !must(st.Apply(own1)) {
		t.Fatal("own event not visible")
	}
	if s, _ := st.Connection(id); s.State != domain.StateRefreshing {
		t.Fatalf("read-your-own-writes: %s", s.State)
	}
	if snap := st.capture(); snap[0].c.Version != h.evs[2].Seq {
		t.Fatalf("confirmed state holds an event ahead of the stream: v%d", snap[0].c.Version)
	}
	// The end of a catch-up compacts the entries: what is held ahead stays.
	st.announce()
	if s, _ := st.Connection(id); s.State != domain.StateRefreshing || st.ah(id) == nil {
		t.Fatalf("after compaction: %s", s.State)
	}
	// own3 (after own2, which the hook has not delivered yet either) is
	// refused by what is known and waits.
	st.Apply(own3)
	if !must(st.applyStream(other1)) {
		t.Fatal("late event of another instance changed nothing")
	}
	if s, _ := st.Connection(id); s.Config["by"] != "other" || s.State != domain.StateRefreshing {
		t.Fatalf("after the late event: %+v", s)
	}
	if must(st.applyStream(own1)) {
		t.Fatal("confirming an own event changed what readers see")
	}
	for _, e := range []domain.Event{other2, own2, own3} {
		st.applyStream(e)
	}
	got, _ := st.Connection(id)
	if !reflect.DeepEqual(got, h.conn) {
		t.Fatalf("out-of-order result differs from the in-order fold:\n%+v\n%+v", got, h.conn)
	}
	st.mu.RLock()
	ah, ahead := st.ah(id), len(st.aheads)
	st.mu.RUnlock()
	if ah != nil || ahead != 0 {
		t.Fatal("events still ahead after the stream caught up")
	}
}

// The events held ahead of the stream are bounded: beyond MaxAhead (here
// 3) Apply refuses, what readers see does not move, and the stream still
// brings everything; once it confirms the writes, Apply takes new ones.
func TestStatusAheadIsBounded(t *testing.T) {
	st := NewStatus()
	st.maxAhead = 3
	st.follow()
	st.announce()
	var told int
	st.OnChange(func(_, _ *domain.Connection) { told++ })
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	for i := range 5 {
		h.exec(t, domain.Update{Config: map[string]string{"i": fmt.Sprint(i)}})
	}
	for i, e := range h.evs[:3] {
		if changed, err := st.Apply(e); err != nil || !changed {
			t.Fatalf("own event %d: %v %v", i, changed, err)
		}
	}
	if _, err := st.Apply(h.evs[3]); !errors.Is(err, ErrAheadFull) {
		t.Fatalf("fourth event ahead: %v", err)
	}
	if s, _ := st.Connection(id); s.Version != h.evs[2].Seq || told != 3 || st.ahead != 3 {
		t.Fatalf("after a refusal: v%d, told %d, %d ahead", s.Version, told, st.ahead)
	}
	for _, e := range h.evs[:4] {
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	if st.ahead != 0 {
		t.Fatalf("%d still ahead after the stream confirmed", st.ahead)
	}
	if changed, err := st.Apply(h.evs[4]); err != nil || !changed {
		t.Fatalf("after the stream caught up: %v %v", changed, err)
	}
	st.applyStream(h.evs[4])
	st.applyStream(h.evs[5])
	if c, _ := st.Connection(id); !reflect.DeepEqual(c, h.conn) || st.ahead != 0 {
		t.Fatalf("status differs from the in-order fold (%d ahead)", st.ahead)
	}
}

// Equal scope lists and configs are held once across connections, and
// compaction keeps every aggregate as it was; readers get copies they may
// modify without touching the status.
func TestStatusSharesRepeatedValues(t *testing.T) {
	st := NewStatus()
	var ids []string
	for i := range 3 {
		id := uuid.NewString()
		h := newHistory(id, uint64(i))
		h.exec(t, domain.Create{Provider: "pleo", Scopes: []string{"users:read", "expenses:read"}, Config: map[string]string{"team": "x"}})
		h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
		h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tokens(id, 1, t0).Info()})
		for _, e := range h.evs {
			if _, err := st.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, id)
	}
	a, b := st.conns[ids[0]].c, st.conns[ids[2]].c
	if &a.Scopes[0] != &b.Scopes[0] || &a.Tokens.Scopes[0] != &b.Tokens.Scopes[0] || reflect.ValueOf(a.Config).UnsafePointer() != reflect.ValueOf(b.Config).UnsafePointer() {
		t.Fatal("equal scopes and configs are not shared")
	}
	before := st.List()
	st.announce()
	if after := st.List(); !reflect.DeepEqual(before, after) {
		t.Fatalf("compaction changed the aggregates:\n%+v\n%+v", before, after)
	}
	c, _ := st.Connection(ids[0])
	c.Scopes[0], c.Config["team"], c.Tokens.Scopes[0] = "mutated", "mutated", "mutated"
	for _, id := range ids {
		if c, _ := st.Connection(id); c.Scopes[0] != "users:read" || c.Config["team"] != "x" || c.Tokens.Scopes[0] != "expenses:read" {
			t.Fatalf("a reader's copy aliases the status: %+v", c)
		}
	}
}

// When the stream confirms this instance's events, the connection keeps
// the strings readers saw (and observers such as the gate hold), not the
// stream's equal copies: one copy of the access-token fingerprint.
func TestStatusConfirmKeepsReadersStrings(t *testing.T) {
	st := NewStatus()
	st.follow()
	st.announce()
	id, h := authorised(t)
	var seen string
	st.OnChange(func(_, after *domain.Connection) { seen = after.Tokens.AccessTokenFP })
	for _, e := range h.evs {
		if _, err := st.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	// The stream's copies: equal strings, other memory.
	for _, e := range h.evs {
		if ac, ok := e.Payload.(domain.AuthorisationCompleted); ok {
			ac.Tokens.AccessTokenFP = strings.Clone(ac.Tokens.AccessTokenFP)
			e.Payload = ac
		}
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.RLock()
	got, ahead := st.conns[id].c.Tokens.AccessTokenFP, st.ah(id)
	st.mu.RUnlock()
	if ahead != nil || got != seen || unsafe.StringData(got) != unsafe.StringData(seen) {
		t.Fatalf("confirmed fingerprint %q (ahead %v) is not the string readers saw, %q", got, ahead != nil, seen)
	}
}

// confirmedUpTo chains h (chain) and returns a Status followed by a caught-up
// Runner whose stream has delivered h's first n events.
func confirmedUpTo(t *testing.T, h *history, n int) *Status {
	t.Helper()
	chain(t, h)
	st := NewStatus()
	st.follow()
	st.announce()
	for _, e := range h.evs[:n] {
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// authorised returns a new connection's history: created, then authorised
// (three events).
func authorised(t *testing.T) (string, *history) {
	t.Helper()
	id := uuid.NewString()
	h := newHistory(id, 0)
	h.exec(t, domain.Create{Provider: "pleo"})
	h.exec(t, domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)})
	h.exec(t, domain.CompleteAuthorisation{AttemptID: "a", Tokens: tokens(id, 1, t0).Info()})
	return id, h
}

// chain links h's events as the event store does (each one's previous hash
// is the head before it, its hash a fresh one: the store's is the SHA-256
// of its bytes) and folds them again into h.conn.
func chain(t *testing.T, h *history) {
	t.Helper()
	var head [32]byte
	h.conn = domain.Connection{}
	for i := range h.evs {
		h.evs[i].Link = domain.ChainLink{Chained: true, Prev: head, Hash: sha256.Sum256([]byte(h.evs[i].ID))}
		head = h.evs[i].Link.Hash
		if err := h.conn.Apply(h.evs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// An own event appended on the confirmed state itself (its previous hash is
// that state's head) is confirmed by its acknowledgement: Apply folds it
// into the confirmed state (what snapshots hold and Load is seeded from),
// the Runner takes it back once (takeAcked) instead of decoding it, and
// the stream's copy changes nothing and tells no observer again.
func TestStatusAckConfirmsOwnAppendOnTheConfirmedState(t *testing.T) {
	id, h := authorised(t)
	h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})
	h.exec(t, domain.SucceedRefresh{Tokens: tokens(id, 2, t0).Info()})
	st := confirmedUpTo(t, h, 3)
	told := 0
	st.OnChange(func(_, _ *domain.Connection) { told++ })
	for i, own := range h.evs[3:] {
		if changed, err := st.Apply(own); err != nil || !changed {
			t.Fatalf("own event %d: %v %v", i, changed, err)
		}
		if c, ok := st.Confirmed(id); !ok || c.Version != own.Seq {
			t.Fatalf("own event %d not confirmed by its acknowledgement: v%d", i, c.Version)
		}
		if snap := st.capture(); snap[0].c.Version != own.Seq || st.ah(id) != nil {
			t.Fatalf("own event %d: snapshot at v%d, held ahead %v", i, snap[0].c.Version, st.ah(id) != nil)
		}
	}
	if told != 2 {
		t.Fatalf("observers told %d times for 2 own events", told)
	}
	// The Runner takes them back in stream order, once each.
	for _, own := range h.evs[3:] {
		e, ok := st.takeAcked(own.Seq)
		if !ok || e.ID != own.ID {
			t.Fatalf("takeAcked(%d) = %s, %v", own.Seq, e.ID, ok)
		}
		if _, ok := st.takeAcked(own.Seq); ok {
			t.Fatalf("takeAcked(%d) gave the event twice", own.Seq)
		}
		if changed, err := st.applyStream(e); changed || err != nil {
			t.Fatalf("the stream's copy of an own event: changed %v, %v", changed, err)
		}
	}
	if told != 2 {
		t.Fatalf("observers told again by the stream's copies: %d", told)
	}
	got, _ := st.Connection(id)
	if !reflect.DeepEqual(got, h.conn) {
		t.Fatalf("result differs from the in-order fold:\n%+v\n%+v", got, h.conn)
	}
}

// An own event whose previous hash is not the confirmed head (it followed
// another instance's event the stream has not delivered) is not confirmed
// by its acknowledgement: it waits ahead, and the Runner decodes it.
func TestStatusAckDoesNotConfirmAnEventOnAnotherState(t *testing.T) {
	id, h := authorised(t)
	h.exec(t, domain.Update{Config: map[string]string{"by": "other"}}) // another instance
	h.exec(t, domain.StartRefresh{LeaseUntil: t0.Add(time.Minute)})    // ours, on it
	st := confirmedUpTo(t, h, 3)
	own := h.evs[4]
	st.Apply(own)
	if c, _ := st.Confirmed(id); c.Version != h.evs[2].Seq || st.ah(id) == nil {
		t.Fatalf("an event on a state the stream has not confirmed was confirmed: v%d", c.Version)
	}
	if _, ok := st.takeAcked(own.Seq); ok {
		t.Fatal("an event held ahead was offered to the Runner")
	}
	for _, e := range h.evs[3:] {
		if _, err := st.applyStream(e); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := st.Confirmed(id); c.Version != own.Seq || st.ah(id) != nil || c.Config["by"] != "other" {
		t.Fatalf("after the stream: v%d %v", c.Version, c.Config)
	}
}

// The events kept for the Runner are bounded (maxAcked); those it passed
// without taking (it decoded them) are dropped when it takes a later one.
func TestAckedQueueBoundedAndInOrder(t *testing.T) {
	var q ackedQueue
	for _, seq := range []uint64{5, 3, 9, 7} { // acknowledged out of order
		q.push(domain.Event{ID: fmt.Sprint(seq), Seq: seq})
	}
	if _, ok := q.take(4); ok {
		t.Fatal("took a sequence never pushed")
	}
	if e, ok := q.take(7); !ok || e.Seq != 7 {
		t.Fatalf("take(7) = %v %v", e.Seq, ok)
	}
	if got := q.drain(); len(got) != 1 || got[0].Seq != 9 {
		t.Fatalf("left after take(7): %v (5 was passed over)", got)
	}
	for i := range maxAcked + 10 {
		q.push(domain.Event{Seq: uint64(i + 1)})
	}
	if n := len(q.events) - q.head; n != maxAcked {
		t.Fatalf("%d events kept, want at most %d", n, maxAcked)
	}
	for i := range maxAcked {
		if _, ok := q.take(uint64(i + 1)); !ok {
			t.Fatalf("event %d of the bounded queue missing", i+1)
		}
	}
	if len(q.events)-q.head != 0 {
		t.Fatal("queue not empty after taking everything")
	}
}
