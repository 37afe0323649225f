package app

// How the client commands read their arguments and flags: connection ids,
// key=value pairs and times.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// exactlyOneID requires one non-empty connection id argument.
func exactlyOneID(_ *cobra.Command, args []string) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return fmt.Errorf("want one connection id, got %d arguments", len(args))
	}
	return nil
}

// connID is a connection id as given on the command line, without the
// spaces around it. The client escapes it: a mistyped id reaches the server
// (which says what is wrong with it) and never another route.
func connID(id string) string { return strings.TrimSpace(id) }

// parseConfigPairs reads key=value entries.
func parseConfigPairs(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--config %q: want key=value", p)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--config: key %q is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// parseWhen reads a time given as RFC 3339, a date (UTC midnight), "now", or
// a duration before now (90s, 15m, 1h30m, 2d).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now, nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	d, err := parseAgo(s)
	if err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-11-28T10:00:00Z) or a duration ago (90s, 15m, 1h, 2d)", flag, s)
}

func parseAgo(s string) (time.Duration, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "-"), " ago")
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		var n int
		if _, err := fmt.Sscanf(s[:i], "%d", &n); err != nil || fmt.Sprint(n) != s[:i] {
			return 0, errors.New("bad days")
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("bad duration")
	}
	return days + d, nil
}
