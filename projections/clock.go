package projections

import (
	"sync"
	"sync/atomic"
	"time"
)

// ClockResolution is how often the gate's coarse clock is advanced.
//
// Reading time.Now costs about 20 ns, as much as the rest of Gate.Check, so
// the gate reads a process-wide clock that one goroutine advances every
// ClockResolution. The clock is therefore behind real time by up to
// ClockResolution (more if that goroutine is starved); the gate refuses a
// token GateOptions.ExpiryMargin before its recorded expiry, and the margin
// (10 s by default) is far larger than the clock's error, so a token is never
// handed out after it expired.
const ClockResolution = 5 * time.Millisecond

var coarse struct {
	once sync.Once
	now  atomic.Int64
}

// startCoarseClock starts the process-wide clock once; it runs for the life
// of the process (one goroutine, ClockResolution wake-ups).
func startCoarseClock() {
	coarse.once.Do(func() {
		coarse.now.Store(time.Now().UnixNano())
		go func() {
			t := time.NewTicker(ClockResolution)
			for range t.C {
				coarse.now.Store(time.Now().UnixNano())
			}
		}()
	})
}

// coarseNow returns the coarse clock in Unix nanoseconds.
func coarseNow() int64 { return coarse.now.Load() }
