package lifecycle

import (
	"errors"
	"sync"
	"sync/atomic"
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
// A connection whose latest attempt is older than the window counts for
// nothing: sweep forgets those, at most every half window, so that the
// limiter holds the connections authorised lately, not every connection
// that was ever authorised.
//
// An attempt that completed successfully stops counting (completed): its
// entry left the attempts store when the callback took it, so it no longer
// holds anything the limit bounds, and a connection whose only attempt
// completed is forgotten at once instead of being held for a window (the
// set-up of every connection, one attempt each, left them all here). The
// limit still bounds what the store holds: attempts opened and not
// completed (abandoned, superseded, failed) count for the whole window.
// Opening attempts faster than that needs a successful authorisation at
// the provider for each.
type attemptLimiter struct {
	mu        sync.Mutex
	window    time.Duration
	perConn   int
	maxConns  int
	starts    map[string][]int64 // Unix ns of each attempt in the window, oldest first
	lastSweep atomic.Int64       // Unix ns of the last sweep
	sweeping  atomic.Bool
}

func newAttemptLimiter(window time.Duration, perConn, maxConns int) *attemptLimiter {
	return &attemptLimiter{window: window, perConn: perConn, maxConns: maxConns, starts: map[string][]int64{}}
}

// allow records an attempt of id at now, or reports how long until one is
// allowed again.
func (l *attemptLimiter) allow(id string, now time.Time) (bool, time.Duration) {
	l.maybeSweep(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	at := now.UnixNano()
	recent := l.starts[id][:0:0]
	for _, t := range l.starts[id] {
		if time.Duration(at-t) < l.window {
			recent = append(recent, t)
		}
	}
	if len(recent) >= l.perConn {
		l.starts[id] = recent
		return false, time.Duration(recent[0] + int64(l.window) - at)
	}
	if _, known := l.starts[id]; !known && len(l.starts) >= l.maxConns {
		l.evict(at)
	}
	l.starts[id] = append(recent, at)
	return true, 0
}

// completed forgets the attempt of id started at startedAt (Unix ns, the
// time allow was given) once it completed successfully, and id with it
// when it was the only one. An attempt this limiter does not hold (started
// on another instance, or before a restart) changes nothing.
func (l *attemptLimiter) completed(id string, startedAt int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts, ok := l.starts[id]
	if !ok {
		return
	}
	for i, t := range ts {
		if t == startedAt {
			if len(ts) == 1 {
				delete(l.starts, id)
			} else {
				l.starts[id] = append(ts[:i:i], ts[i+1:]...)
			}
			return
		}
	}
}

// maybeSweep sweeps, on a goroutine of its own, when half a window passed
// since the last sweep (the lifecycle calls it from the scheduler's loop
// too, so that a limiter nobody asks still forgets).
func (l *attemptLimiter) maybeSweep(now time.Time) {
	if l == nil {
		return
	}
	at := now.UnixNano()
	last := l.lastSweep.Load()
	if last == 0 {
		l.lastSweep.CompareAndSwap(0, at)
		return
	}
	if time.Duration(at-last) < l.window/2 || !l.sweeping.CompareAndSwap(false, true) {
		return
	}
	l.lastSweep.Store(at)
	go func() {
		defer l.sweeping.Store(false)
		l.sweep(at)
	}()
}

// sweep forgets the connections without an attempt in the window at now.
func (l *attemptLimiter) sweep(at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, ts := range l.starts {
		if len(ts) == 0 || time.Duration(at-ts[len(ts)-1]) >= l.window {
			delete(l.starts, id)
		}
	}
}

// evict forgets connections with no attempt in the window, or failing
// that the one whose latest attempt is oldest (l.mu held).
func (l *attemptLimiter) evict(at int64) {
	oldestID, oldest := "", at
	for id, ts := range l.starts {
		last := ts[len(ts)-1]
		if time.Duration(at-last) >= l.window {
			delete(l.starts, id)
			continue
		}
		if last < oldest {
			oldestID, oldest = id, last
		}
	}
	if len(l.starts) >= l.maxConns && oldestID != "" {
		delete(l.starts, oldestID)
	}
}
