package lifecycle

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"hash/fnv"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Proactive revocation detection. A provider with a domain.Prober
// (Config.Probers) has each of its active connections probed every
// Prober.Every(), jittered, by the one instance that owns the connection
// (Config.ProbeOwner): RFC 7662 introspection of the refresh token, or a
// cheap authenticated GET judged by the provider's detection rules. A probe
// that finds the grant dead reports it through ReportRejection (source
// "probe"): the same path as an API call's 401 (access.rejected, one
// refresh, unauthenticated if that cannot restore access). Any other probe
// changes nothing and appends no event; every probe is counted
// (Config.ObserveProbe). Probes never log or return a token.

// Probe outcomes (Config.ObserveProbe, tokenline_probes_total{outcome}).
const (
	ProbeAlive   = "alive"   // the grant is alive
	ProbeDead    = "dead"    // the grant is dead: reported as a rejection
	ProbeError   = "error"   // the probe failed (network, 5xx, bad answer); retried next interval
	ProbeSkipped = "skipped" // no usable token (none held, or the access token expired)
	ProbeStale   = "stale"   // the tokens changed while probing: the answer is about old ones
)

// DefaultProbeConcurrency bounds the probes in flight on one instance:
// with probes of 50 ms an instance probes up to 160 connections a second
// (48,000 connections every 5 minutes).
const DefaultProbeConcurrency = 8

// probeBatch bounds the probes one look at the connections starts (the
// rest wait for the next look, a tick later).
const probeBatch = 1024

// probeExpirySkip: a connection whose access token expires within this is
// not probed.
const probeExpirySkip = 5 * time.Second

// probeTimeout bounds one probe's request.
const probeTimeout = 10 * time.Second

// probeEntry is what the prober knows of a connection of a provider with a
// prober: 16 bytes, held by value in the prober's map.
type probeEntry struct {
	next       int64  // Unix ns of the next probe; 0: not planned yet
	provider   uint16 // index in probeSet.providers
	active     bool
	tokensHeld bool
	running    bool
	pending    bool // in probeSet.unplanned
}

// probeSet is the prober's state. The connections of providers with a
// prober wait for their next probe in a min-heap (due), so that a tick
// looks at the due ones only: a connection that becomes active (tokens
// held) waits in unplanned until the next tick plans it (firstProbe); a
// finished probe plans the next one (nextProbe). An entry of the heap whose
// connection changed since it was pushed (its next differs) is dropped
// when it comes up.
type probeSet struct {
	mu        sync.Mutex
	conns     map[string]probeEntry // the connections of providers with a prober
	providers names
	due       probeQueue
	unplanned []string
	seedSink  uint64 // what seeding read ahead (keeps the loads)
}

// probeItem is a planned probe in probeSet.due.
type probeItem struct {
	next int64
	id   string
}

// probeQueue is a min-heap of planned probes by time (container/heap).
type probeQueue []probeItem

func (q probeQueue) Len() int           { return len(q) }
func (q probeQueue) Less(i, j int) bool { return q[i].next < q[j].next }
func (q probeQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *probeQueue) Push(x any)        { *q = append(*q, x.(probeItem)) }
func (q *probeQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = probeItem{}
	*q = old[:len(old)-1]
	return it
}

// observeProbe feeds the prober with a connection's aggregate (called by
// Observe, under the projection's lock: only map updates).
func (s *Service) observeProbe(after *domain.Connection) {
	ps := &s.probes
	ps.mu.Lock()
	defer ps.mu.Unlock()
	s.observeProbeLocked(after)
}

// seedProbes is observeProbe for every connection of conns, in order,
// under one lock.
func (s *Service) seedProbes(conns []*domain.Connection) {
	ps := &s.probes
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.conns) == 0 {
		ps.conns = make(map[string]probeEntry, len(conns))
	}
	if len(ps.unplanned) == 0 {
		ps.unplanned = make([]string, 0, len(conns)) // dropped by the next take
	}
	// The provider of the previous connection, looked up again only when
	// it changes (a few providers, many connections each).
	var provider string
	var probed, looked, interned bool
	var index uint16
	for lo := 0; lo < len(conns); lo += seedBatch {
		batch := conns[lo:min(lo+seedBatch, len(conns))]
		ps.seedSink += readAhead(batch)
		for _, c := range batch {
			if c == nil || c.ID == "" {
				continue
			}
			if !looked || c.Provider != provider {
				provider, probed, looked, interned = c.Provider, s.cfg.Probers[c.Provider] != nil, true, false
			}
			if probed && !c.Deleted && !interned { // interned when first kept, as observeProbeLocked does
				index, interned = ps.providers.index(provider), true
			}
			s.observeProbeAs(c, probed, index)
		}
	}
}

