package lifecycle

import (
	"testing"
	"time"
)

func TestAttemptLimiterForgetsConnectionsBeyondItsCap(t *testing.T) {
	l := newAttemptLimiter(time.Minute, 2, 3)
	now := time.Now()
	for i, id := range []string{"a", "b", "c", "d"} {
		if ok, _ := l.allow(id, now.Add(time.Duration(i)*time.Second)); !ok {
			t.Fatalf("%s refused", id)
		}
	}
	if len(l.starts) > 3 {
		t.Fatalf("%d connections tracked, cap 3", len(l.starts))
	}
	if _, ok := l.starts["a"]; ok {
		t.Fatal("the connection with the oldest attempt was not the one forgotten")
	}
	l.allow("d", now.Add(5*time.Second))
	if ok, wait := l.allow("d", now.Add(6*time.Second)); ok || wait <= 0 || wait > time.Minute {
		t.Fatalf("third attempt of d: allowed %v, wait %v", ok, wait)
	}
}

// A connection whose attempts are all older than the window is forgotten
// by the sweep, which runs at most every half window (here from allow),
// and one with an attempt inside the window is kept, its count intact.
func TestAttemptLimiterSweepsExpiredConnections(t *testing.T) {
	l := newAttemptLimiter(time.Minute, 2, 100)
	t0 := time.Unix(1_700_000_000, 0)
	l.allow("old", t0)
	l.allow("recent", t0.Add(50*time.Second))
	l.allow("recent", t0.Add(55*time.Second))
	l.sweep(t0.Add(70 * time.Second).UnixNano())
	if _, ok := l.starts["old"]; ok {
		t.Fatal("a connection without an attempt in the window was kept")
	}
	if ok, wait := l.allow("recent", t0.Add(80*time.Second)); ok || wait != 30*time.Second {
		t.Fatalf("third attempt within the window: allowed %v, wait %v (want refused, 30s)", ok, wait)
	}
	// maybeSweep: the first call starts the clock, a call within half a
	// window does nothing, one after it sweeps (on its own goroutine).
	m := newAttemptLimiter(time.Minute, 2, 100)
	m.allow("a", t0)
	m.maybeSweep(t0.Add(29 * time.Second))
	m.mu.Lock()
	n := len(m.starts)
	m.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d connections tracked after a sweep inside half a window, want 1", n)
	}
	m.maybeSweep(t0.Add(61 * time.Second))
	for i := 0; i < 1000 && m.sweeping.Load(); i++ {
		time.Sleep(time.Millisecond)
	}
	m.mu.Lock()
	n = len(m.starts)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections tracked after the sweep, want 0", n)
	}
}

// An attempt that completed successfully stops counting: a connection
// whose only attempt completed is forgotten at once; the others keep
// counting for the window, and a start the limiter does not hold changes
// nothing.
func TestAttemptLimiterForgetsCompletedAttempts(t *testing.T) {
	l := newAttemptLimiter(time.Minute, 2, 100)
	t0 := time.Unix(1_700_000_000, 0)
	l.allow("one", t0)
	l.completed("one", t0.UnixNano())
	if _, ok := l.starts["one"]; ok {
		t.Fatal("a connection whose only attempt completed is still held")
	}
	// Two attempts, the first abandoned, the second completed: the
	// abandoned one still counts.
	l.allow("two", t0)
	l.allow("two", t0.Add(time.Second))
	if ok, _ := l.allow("two", t0.Add(2*time.Second)); ok {
		t.Fatal("third attempt within the window allowed")
	}
	l.completed("two", t0.Add(time.Second).UnixNano())
	if got := l.starts["two"]; len(got) != 1 || got[0] != t0.UnixNano() {
		t.Fatalf("after completion: %v, want the abandoned attempt only", got)
	}
	if ok, _ := l.allow("two", t0.Add(3*time.Second)); !ok {
		t.Fatal("an attempt refused while one counted")
	}
	if ok, wait := l.allow("two", t0.Add(4*time.Second)); ok || wait != 56*time.Second {
		t.Fatalf("limit after completion: allowed %v, wait %v (want refused, 56s)", ok, wait)
	}
	// Unknown start (another instance's attempt): nothing forgotten.
	l.completed("two", t0.Add(30*time.Second).UnixNano())
	l.completed("never", t0.UnixNano())
	if got := l.starts["two"]; len(got) != 2 {
		t.Fatalf("an unknown completion changed the count: %v", got)
	}
}
