package webhook

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndHonoursRetryAfter(t *testing.T) {
	m := &Manager{cfg: Config{BackoffBase: time.Second, BackoffMax: 10 * time.Minute}.withDefaults()}
	for attempt := 1; attempt <= 40; attempt++ {
		full := min(time.Second<<min(attempt-1, 30), 10*time.Minute)
		if attempt > 30 {
			full = 10 * time.Minute
		}
		d := m.backoff(attempt, 0)
		if d < full/2 || d > full {
			t.Fatalf("attempt %d: %s not in [%s, %s]", attempt, d, full/2, full)
		}
	}
	if d := m.backoff(1, 90*time.Second); d != 90*time.Second {
		t.Fatalf("Retry-After 90s: %s", d)
	}
	if d := m.backoff(1, 5*time.Hour); d != time.Hour {
		t.Fatalf("Retry-After is capped at an hour: %s", d)
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	if got := parseRetryAfter("120", now); got != 2*time.Minute {
		t.Fatal(got)
	}
	if got := parseRetryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now); got != 30*time.Second {
		t.Fatal(got)
	}
	if got := parseRetryAfter("soon", now); got != 0 {
		t.Fatal(got)
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, public := range map[string]bool{
		"93.184.216.34": true, "2606:4700::1111": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.5": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "::1": false, "fc00::1": false, "fe80::1": false, "::ffff:127.0.0.1": false,
		"224.0.0.1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != public {
			t.Errorf("%s: public %v, want %v", addr, got, public)
		}
	}
}
