package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestScaleFlags(t *testing.T) {
	o, err := parseScaleFlags([]string{"--connections", "100", "--access-ttl", "15m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.window != 18*time.Minute || o.pollRate != 50 {
		t.Fatalf("window %s, poll rate %d", o.window, o.pollRate)
	}
	if o, _ := parseScaleFlags(nil, io.Discard); o.window != 60*time.Second {
		t.Fatalf("default window %s, want 60s for 30s tokens", o.window)
	}
	for _, bad := range [][]string{{"--connections", "0"}, {"--access-ttl", "1s"}, {"--window", "1s"}, {"--poll-rate", "-1"}, {"x"}} {
		if _, err := parseScaleFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The analysis counts a refresh.started after the token's expiry as late,
// a new token stored after the old one expired as a gap, latencies of
// refreshes started in the window only, and terminal failures as lost.
func TestScaleAnalysis(t *testing.T) {
	t0 := time.Unix(1000, 0) // ev's time base
	at := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	tok := func(exp float64) string {
		return `{"tokens":{"access_token_expires_at":"` + t0.Add(at(exp)).Format(time.RFC3339Nano) + `"}}`
	}
	evs := []scanEvent{
		ev(1, "a", "authorisation.completed", "1", 0, tok(30)),
		ev(2, "b", "authorisation.completed", "2", 0, tok(30)),
		ev(3, "c", "authorisation.completed", "3", 0, tok(30)),
		// a: on time, 100 ms.
		ev(4, "a", "refresh.started", "4", at(24), ""),
		ev(5, "a", "refresh.succeeded", "5", at(24.1), tok(54)),
		// b: started after its token expired at 30 s.
		ev(6, "b", "refresh.started", "6", at(31), ""),
		ev(7, "b", "refresh.succeeded", "7", at(31.2), tok(61)),
		// c: started in time, stored after expiry, then lost.
		ev(8, "c", "refresh.started", "8", at(29.9), ""),
		ev(9, "c", "refresh.succeeded", "9", at(30.5), tok(60)),
		ev(10, "c", "refresh.started", "10", at(55), ""),
		ev(11, "c", "refresh.failed", "11", at(55.1), `{"terminal":true,"reason":"invalid_grant"}`),
		ev(12, "c", "refresh.failed", "12", at(56), `{"terminal":false}`),
	}
	a := newScaleAnalysis(t0.Add(at(10)), t0.Add(at(60)))
	for _, e := range evs {
		a.add(e)
	}
	var rep scaleReport
	rep.Connections = 3
	a.finish(&rep, 50, scaleOptions{accessTTL: 30 * time.Second})
	if rep.Refreshes != 3 || rep.LateStarts != 1 || rep.ExpiredGaps != 2 || rep.FailedTransient != 1 || rep.Lost["invalid_grant"] != 1 {
		t.Fatalf("%+v", rep)
	}
	if rep.P50ms != 200 || rep.P99ms != 600 {
		t.Fatalf("p50 %v p99 %v", rep.P50ms, rep.P99ms)
	}
	rep.judge(scaleOptions{accessTTL: 30 * time.Second, window: 50 * time.Second})
	if len(rep.Violations) != 3 {
		t.Fatalf("violations %q", rep.Violations)
	}
}

// Every flag and every line of the report is described in the "Scale run"
// section of docs/operations.md.
func TestScaleDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## Scale run")
	if i < 0 {
		t.Fatal("docs/operations.md has no Scale run section")
	}
	section := doc[i:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	scaleFlagSet(new(scaleOptions)).VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(section, "`--"+f.Name+"`") {
			t.Errorf("flag --%s is not in the Scale run section", f.Name)
		}
	})
	var out strings.Builder
	printScale(&out, &scaleReport{})
	for _, l := range strings.Split(out.String(), "\n") {
		l = strings.TrimSpace(l)
		if len(l) < 28 || strings.HasPrefix(l, "scale run") || strings.HasPrefix(l, "PASS") || strings.HasPrefix(l, "FAIL") {
			continue
		}
		name := strings.TrimSpace(l[:28])
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("report line %q is not in the Scale run section", name)
		}
	}
}
