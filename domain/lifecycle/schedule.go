package lifecycle

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// schedEntry is what the scheduler knows of a connection: derived from its
// aggregate (see track), never from events directly. One is kept per
// connection, so it is laid out to be small: times as Unix nanoseconds (0:
// none; see nanos), the state and the job as one byte each; 96 bytes (a
// size class) where time.Time fields and strings took 320.
type schedEntry struct {
	id  string
	seq uint64
	// From the aggregate: when the current tokens were stored, their
	// expiry, the retry after a transient failure, the refresh lease, the
	// open authorisation attempt's expiry.
	issuedAt, expiresAt, retryAt, leaseUntil, attemptExp int64

	// job and due are derived from the fields above whenever they change
	// (plan); entries with a job wait in the scheduler's queue, a min-heap
	// by due time, at index idx (-1: not queued).
	due int64

	// The refresh time spreading chose for the tokens the entry holds
	// (sched_spread.go), kept while they stay the same (spreadOld: they
	// changed since); while counted, the entry counts in the spreading
	// bucket of spreadDue.
	spreadDue int64

	idx        int32
	provider   uint16 // index in Service.providers
	state      schedState
	job        jobKind
	tokensHeld bool
	noRefresh  bool // the grant has no refresh token (norefresh.go)
	deleted    bool
	counted    bool
	spreadOld  bool
}

// nanos is t as Unix nanoseconds, 0 for the zero time (the entries' "none").
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// timeOf is the time of n Unix nanoseconds, the zero time for 0.
func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// schedState is a connection's state in one byte (domain.StateCode).
type schedState = domain.StateCode

var (
	stActive          = domain.CodeOf(domain.StateActive)
	stRefreshing      = domain.CodeOf(domain.StateRefreshing)
	stUnauthenticated = domain.CodeOf(domain.StateUnauthenticated)
	stReauthorising   = domain.CodeOf(domain.StateReauthorising)
)

// jobKind is a scheduled job (job.kind) in one byte.
type jobKind uint8

const (
	jobNone jobKind = iota
	jobRefresh
	jobRecover
	jobExpire
	jobInvalidate
	jobLapse
)

var jobNames = [...]string{jobNone: "", jobRefresh: "refresh", jobRecover: "recover", jobExpire: "expire",
	jobInvalidate: "invalidate", jobLapse: "lapse"}

func (k jobKind) String() string { return jobNames[k] }

// dueQueue is a min-heap of entries by due time (container/heap).
type dueQueue []*schedEntry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due < q[j].due }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i]; q[i].idx = int32(i); q[j].idx = int32(j) }
func (q *dueQueue) Push(x any)        { en := x.(*schedEntry); en.idx = int32(len(*q)); *q = append(*q, en) }
func (q *dueQueue) Pop() any {
	old := *q
	en := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	en.idx = -1
	return en
}

// plan derives the entry's next job and when it is due, and queues it
// (s.mu held).
func (s *Service) plan(id string, en *schedEntry) {
	s.derive(id, en)
	s.queue(en)
}

// derive sets the entry's job and due time (s.mu held); queue puts it in
// the due queue accordingly.
func (s *Service) derive(id string, en *schedEntry) {
	s.spread.remove(en)
	en.id, en.job, en.due = id, jobNone, 0
	if en.deleted && en.state != stUnauthenticated {
		return
	}
	switch en.state {
	case stActive:
		if en.tokensHeld && en.noRefresh {
			planWithoutRefresh(en)
			break
		}
		if en.tokensHeld {
			en.job = jobRefresh
			if en.retryAt != 0 {
				en.due = en.retryAt
			} else {
				en.due = nanos(s.refreshAt(id, en))
			}
		}
	case stRefreshing:
		// A refresher that died is recovered LeaseGrace after its lease
		// ended; a live one extends the lease (refresh.lease_extended),
		// which moves leaseUntil and so this job, before that.
		if en.leaseUntil != 0 {
			en.job, en.due = jobRecover, en.leaseUntil+int64(s.cfg.LeaseGrace)
		}
	case stReauthorising:
		if en.attemptExp != 0 {
			en.job, en.due = jobExpire, en.attemptExp
		}
	case stUnauthenticated:
		if en.tokensHeld { // crash between the terminal event and invalidation
			en.job = jobInvalidate
		}
	}
}

