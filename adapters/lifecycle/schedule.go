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

// schedEntry is what the scheduler knows of a connection, kept from events.
type schedEntry struct {
	seq        uint64
	state      domain.State
	tokensHeld bool
	issuedAt   time.Time // time of the event that stored the current tokens
	expiresAt  time.Time
	retryAt    time.Time
	leaseUntil time.Time
	attemptExp time.Time
	deleted    bool
	seeded     bool // set from an aggregate (Seed) or from connection.created

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
		// A refresher that died is recovered a little after its lease.
		if !en.leaseUntil.IsZero() {
			en.job, en.due = "recover", en.leaseUntil.Add(time.Second)
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

// Observe feeds the scheduler with an event (from the stream on every
// instance, and from this instance's own appends). Idempotent by Seq.
func (s *Service) Observe(e domain.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.sched[e.ConnectionID]
	if !ok {
		en = &schedEntry{idx: -1}
		s.sched[e.ConnectionID] = en
	}
	if e.Seq != 0 && e.Seq <= en.seq {
		return
	}
	en.seq = e.Seq
	if to, err := domain.Next(en.state, domain.TransitionName(e.Payload)); err == nil {
		en.state = to
	}
	switch d := e.Payload.(type) {
	case domain.ConnectionCreated:
		en.state, en.seeded = domain.StateUnauthenticated, true
	case domain.AuthorisationStarted:
		en.attemptExp = d.ExpiresAt
	case domain.AuthorisationCompleted:
		en.tokensHeld, en.issuedAt, en.expiresAt, en.retryAt = true, e.Time, d.Tokens.AccessTokenExpiresAt, time.Time{}
	case domain.RefreshStarted:
		en.leaseUntil = d.LeaseUntil
	case domain.RefreshSucceeded:
		en.tokensHeld, en.issuedAt, en.expiresAt, en.retryAt, en.leaseUntil = true, e.Time, d.Tokens.AccessTokenExpiresAt, time.Time{}, time.Time{}
	case domain.RefreshFailed:
		en.leaseUntil, en.retryAt = time.Time{}, d.RetryAt
	case domain.TokensInvalidated:
		en.tokensHeld = false
	case domain.ConnectionDeleted:
		en.deleted = true
	}
	s.plan(e.ConnectionID, en)
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
	issued := c.LastRefreshAt
	if issued.IsZero() || !c.LastRefreshOK {
		issued = c.Since
	}
	return refreshDue(now, c.RetryAt, s.dueAt(c.ID, issued, c.Tokens.AccessTokenExpiresAt))
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
// invalidations, until ctx ends. Work is bounded by Concurrency.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, j := range s.dueJobs(s.cfg.Now()) {
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
						if next := s.cfg.Now().Add(time.Second); en.idx >= 0 && en.due.Before(next) {
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
		_, _, err = s.decideAppend(ctx, j.id, func(c *domain.Connection) (domain.Command, error) {
			return domain.RecoverLease{Now: s.cfg.Now()}, nil
		}, nil)
		if err == nil {
			s.log.Warn("refresh lease expired; recovered", "connection_id", j.id)
		}
	case "expire":
		_, _, err = s.decideAppend(ctx, j.id, func(c *domain.Connection) (domain.Command, error) {
			if c.State != domain.StateReauthorising || s.cfg.Now().Before(c.AttemptExpiresAt) {
				return nil, ErrNotDue
			}
			return domain.FailAuthorisation{AttemptID: c.AttemptID, Expired: true, ErrorCode: "expired"}, nil
		}, nil)
		if err == nil {
			s.log.Warn("authorisation attempt expired", "connection_id", j.id, "reason", string(domain.ReasonAuthorisationExpired))
		}
	case "invalidate":
		err = s.invalidate(ctx, j.id)
	}
	if err != nil && !errors.Is(err, domain.ErrConflict) && !errors.Is(err, ErrNotDue) && ctx.Err() == nil {
		s.log.Debug("scheduled job ended", "connection_id", j.id, "job", j.kind, "error", err.Error())
	}
}

// Seed sets the scheduler's view of a connection from its aggregate (at
// start-up, from the status projection restored from its snapshot); later
// events come through Observe.
func (s *Service) Seed(c domain.Connection) {
	issued := c.LastRefreshAt
	if issued.IsZero() || !c.LastRefreshOK {
		issued = c.Since
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// An entry a live event created before seeding knows only that event
	// (its state may be empty): the aggregate, which includes it, wins.
	if en, ok := s.sched[c.ID]; ok && en.seq >= c.Version && en.state != "" && en.seeded {
		return
	}
	if old, ok := s.sched[c.ID]; ok && old.idx >= 0 {
		heap.Remove(&s.dueQ, old.idx)
	}
	en := &schedEntry{
		idx: -1, seeded: true,
		seq: c.Version, state: c.State, tokensHeld: c.TokensHeld,
		issuedAt: issued, expiresAt: c.Tokens.AccessTokenExpiresAt, retryAt: c.RetryAt,
		leaseUntil: c.LeaseUntil, attemptExp: c.AttemptExpiresAt, deleted: c.Deleted,
	}
	s.plan(c.ID, en)
	s.sched[c.ID] = en
}
