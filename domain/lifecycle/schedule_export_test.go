package lifecycle

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Test hooks of the scheduler for the external tests (lifecycle_test).

// PlannedRefresh returns when the scheduler plans the connection's refresh
// and when it would without spreading (dueAt); ok is false when no
// refresh is queued.
func PlannedRefresh(s *Service, id string) (planned, natural time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	en := s.sched[id]
	if en == nil || en.job != jobRefresh || en.idx < 0 {
		return time.Time{}, time.Time{}, false
	}
	return timeOf(en.due), s.dueAt(id, timeOf(en.issuedAt), timeOf(en.expiresAt)), true
}

// SetRefreshDuration sets the scheduler's estimate of a refresh's duration
// (its capacity: Concurrency refreshes per that duration).
func SetRefreshDuration(s *Service, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spread.job = d
}

// Unspread turns spreading off: every refresh is due at dueAt.
func Unspread(s *Service) {
	s.mu.Lock()
	s.spread = nil
	s.mu.Unlock()
}

// RunUnspread runs the scheduler as it was before issue 13 (with Unspread
// first): a fixed Tick, and every job due at a tick taken off the queue at
// once, each then waiting for a worker slot. For the before/after figures
// of BenchmarkSchedulerBurst.
func RunUnspread(s *Service, ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(s.cfg.Tick):
		}
		now := s.clock.Now()
		for _, j := range s.dueJobsLate(now) {
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
			if f := s.cfg.ObserveLateness; f != nil {
				f(j.kind, s.clock.Now().Sub(j.due))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					<-s.sem
					s.mu.Lock()
					delete(s.inflight, j.id)
					if en := s.sched[j.id]; en != nil && en.idx < 0 {
						s.plan(j.id, en)
						if next := s.clock.Now().Add(time.Second).UnixNano(); en.idx >= 0 && en.due < next {
							en.due = next
							heap.Fix(&s.dueQ, int(en.idx))
						}
					}
					s.mu.Unlock()
				}()
				_ = s.runJob(ctx, j.job)
			}()
		}
	}
}

type lateJob struct {
	job
	due time.Time
}

// dueJobs takes every job due at now off the queue (the scheduler before
// issue 13 did this at every tick); jobs in flight are dropped.
func (s *Service) dueJobs(now time.Time) []job {
	var jobs []job
	for _, j := range s.dueJobsLate(now) {
		jobs = append(jobs, j.job)
	}
	return jobs
}

func (s *Service) dueJobsLate(now time.Time) []lateJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	var jobs []lateJob
	for len(s.dueQ) > 0 && now.UnixNano() >= s.dueQ[0].due {
		en := heap.Pop(&s.dueQ).(*schedEntry)
		s.spread.remove(en)
		if !s.inflight[en.id] {
			jobs = append(jobs, lateJob{job{en.id, en.job.String()}, timeOf(en.due)})
		}
	}
	return jobs
}

// AttemptsCounted returns how many of the connection's authorisation
// attempts the limiter counts (MaxAuthorisationsPerConnection).
func AttemptsCounted(s *Service, id string) int {
	s.attempts.mu.Lock()
	defer s.attempts.mu.Unlock()
	return len(s.attempts.starts[id])
}
