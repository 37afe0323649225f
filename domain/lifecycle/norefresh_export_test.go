package lifecycle

import "time"

// PlannedJob returns the job the scheduler has queued for the connection
// and when it is due; ok is false when nothing is queued.
func PlannedJob(s *Service, id string) (kind string, due time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	en := s.sched[id]
	if en == nil || en.job == jobNone || en.idx < 0 {
		return "", time.Time{}, false
	}
	return en.job.String(), timeOf(en.due), true
}
