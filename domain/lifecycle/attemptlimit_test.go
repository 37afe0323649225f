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