// Observe feeds the scheduler with a connection's aggregate after a change
// (before is unused: what is due depends on the state after). It is
// registered with the status projection's change hook
// (projections.Status.OnChange), which calls it in the order of the changes
// for this instance's appends and the stream's events alike, and once per
// connection to seed it at start-up (or Seed, with every connection at
// once): the latest call is the state to plan for. It must stay fast: it runs under the projection's lock (planning a
// refresh is a few map look-ups, up to one per second of the spreading
// window when the window is full: BenchmarkObserveBurst).
func (s *Service) Observe(before, after *domain.Connection) {
	if after == nil || after.ID == "" {
		return
	}
	s.observeProbe(after)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plan(after.ID, s.track(after))
}

// track updates (or creates) the connection's entry from its aggregate
// (s.mu held); plan derives its job from it.
func (s *Service) track(after *domain.Connection) *schedEntry {
	en, ok := s.sched[after.ID]
	if !ok {
		en = &schedEntry{idx: -1}
		s.sched[after.ID] = en
	}
	s.fill(en, after, s.providers.index(after.Provider))
	return en
}

// fill sets the entry's fields from the connection's aggregate, whose
// provider is interned as provider (s.mu held).
func (s *Service) fill(en *schedEntry, after *domain.Connection, provider uint16) {
	en.seq, en.state, en.tokensHeld, en.deleted = after.Version, domain.CodeOf(after.State), after.TokensHeld, after.Deleted
	en.provider = provider
	en.noRefresh = after.Tokens.RefreshTokenFP == ""
	iss, exp := nanos(issuedAt(after)), nanos(after.Tokens.AccessTokenExpiresAt)
	if iss != en.issuedAt || exp != en.expiresAt {
		en.spreadOld = true // planned again for these tokens (refreshAt)
	}
	en.issuedAt, en.expiresAt = iss, exp
	en.retryAt, en.leaseUntil, en.attemptExp = nanos(after.RetryAt), nanos(after.LeaseUntil), nanos(after.AttemptExpiresAt)
}

