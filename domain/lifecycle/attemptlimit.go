package lifecycle

import (
	"errors"
	"sync"
	"time"
)

// ErrTooManyAttempts: the connection opened MaxAttemptsPerConnection
// authorisation attempts within AuthorisationTTL on this instance. Every
// attempt leaves a sealed entry in the attempts store until it expires, so
// without a bound a caller could make the store grow without limit.
var ErrTooManyAttempts = errors.New("lifecycle: too many authorisation attempts for this connection; wait for the earlier ones to expire")

// attemptLimiter counts the attempts each connection opened in the last
// window (in memory, per instance). It tracks at most maxConns connections;
// beyond that the connection with the oldest latest attempt is forgotten.
type attemptLimiter struct {
	mu       sync.Mutex
	window   time.Duration
	perConn  int
	maxConns int
	starts   map[string][]time.Time
}

func newAttemptLimiter(window time.Duration, perConn, maxConns int) *attemptLimiter {
	return &attemptLimiter{window: window, perConn: perConn, maxConns: maxConns, starts: map[string][]time.Time{}}
}

// allow records an attempt of id at now, or reports how long until one is
// allowed again.
func (l *attemptLimiter) allow(id string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recent := l.starts[id][:0:0]
	for _, t := range l.starts[id] {
		if now.Sub(t) < l.window {
			recent = append(recent, t)
		}
	}
	if len(recent) >= l.perConn {
		l.starts[id] = recent
		return false, recent[0].Add(l.window).Sub(now)
	}
	if _, known := l.starts[id]; !known && len(l.starts) >= l.maxConns {
		l.evict(now)
	}
	l.starts[id] = append(recent, now)
	return true, 0
}

// evict forgets connections with no attempt in the window, or failing
// that the one whose latest attempt is oldest (l.mu held).
func (l *attemptLimiter) evict(now time.Time) {
	oldestID, oldest := "", now
	for id, ts := range l.starts {
		last := ts[len(ts)-1]
		if now.Sub(last) >= l.window {
			delete(l.starts, id)
			continue
		}
		if last.Before(oldest) {
			oldestID, oldest = id, last
		}
	}
	if len(l.starts) >= l.maxConns && oldestID != "" {
		delete(l.starts, oldestID)
	}
}
