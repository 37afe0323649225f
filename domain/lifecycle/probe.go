package lifecycle

import (
	"cmp"
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

// probeEntry is what the prober knows of a connection.
type probeEntry struct {
	provider   string
	active     bool
	tokensHeld bool
	next       time.Time // zero: not planned yet
	running    bool
}

// probeSet is the prober's state.
type probeSet struct {
	mu    sync.RWMutex // read: providerOf, on every RoundTripper answer
	conns map[string]*probeEntry
}

// observeProbe feeds the prober with a connection's aggregate (called by
// Observe, under the projection's lock: only map updates).
func (s *Service) observeProbe(after *domain.Connection) {
	ps := &s.probes
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.observeLocked(after)
}

// seedProbes is observeProbe for every connection of conns, in order,
// under one lock.
func (s *Service) seedProbes(conns []*domain.Connection) {
	ps := &s.probes
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.conns) == 0 {
		ps.conns = make(map[string]*probeEntry, len(conns))
	}
	for _, c := range conns {
		if c != nil && c.ID != "" {
			ps.observeLocked(c)
		}
	}
}

func (ps *probeSet) observeLocked(after *domain.Connection) {
	if ps.conns == nil {
		ps.conns = map[string]*probeEntry{}
	}
	if after.Deleted {
		delete(ps.conns, after.ID)
		return
	}
	en, ok := ps.conns[after.ID]
	if !ok {
		en = &probeEntry{}
		ps.conns[after.ID] = en
	}
	en.provider = after.Provider
	en.active, en.tokensHeld = after.State == domain.StateActive, after.TokensHeld
	if !en.active {
		en.next = time.Time{} // planned afresh when active again
	}
}

// providerOf returns a connection's provider as the prober saw it.
func (s *Service) providerOf(id string) (string, bool) {
	s.probes.mu.RLock()
	defer s.probes.mu.RUnlock()
	if en, ok := s.probes.conns[id]; ok {
		return en.provider, true
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
		var due []string
		s.probes.mu.Lock()
		for id, en := range s.probes.conns {
			p := s.cfg.Probers[en.provider]
			if p == nil || !en.active || !en.tokensHeld || en.running || !owner(id) {
				continue
			}
			if en.next.IsZero() {
				en.next = firstProbe(id, now, p.Every())
			}
			if !now.Before(en.next) && len(due) < probeBatch {
				en.running = true
				due = append(due, id)
			}
		}
		s.probes.mu.Unlock()
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

// probeDone plans a connection's next probe.
func (s *Service) probeDone(id string, now time.Time) {
	s.probes.mu.Lock()
	defer s.probes.mu.Unlock()
	if en, ok := s.probes.conns[id]; ok {
		en.running = false
		if p := s.cfg.Probers[en.provider]; p != nil {
			en.next = nextProbe(now, p.Every())
		}
	}
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