// Seed is Observe(nil, c) for every connection of conns, in order, at
// once: the start-up seeding (register it with Observe through
// projections.Status.OnChangeSeeded). It plans exactly what those calls
// would, taking the locks once; into an empty queue (the usual start) the
// entries are appended and the heap is built in one pass (heap.Init)
// instead of one push each, while the prober is seeded alongside.
func (s *Service) Seed(conns []*domain.Connection) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.seedProbes(conns) }) // the prober's own state, under its own lock
	s.mu.Lock()
	defer s.mu.Unlock()
	// The new entries are allocated together (one slab, not one object
	// each): entries are never removed from s.sched, so the slab lives as
	// long as they do, as theirs would.
	var slab []schedEntry
	if len(s.sched) == 0 {
		s.sched = make(map[string]*schedEntry, len(conns))
		slab = make([]schedEntry, len(conns))
	}
	bulk := len(s.dueQ) == 0
	var provider string // the previous connection's, interned as index
	var index uint16
	looked := false
	for lo := 0; lo < len(conns); lo += seedBatch {
		batch := conns[lo:min(lo+seedBatch, len(conns))]
		s.seedSink += readAhead(batch)
		for _, c := range batch {
			if c == nil || c.ID == "" {
				continue
			}
			if !looked || c.Provider != provider {
				provider, index, looked = c.Provider, s.providers.index(c.Provider), true
			}
			en, ok := s.sched[c.ID]
			if !ok {
				if len(slab) > 0 {
					en, slab = &slab[0], slab[1:]
					en.idx = -1
				} else {
					en = &schedEntry{idx: -1}
				}
				s.sched[c.ID] = en
			}
			s.fill(en, c, index)
			if !bulk {
				s.plan(c.ID, en)
				continue
			}
			s.derive(c.ID, en)
			if en.job != jobNone && en.idx < 0 {
				en.idx = int32(len(s.dueQ))
				s.dueQ = append(s.dueQ, en)
			}
		}
	}
	if bulk {
		// A connection given twice may have lost its job since queued.
		q := s.dueQ[:0]
		for _, en := range s.dueQ {
			if en.job == jobNone {
				en.idx = -1
				continue
			}
			en.idx = int32(len(q))
			q = append(q, en)
		}
		clear(s.dueQ[len(q):])
		s.dueQ = q
	}
	if bulk && len(s.dueQ) > 0 {
		heap.Init(&s.dueQ)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// seedBatch is how many connections seeding reads ahead (readAhead).
const seedBatch = 32

// readAhead reads a word of each part of the connections that planning
// them reads, and of their ids, and returns a sum of no use but to keep the
// loads. The connections come in no particular order of memory (the status
// projection's map order), each one a few cache misses: read in a short
// loop whose loads do not wait for each other, a batch's misses overlap,
// and it is then planned from cache.
func readAhead(batch []*domain.Connection) uint64 {
	var n uint64
	for _, c := range batch {
		if c == nil {
			continue
		}
		n += uint64(len(c.ID)) + uint64(len(c.State)) + c.Version + uint64(len(c.Tokens.RefreshTokenFP)) +
			uint64(c.Tokens.AccessTokenExpiresAt.Nanosecond()) + uint64(c.AttemptExpiresAt.Nanosecond()) +
			uint64(c.LeaseUntil.Nanosecond()) + uint64(c.LastRefreshAt.Nanosecond())
		if len(c.ID) > 0 {
			n += uint64(c.ID[0])
		}
	}
	return n
}

// issuedAt is when the connection's current tokens were stored: the last
// successful refresh, or else when it became active.
func issuedAt(c *domain.Connection) time.Time {
	if c.LastRefreshAt.IsZero() || !c.LastRefreshOK {
		return c.Since
	}
	return c.LastRefreshAt
}

// jitter is a per-connection factor in [0.9, 1.1), stable for a connection
// so that instances agree roughly on when it is due.
func jitter(id string) float64 {
	h := uint32(2166136261) // FNV-1a (hash/fnv's New32a), without its allocation and copy of id
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return 0.9 + float64(h%1000)/5000
}

func (s *Service) dueAt(id string, issued, expires time.Time) time.Time {
	life := expires.Sub(issued)
	if life <= 0 {
		life = 15 * time.Minute
	}
	margin := time.Duration(float64(s.cfg.Margin(life)) * jitter(id))
	return expires.Add(-margin)
}

// due reports whether an active connection should be refreshed at now: at
// the time this scheduler planned for its tokens (which spreading may have
// moved ahead of dueAt), or at dueAt for tokens it has not planned.
func (s *Service) due(c *domain.Connection, now time.Time) bool {
	if c.State != domain.StateActive || !c.TokensHeld {
		return false
	}
	issued, expires := issuedAt(c), c.Tokens.AccessTokenExpiresAt
	s.mu.Lock()
	at, ok := s.plannedRefresh(c.ID, issued, expires)
	s.mu.Unlock()
	if !ok {
		at = s.dueAt(c.ID, issued, expires)
	}
	return refreshDue(now, c.RetryAt, at)
}

// refreshDue: after a transient failure the retry time alone decides (the
// backoff); otherwise the margin before expiry does.
func refreshDue(now, retryAt, dueAt time.Time) bool {
	if !retryAt.IsZero() {
		return !now.Before(retryAt)
	}
	return !now.Before(dueAt)
}

type job struct {
	id   string
	kind string // "refresh", "recover", "expire", "invalidate", "lapse"
}

// taken is a job the dispatcher took off the queue.
type taken struct {
	job
	seq  uint64        // the entry's version then
	late time.Duration // how long after its planned time
}

// queue puts en in the due queue, moves it, or takes it out (s.mu held).
// An entry that becomes the earliest wakes the dispatcher (Run), which may
// be sleeping until a later due time.
func (s *Service) queue(en *schedEntry) {
	switch {
	case en.job == jobNone && en.idx >= 0:
		heap.Remove(&s.dueQ, int(en.idx))
	case en.job == jobNone:
	case en.idx >= 0:
		heap.Fix(&s.dueQ, int(en.idx))
	default:
		heap.Push(&s.dueQ, en)
	}
	if en.idx == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// take hands out the earliest job due at now, marked in flight, and how
// late it starts (after its planned time); else it reports how long until the
// earliest entry is due (0: the queue is empty). An entry whose job is
// running is dropped: it is re-planned when the job ends (Run), so it is
// not lost.
func (s *Service) take(now time.Time) (t taken, wait time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.dueQ) > 0 {
		if wait = time.Duration(s.dueQ[0].due - now.UnixNano()); wait > 0 {
			return taken{}, wait, false
		}
		en := heap.Pop(&s.dueQ).(*schedEntry)
		s.spread.remove(en)
		if s.inflight[en.id] {
			continue
		}
		s.inflight[en.id] = true
		if en.due == 0 {
			wait = 0 // an invalidation is due when queued: on time
		}
		return taken{job{en.id, en.job.String()}, en.seq, -wait}, 0, true
	}
	return taken{}, 0, false
}

// Run schedules refreshes ahead of expiry, recovers expired refresh leases,
// expires abandoned authorisation attempts and finishes interrupted
// invalidations, until ctx ends. Work is bounded by Concurrency: the
// dispatcher first waits for a free worker slot, then for the earliest
// entry of the queue to come due (a timer armed for its due time, at most
// Tick, and woken when an earlier entry is queued), so that a job starts at
// its due time when a slot is free and the earliest due job takes the next
// free slot. On return no job is running: a job cancelled before its token
// request was sent returns at once, one past it finishes within its
// refresh lease.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); s.runProbes(ctx) }() // probe.go; returns at once without probers
	for {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		j, ok := s.nextJob(ctx)
		if !ok {
			<-s.sem
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := s.clock.Now()
			err := s.runJob(ctx, j.job)
			took := s.clock.Now().Sub(start)
			<-s.sem
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.inflight, j.id)
			if j.kind == "refresh" && (err == nil || !errors.Is(err, ErrNotDue) && !errors.Is(err, domain.ErrConflict) && ctx.Err() == nil) {
				s.spread.observe(took) // a refresh that did its work: what the capacity is made of
			}
			if en := s.sched[j.id]; en != nil && en.idx < 0 {
				// Not queued: the job changed nothing (yet), or what it
				// changed was planned while it ran (and dropped by take).
				// Queue it again; if nothing changed, no sooner than a
				// second from now.
				s.plan(j.id, en)
				if next := s.clock.Now().Add(time.Second).UnixNano(); en.seq == j.seq && en.idx >= 0 && en.due < next {
					en.due = next
					heap.Fix(&s.dueQ, int(en.idx))
				}
			}
		}()
	}
}

