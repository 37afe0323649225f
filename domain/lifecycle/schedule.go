package lifecycle

import (
	"container/heap"
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// schedEntry is what the scheduler knows of a connection: derived from its
// aggregate (see track), never from events directly.
type schedEntry struct {
	seq        uint64
	state      domain.State
	tokensHeld bool
	issuedAt   time.Time // when the current tokens were stored
	expiresAt  time.Time
	retryAt    time.Time
	leaseUntil time.Time
	attemptExp time.Time
	deleted    bool

	// job and due are derived from the fields above whenever they change
	// (plan); entries with a job wait in the scheduler's queue, a min-heap
	// by due time, at index idx (-1: not queued).
	id  string
	job string
	due time.Time
	idx int
}

// dueQueue is a min-heap of entries by due time (container/heap).
type dueQueue []*schedEntry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i]; q[i].idx = i; q[j].idx = j }
func (q *dueQueue) Push(x any)        { en := x.(*schedEntry); en.idx = len(*q); *q = append(*q, en) }
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
	defer s.queue(en)
	en.id, en.job, en.due = id, "", time.Time{}
	if en.deleted && en.state != domain.StateUnauthenticated {
		return
	}
	switch en.state {
	case domain.StateActive:
		if en.tokensHeld {
			en.job = "refresh"
			if !en.retryAt.IsZero() {
				en.due = en.retryAt
			} else {
				en.due = s.dueAt(id, en.issuedAt, en.expiresAt)
			}
		}
	case domain.StateRefreshing:
		// A refresher that died is recovered LeaseGrace after its lease
		// ended; a live one extends the lease (refresh.lease_extended),
		// which moves leaseUntil and so this job, before that.
		if !en.leaseUntil.IsZero() {
			en.job, en.due = "recover", en.leaseUntil.Add(s.cfg.LeaseGrace)
		}
	case domain.StateReauthorising:
		if !en.attemptExp.IsZero() {
			en.job, en.due = "expire", en.attemptExp
		}
	case domain.StateUnauthenticated:
		if en.tokensHeld { // crash between the terminal event and invalidation
			en.job = "invalidate"
		}
	}
}

// Observe feeds the scheduler with a connection's aggregate after a change
// (before is unused: what is due depends on the state after). It is
// registered with the status projection's change hook
// (projections.Status.OnChange), which calls it in the order of the changes
// for this instance's appends and the stream's events alike, and once per
// connection to seed it at start-up: the latest call is the state to plan
// for. It must stay fast: it runs under the projection's lock.
func (s *Service) Observe(before, after *domain.Connection) {
	if after == nil || after.ID == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.sched[after.ID]
	if !ok {
		en = &schedEntry{idx: -1}
		s.sched[after.ID] = en
	}
	en.seq, en.state, en.tokensHeld, en.deleted = after.Version, after.State, after.TokensHeld, after.Deleted
	en.issuedAt, en.expiresAt = issuedAt(after), after.Tokens.AccessTokenExpiresAt
	en.retryAt, en.leaseUntil, en.attemptExp = after.RetryAt, after.LeaseUntil, after.AttemptExpiresAt
	s.plan(after.ID, en)
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
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return 0.9 + float64(h.Sum32()%1000)/5000
}

func (s *Service) dueAt(id string, issued, expires time.Time) time.Time {
	life := expires.Sub(issued)
	if life <= 0 {
		life = 15 * time.Minute
	}
	margin := time.Duration(float64(s.cfg.Margin(life)) * jitter(id))
	return expires.Add(-margin)
}

// due reports whether an active connection should be refreshed at now.
func (s *Service) due(c *domain.Connection, now time.Time) bool {
	if c.State != domain.StateActive || !c.TokensHeld {
		return false
	}
	return refreshDue(now, c.RetryAt, s.dueAt(c.ID, issuedAt(c), c.Tokens.AccessTokenExpiresAt))
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
	kind string // "refresh", "recover", "expire", "invalidate"
}

// queue puts en in the due queue, moves it, or takes it out (s.mu held).
func (s *Service) queue(en *schedEntry) {
	switch {
	case en.job == "" && en.idx >= 0:
		heap.Remove(&s.dueQ, en.idx)
	case en.job == "":
	case en.idx >= 0:
		heap.Fix(&s.dueQ, en.idx)
	default:
		heap.Push(&s.dueQ, en)
	}
}

// dueJobs takes the jobs due at now off the queue. An entry whose job is
// running is re-planned when the job ends (Run), so it is not lost.
func (s *Service) dueJobs(now time.Time) []job {
	s.mu.Lock()
	defer s.mu.Unlock()
	var jobs []job
	for len(s.dueQ) > 0 && !now.Before(s.dueQ[0].due) {
		en := heap.Pop(&s.dueQ).(*schedEntry)
		if !s.inflight[en.id] {
			jobs = append(jobs, job{en.id, en.job})
		}
	}
	return jobs
}

// Run schedules refreshes ahead of expiry, recovers expired refresh leases,
// expires abandoned authorisation attempts and finishes interrupted
// invalidations, until ctx ends, every Tick of the clock. Work is bounded
// by Concurrency. On return no job is running: a job cancelled before its
// token request was sent returns at once, one past it finishes within its
// refresh lease.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(s.cfg.Tick):
		}
		for _, j := range s.dueJobs(s.clock.Now()) {
			select {
			case s.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			s.mu.Lock()
			if s.inflight[j.id] {
				s.mu.Unlock()
				<-s.sem
				continue
			}
			s.inflight[j.id] = true
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					<-s.sem
					s.mu.Lock()
					delete(s.inflight, j.id)
					if en := s.sched[j.id]; en != nil && en.idx < 0 {
						// The job changed nothing (yet): queue it again, no
						// sooner than a second from now.
						s.plan(j.id, en)
						if next := s.clock.Now().Add(time.Second); en.idx >= 0 && en.due.Before(next) {
							en.due = next
							heap.Fix(&s.dueQ, en.idx)
						}
					}
					s.mu.Unlock()
				}()
				s.runJob(ctx, j)
			}()
		}
	}
}

func (s *Service) runJob(ctx context.Context, j job) {
	var err error
	switch j.kind {
	case "refresh":
		err = s.Refresh(ctx, j.id, domain.TriggerSchedule)
	case "recover":
		err = s.recoverLease(ctx, j.id)
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
}