// names interns provider names as small indexes (one a connection holds
// instead of a string).
type names struct {
	list []string
	idx  map[string]uint16
}

// index returns the index of name (0 beyond 65,535 names, never in
// practice: providers are configured).
func (n *names) index(name string) uint16 {
	if i, ok := n.idx[name]; ok {
		return i
	}
	if len(n.list) > 1<<16-1 {
		return 0
	}
	if n.idx == nil {
		n.idx = map[string]uint16{}
	}
	i := uint16(len(n.list))
	n.list = append(n.list, name)
	n.idx[name] = i
	return i
}

func (n *names) name(i uint16) string {
	if int(i) < len(n.list) {
		return n.list[i]
	}
	return ""
}

func (s *Service) observeProbeLocked(after *domain.Connection) {
	probed := s.cfg.Probers[after.Provider] != nil
	var index uint16
	if probed && !after.Deleted {
		index = s.probes.providers.index(after.Provider)
	}
	s.observeProbeAs(after, probed, index)
}

// observeProbeAs is observeProbeLocked for a connection whose provider has
// a prober or not (probed) and is interned as index (when it has one).
func (s *Service) observeProbeAs(after *domain.Connection, probed bool, index uint16) {
	ps := &s.probes
	if ps.conns == nil {
		ps.conns = map[string]probeEntry{}
	}
	if after.Deleted || !probed {
		delete(ps.conns, after.ID) // nothing to probe (the scheduler knows its provider: providerOf)
		return
	}
	en, known := ps.conns[after.ID]
	was := known && en.active && en.tokensHeld
	en.provider = index
	en.active, en.tokensHeld = after.State == domain.StateActive, after.TokensHeld
	if !en.active {
		en.next = 0 // planned afresh when active again
	}
	if en.active && en.tokensHeld && !was && !en.running {
		// It becomes probable: planned at the next tick, or at the time a
		// probe that ended meanwhile planned.
		switch {
		case en.next != 0:
			heap.Push(&ps.due, probeItem{en.next, after.ID})
		case !en.pending:
			en.pending = true
			ps.unplanned = append(ps.unplanned, after.ID)
		}
	}
	ps.conns[after.ID] = en
}

// providerOf returns a connection's provider as the scheduler saw it.
func (s *Service) providerOf(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if en, ok := s.sched[id]; ok {
		return s.providers.name(en.provider), true
	}
	return "", false
}

// ShardOwner returns a Config.ProbeOwner for instance index of n instances
// (0 <= index < n): a connection belongs to the instance whose index is
// the FNV-1a hash of its id modulo n. Each instance started with its own
// index probes a disjoint share, and together they probe every connection
// once.
func ShardOwner(index, n int) func(string) bool {
	return func(id string) bool {
		if n <= 1 {
			return true
		}
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		return int(h.Sum32()%uint32(n)) == index
	}
}

// firstProbe is when a connection first seen at now is probed: a stable
// offset in [0, every) from its id, so that connections and instances
// spread their probes over the interval.
func firstProbe(id string, now time.Time, every time.Duration) time.Time {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return now.Add(time.Duration(h.Sum64() % uint64(every)))
}

// nextProbe is every ±10 % after now.
func nextProbe(now time.Time, every time.Duration) time.Time {
	j := time.Duration(mrand.Int64N(int64(every)/5+1)) - every/10
	return now.Add(every + j)
}

// runProbes probes the connections of the providers with a prober until
// ctx ends. It wakes every tick (at most a second, at least a tenth of the
// shortest interval), starts the due probes up to the concurrency bound
// and waits for the running ones when ctx ends.
func (s *Service) runProbes(ctx context.Context) {
	if len(s.cfg.Probers) == 0 {
		return
	}
	tick := time.Second
	for _, p := range s.cfg.Probers {
		tick = min(tick, max(p.Every()/10, 10*time.Millisecond))
	}
	sem := make(chan struct{}, positiveOr(s.cfg.ProbeConcurrency, DefaultProbeConcurrency))
	owner := s.cfg.ProbeOwner
	if owner == nil {
		owner = func(string) bool { return true }
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(tick):
		}
		now := s.clock.Now()
		due := s.probes.take(now, s.cfg.Probers, owner)
		for _, id := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				s.probeDone(id, now)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				s.probeOne(ctx, id)
				s.probeDone(id, s.clock.Now())
			}()
		}
	}
}

