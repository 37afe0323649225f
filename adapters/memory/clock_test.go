package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
)

func fired(ch <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-ch:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestClockAfterFiresWhenAdvanced(t *testing.T) {
	c := memory.NewClock(t0)
	short, long := c.After(time.Minute), c.After(time.Hour)
	if now, ok := fired(c.After(0)); !ok || !now.Equal(t0) {
		t.Fatal("After(0) did not fire at once")
	}
	if c.Waiters() != 2 {
		t.Fatalf("waiters %d, want 2", c.Waiters())
	}
	c.Advance(59 * time.Second)
	if _, ok := fired(short); ok {
		t.Fatal("fired before its deadline")
	}
	c.Advance(time.Second)
	if v, ok := fired(short); !ok || !v.Equal(t0.Add(time.Minute)) {
		t.Fatalf("not fired at its deadline: %v %v", v, ok)
	}
	if _, ok := fired(long); ok || c.Waiters() != 1 {
		t.Fatal("the long one fired early")
	}
	c.Set(t0) // backwards: nothing fires
	if _, ok := fired(long); ok {
		t.Fatal("fired going backwards")
	}
	d, ok := c.AdvanceToNext()
	if !ok || d != time.Hour || !c.Now().Equal(t0.Add(time.Hour)) {
		t.Fatalf("AdvanceToNext moved %v (%v) to %v", d, ok, c.Now())
	}
	if _, ok := fired(long); !ok {
		t.Fatal("AdvanceToNext did not fire the next deadline")
	}
	if _, ok := c.AdvanceToNext(); ok {
		t.Fatal("AdvanceToNext with nothing waiting")
	}
}

func TestClockBlockUntilWaiters(t *testing.T) {
	c := memory.NewClock(t0)
	const n = 3
	done := make(chan time.Time, n)
	for i := 0; i < n; i++ {
		go func() { done <- <-c.After(time.Duration(i+1) * time.Second) }()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.BlockUntil(ctx, n); err != nil {
		t.Fatal(err)
	}
	c.Advance(n * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("a waiter was not woken")
		}
	}
	short, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if err := c.BlockUntil(short, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("BlockUntil with nobody waiting: %v", err)
	}
}
