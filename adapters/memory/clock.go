package memory

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Clock is a settable fake domain.Clock. Time moves only when the test says
// so (Set, Advance, AdvanceToNext); a channel from After receives the new
// time once the clock has been moved to or past its deadline. It is safe for
// concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*waiter
	changed chan struct{} // closed and replaced whenever waiters change
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ domain.Clock = (*Clock)(nil)

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t, changed: make(chan struct{})} }

// Now implements domain.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After implements domain.Clock: the channel (buffered, never closed)
// receives the clock's time once the clock reaches Now()+d. For d <= 0 it
// has a value at once and does not count as a waiter.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, &waiter{at: c.now.Add(d), ch: ch})
	c.notifyLocked()
	return ch
}

func (c *Clock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Set moves the clock to t (backwards too) and fires every After channel
// whose deadline is not after t, earliest first.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	n := 0
	for _, w := range c.waiters {
		if w.at.After(t) {
			break
		}
		w.ch <- t
		n++
	}
	if n > 0 {
		c.waiters = append(c.waiters[:0:0], c.waiters[n:]...)
		c.notifyLocked()
	}
}

// Advance moves the clock forward by d (see Set).
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// AdvanceToNext moves the clock to the earliest pending After deadline and
// fires it; it returns how far the clock moved, and false (not moving) when
// nothing waits.
func (c *Clock) AdvanceToNext() (time.Duration, bool) {
	c.mu.Lock()
	if len(c.waiters) == 0 {
		c.mu.Unlock()
		return 0, false
	}
	next := c.waiters[0].at
	for _, w := range c.waiters[1:] {
		if w.at.Before(next) {
			next = w.at
		}
	}
	d := next.Sub(c.now)
	c.mu.Unlock()
	c.Set(next)
	return d, true
}

// Waiters returns how many After channels wait for a deadline not reached
// yet (including ones whose reader has gone: a channel is pending until
// the clock reaches its deadline).
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// BlockUntil waits, without sleeping, until at least n After channels are
// pending (so that the goroutines under test are parked on the clock), or
// until ctx ends, whose error it then returns.
func (c *Clock) BlockUntil(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.waiters) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