// take plans the connections that became probable since the last tick
// and returns the ones due at now, marked running (at most probeBatch).
func (ps *probeSet) take(now time.Time, probers map[string]domain.Prober, owner func(string) bool) []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, id := range ps.unplanned {
		en, ok := ps.conns[id]
		if !ok || !en.pending {
			continue
		}
		en.pending = false
		if p := probers[ps.providers.name(en.provider)]; p != nil && en.active && en.tokensHeld && !en.running && en.next == 0 && owner(id) {
			en.next = firstProbe(id, now, p.Every()).UnixNano()
			heap.Push(&ps.due, probeItem{en.next, id})
		}
		ps.conns[id] = en
	}
	clear(ps.unplanned)
	ps.unplanned = ps.unplanned[:0]
	if cap(ps.unplanned) > 1024 {
		ps.unplanned = nil // a seeding's worth: not kept
	}
	var due []string
	for len(ps.due) > 0 && len(due) < probeBatch && ps.due[0].next <= now.UnixNano() {
		it := heap.Pop(&ps.due).(probeItem)
		en, ok := ps.conns[it.id]
		if !ok || en.next != it.next || en.running || !en.active || !en.tokensHeld {
			continue // changed since planned: dropped (planned again when it becomes probable)
		}
		en.running = true
		ps.conns[it.id] = en
		due = append(due, it.id)
	}
	return due
}

// probeDone plans a connection's next probe.
func (s *Service) probeDone(id string, now time.Time) {
	ps := &s.probes
	ps.mu.Lock()
	defer ps.mu.Unlock()
	en, ok := ps.conns[id]
	if !ok {
		return
	}
	en.running = false
	if p := s.cfg.Probers[ps.providers.name(en.provider)]; p != nil {
		en.next = nextProbe(now, p.Every()).UnixNano()
		if en.active && en.tokensHeld {
			heap.Push(&ps.due, probeItem{en.next, id})
		}
	}
	ps.conns[id] = en
}

// probeOne probes one connection, reports a dead grant and counts the
// outcome.
func (s *Service) probeOne(ctx context.Context, id string) (outcome string) {
	provider, _ := s.providerOf(id)
	defer func() {
		if s.cfg.ObserveProbe != nil {
			s.cfg.ObserveProbe(provider, outcome)
		}
	}()
	p := s.cfg.Probers[provider]
	if p == nil {
		return ProbeSkipped
	}
	t, err := s.cfg.Vault.Get(ctx, id)
	if err != nil {
		return ProbeSkipped
	}
	if !t.Expiry.IsZero() && !s.now().Before(t.Expiry.Add(-probeExpirySkip)) {
		// The access token is expired or about to: a GET would be
		// rejected for that alone, and the refresh that is due tells
		// whether the grant lives.
		return ProbeSkipped
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	ans, err := p.Probe(pctx, t)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("probe failed", "connection_id", id, "provider", provider, "error", err.Error())
		}
		return ProbeError
	}
	fp := domain.Fingerprint(t.AccessToken)
	r := Rejection{AccessTokenFP: fp, Source: "probe"}
	switch {
	case ans.Introspected && ans.Active:
		return ProbeAlive
	case ans.Introspected:
		r.Status, r.dead = 200, true
	default:
		if ans.Status < 100 || ans.Status > 599 {
			return ProbeError
		}
		v, _ := s.cfg.Detection[provider].Judge(ans.Status, ans.WWWAuthenticate, ans.Body)
		if v != domain.VerdictDead {
			if ans.Status >= 500 || ans.Status == 429 {
				return ProbeError
			}
			return ProbeAlive
		}
		r.Status, r.WWWAuthenticate, r.Body = ans.Status, strings.Join(ans.WWWAuthenticate, ", "), ans.Body
	}
	// The tokens may have been replaced while the probe ran (a refresh on
	// this or another instance): the answer is then about old tokens.
	if now, err := s.cfg.Vault.Get(ctx, id); err != nil ||
		domain.Fingerprint(now.AccessToken) != fp || now.RefreshToken != t.RefreshToken {
		return ProbeStale
	}
	c, err := s.ReportRejection(ctx, id, r)
	if err != nil && !errors.Is(err, domain.ErrConflict) {
		s.log.Warn("probe: reporting a dead grant failed", "connection_id", id, "provider", provider, "error", err.Error())
		return ProbeError
	}
	s.log.Info("probe found a dead grant", "connection_id", id, "provider", provider,
		"introspection", ans.Introspected, "http_status", r.Status, "state", string(cmp.Or(c.State, domain.State("unknown"))))
	return ProbeDead
}
