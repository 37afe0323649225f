package porttest

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// The helpers below are not contracts: they are the test support that
// several test packages share (httpapi, sandbox, cmd/tokenline/app and the
// end-to-end tests), kept here because porttest depends on nothing but
// domain.

// LogBuffer is a goroutine-safe io.Writer that collects what concurrent
// handlers, loggers or commands write, for a test to read while they run.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SkewClock is a domain.Clock reading real time plus a skew that a test
// moves forward (Advance), to make tokens due or attempts expire without
// sleeping. After waits in real time. The zero value reads real time.
type SkewClock struct{ skew atomic.Int64 }

var _ domain.Clock = (*SkewClock)(nil)

// Now implements domain.Clock.
func (c *SkewClock) Now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

// After implements domain.Clock.
func (c *SkewClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Advance moves the clock forward by d.
func (c *SkewClock) Advance(d time.Duration) { c.skew.Add(int64(d)) }
