package lifecycle

import (
	"hash/fnv"
	"time"
)

// Capacity-aware spreading of refresh times.
//
// A refresh is due a margin before its token expires (dueAt). Connections
// whose tokens were issued together (created in one burst, or seeded after
// an outage) come due together, and a wave larger than the scheduler can
// serve before the margin runs out makes refreshes start late, some after
// the token expired. Worse, the wave keeps its shape: a refresh that starts
// late is due late again a lifetime later.
//
// So the scheduler counts the refreshes it has planned per second (a
// bucket) and plans each refresh in the latest bucket, at or before its
// due time, that still has room for it. A bucket has room for a share
// (spreadHeadroom) of what the worker pool serves in a second, its
// capacity: Concurrency over the measured duration of a refresh (an
// average over the last refreshes, spreadInitialJob at first). When no
// bucket has room, the refresh goes to the least loaded bucket below
// capacity; when every bucket is at capacity, moving it would not help (the
// window is overloaded as a whole, and earlier refreshes only add work), so
// it stays at its due time. A refresh is never moved before a fifth of its
// token's lifetime has passed, nor more than spreadMax ahead of its due
// time, nor into the past. Once a wave is spread, the next one is too
// (each refresh is due a lifetime after the previous one), so spreading
// costs extra refreshes in the first cycle only. When the pool keeps up,
// every refresh stays at its due time.
const (
	spreadBucket     = time.Second
	spreadHeadroom   = 0.75
	spreadInitialJob = 100 * time.Millisecond
	spreadMax        = 15 * time.Minute
)

// spreader holds the planned refreshes per bucket and the capacity
// estimate (guarded by Service.mu). A nil spreader spreads nothing.
type spreader struct {
	load        map[int64]int32 // bucket (Unix time / spreadBucket) -> refreshes planned in it
	concurrency int
	job         time.Duration // moving average of a refresh's duration

	// skip lets place pass over runs of buckets without room: every
	// bucket in (skip[b], b] held at least skipRoom refreshes when it was
	// recorded. Loads only grow between the moments remove takes a bucket
	// below that, which clear it, so it stays true (a start-up seeding
	// places a wave without rescanning the buckets it filled).
	skip     map[int64]int64
	skipRoom int32
	visited  []int64
}

func newSpreader(concurrency int) *spreader {
	return &spreader{load: map[int64]int32{}, concurrency: concurrency, job: spreadInitialJob}
}

func bucketOf(t time.Time) int64 {
	n := t.UnixNano()
	b := n / int64(spreadBucket)
	if n < 0 && n%int64(spreadBucket) != 0 {
		b--
	}
	return b
}

// perBucket is how many refreshes a bucket takes before the next ones go
// earlier (room), and at most (capacity).
func (p *spreader) perBucket() (room, capacity int32) {
	n := float64(p.concurrency) * float64(spreadBucket) / float64(max(p.job, time.Millisecond))
	return int32(max(1, min(spreadHeadroom*n, 1<<30))), int32(max(1, min(n, 1<<30)))
}

// observe feeds the duration of a refresh that did its work.
func (p *spreader) observe(d time.Duration) {
	if p == nil || d <= 0 {
		return
	}
	p.job += (d - p.job) / 8
}

// place returns the time to refresh at: due, or a time in an earlier
// bucket, not before earliest (see the comment above). Within the bucket
// the time is the connection's own phase (from its id), so that the
// refreshes moved into a bucket are spread across it rather than bunched
// where their due times were.
func (p *spreader) place(id string, due, earliest time.Time) time.Time {
	if !due.After(earliest) {
		return due
	}
	last := bucketOf(due)
	first := last - int64(due.Sub(earliest)/spreadBucket)
	room, capacity := p.perBucket()
	if b, ok := p.roomAt(first, last, room); ok {
		return p.phase(id, b, last, earliest, due)
	}
	// No bucket has room: the least loaded one, by a full scan.
	best, bestLoad := last, p.load[last]
	for b := last; b >= first; b-- {
		l := p.load[b]
		if l < room {
			best, bestLoad = b, l
			break
		}
		if l < bestLoad {
			best, bestLoad = b, l
		}
	}
	if bestLoad >= capacity {
		return due
	}
	return p.phase(id, best, last, earliest, due)
}