// nextJob waits until a job is due and takes it (false: ctx ended).
func (s *Service) nextJob(ctx context.Context) (taken, bool) {
	for {
		now := s.clock.Now()
		s.attempts.maybeSweep(now) // forget authorisation attempts older than their window
		j, wait, ok := s.take(now)
		if ok {
			if f := s.cfg.ObserveLateness; f != nil {
				f(j.kind, j.late)
			}
			return j, true
		}
		if wait <= 0 || wait > s.cfg.Tick {
			wait = s.cfg.Tick
		}
		timer := s.clock.After(wait)
		if !s.clock.Now().Before(now.Add(wait)) {
			continue // the clock passed the deadline before the timer was armed (a clock that jumps)
		}
		select {
		case <-ctx.Done():
			return taken{}, false
		case <-s.wake:
		case <-timer:
		}
	}
}

func (s *Service) runJob(ctx context.Context, j job) (err error) {
	switch j.kind {
	case "refresh":
		err = s.Refresh(ctx, j.id, domain.TriggerSchedule)
	case "recover":
		err = s.recoverLease(ctx, j.id)
	case "lapse":
		err = s.lapse(ctx, j.id)
	case "expire":
		_, _, err = s.transact(ctx, j.id, nil, func(c *domain.Connection) (domain.Command, error) {
			if c.State != domain.StateReauthorising || s.clock.Now().Before(c.AttemptExpiresAt) {
				return nil, ErrNotDue
			}
			return domain.FailAuthorisation{AttemptID: c.AttemptID, Expired: true, ErrorCode: "expired"}, nil
		}, false)
		if err == nil {
			s.log.Warn("authorisation attempt expired", "connection_id", j.id, "reason", string(domain.ReasonAuthorisationExpired))
		}
	case "invalidate":
		var c domain.Connection
		if c, err = s.cfg.Store.Load(ctx, j.id); err == nil {
			err = s.invalidate(ctx, &c)
		}
	}
	if err != nil && !errors.Is(err, domain.ErrConflict) && !errors.Is(err, ErrNotDue) && ctx.Err() == nil {
		s.log.Debug("scheduled job ended", "connection_id", j.id, "job", j.kind, "error", err.Error())
	}
	return err
}