// roomAt returns the latest bucket in [first, last] with fewer than room
// refreshes, passing over the runs skip records.
func (p *spreader) roomAt(first, last int64, room int32) (int64, bool) {
	if p.skipRoom != room || p.skip == nil {
		p.skip, p.skipRoom = map[int64]int64{}, room
	}
	// The start and the runs passed over point past this scan's run
	// (every bucket in (b, v] is full): one write for a scan that found
	// no run, so a busy scheduler pays little for it.
	p.visited = p.visited[:0]
	b, steps := last, 0
	for b >= first && p.load[b] >= room {
		steps++
		if s, ok := p.skip[b]; ok && s < b {
			p.visited = append(p.visited, b)
			b = s
		} else {
			b--
		}
	}
	if steps > 1 {
		p.skip[last] = b
		for _, v := range p.visited {
			p.skip[v] = b
		}
	}
	return b, b >= first
}

// phase returns the time to refresh at in bucket best (see place).
func (p *spreader) phase(id string, best, last int64, earliest, due time.Time) time.Time {
	if best == last {
		return due
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	at := time.Unix(0, best*int64(spreadBucket)).Add(time.Duration(uint64(h.Sum32()) * uint64(spreadBucket) >> 32))
	return later(at, earliest)
}

// add counts en in the bucket of its planned refresh, en.spreadDue.
func (p *spreader) add(en *schedEntry) {
	if p == nil {
		return
	}
	en.counted = true
	p.load[bucketOf(timeOf(en.spreadDue))]++
}

// remove takes en out of its bucket (it runs now, or is planned again).
func (p *spreader) remove(en *schedEntry) {
	if p == nil || !en.counted {
		return
	}
	en.counted = false
	bucket := bucketOf(timeOf(en.spreadDue)) // spreadDue does not change while counted
	if p.load[bucket] == p.skipRoom && len(p.skip) > 0 {
		clear(p.skip) // the bucket has room again
	}
	if p.load[bucket]--; p.load[bucket] <= 0 {
		delete(p.load, bucket)
	}
}

// refreshAt is when the entry's refresh is planned (s.mu held): spread
// once per set of tokens, then kept, so that a connection observed again
// (another event, a restart of the projection) keeps its place.
func (s *Service) refreshAt(id string, en *schedEntry) time.Time {
	issued, expires := timeOf(en.issuedAt), timeOf(en.expiresAt)
	due := s.dueAt(id, issued, expires)
	if s.spread == nil {
		return due
	}
	if _, ok := en.planned(issued, expires); !ok {
		earliest := due
		if life := expires.Sub(issued); life > 0 {
			earliest = issued.Add(life / 5)
		}
		earliest = later(earliest, due.Add(-spreadMax), s.clock.Now())
		en.spreadDue, en.spreadOld = nanos(s.spread.place(id, due, earliest)), false
	}
	s.spread.add(en)
	return timeOf(en.spreadDue)
}

// plannedRefresh returns the time planned for the connection's tokens
// issued and expiring as given, if this scheduler planned them (s.mu
// held).
func (s *Service) plannedRefresh(id string, issued, expires time.Time) (time.Time, bool) {
	if en := s.sched[id]; en != nil {
		return en.planned(issued, expires)
	}
	return time.Time{}, false
}

func (en *schedEntry) planned(issued, expires time.Time) (time.Time, bool) {
	if en.spreadDue == 0 || en.spreadOld || en.issuedAt != nanos(issued) || en.expiresAt != nanos(expires) {
		return time.Time{}, false
	}
	return timeOf(en.spreadDue), true
}

func later(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.After(t) {
			t = u
		}
	}
	return t
}
