package main

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func ev(seq uint64, conn, typ, id string, at time.Duration, data string) scanEvent {
	var raw json.RawMessage
	if data != "" {
		raw = json.RawMessage(data)
	}
	return scanEvent{Seq: seq, Subject: "tokenline.conn." + conn, ID: id, Type: typ,
		Time: time.Unix(1000, 0).Add(at), Data: raw}
}

// The analysis finds each kind of anomaly in the phase it happened in, and
// nothing in a clean history.
func TestAnalyse(t *testing.T) {
	ms := time.Millisecond
	evs := []scanEvent{
		// phase 0: a clean refresh of c1 (40 ms).
		ev(1, "c1", "refresh.started", "e1", 0, ""),
		ev(2, "c1", "refresh.succeeded", "e2", 40*ms, ""),
		// phase 1 starts at 3: c2 is started twice without an outcome,
		// then recovered by a lease expiry; sequence 6 is missing; e2 is
		// stored twice; c1 fails terminally.
		ev(3, "c2", "refresh.started", "e3", 100*ms, ""),
		ev(4, "c2", "refresh.started", "e4", 200*ms, ""),
		ev(5, "c2", "refresh.failed", "e5", 300*ms, `{"terminal":false,"error_code":"lease_expired"}`),
		ev(7, "c2", "refresh.started", "e7", 400*ms, ""),
		ev(8, "c2", "refresh.succeeded", "e8", 410*ms, ""),
		ev(9, "c1", "refresh.succeeded", "e2", 500*ms, ""), // no refresh.started open: an orphan
		ev(10, "c1", "refresh.started", "e10", 600*ms, ""),
		ev(11, "c1", "refresh.failed", "e11", 700*ms, `{"terminal":true,"error_code":"invalid_grant"}`),
	}
	got := analyse(evs, []uint64{1, 3}, 12)
	p0, p1 := got[0], got[1]
	if p0.Events != 2 || p0.Started != 1 || p0.Succeeded != 1 || p0.Gaps != 0 || p0.DuplicateIDs != 0 || p0.DoubleStarted != 0 {
		t.Fatalf("phase 0: %+v", p0)
	}
	if p0.LatencyP50 != 40*ms || p0.LatencyP99 != 40*ms {
		t.Fatalf("phase 0 latency: %v %v", p0.LatencyP50, p0.LatencyP99)
	}
	if p1.DoubleStarted != 1 || p1.LeaseExpired != 1 || p1.FailedTransient != 1 || p1.FailedTerminal != 1 ||
		p1.TerminalCodes["invalid_grant"] != 1 || p1.DuplicateIDs != 1 || p1.Orphans != 1 {
		t.Fatalf("phase 1: %+v", p1)
	}
	// Sequence 6 is missing, and 12 (the last) was never read.
	if p1.Gaps != 2 {
		t.Fatalf("phase 1 gaps: %d, want 2", p1.Gaps)
	}
	// One latency in phase 1: c2's 400 ms -> 410 ms.
	if p1.LatencyP50 != 10*ms || p1.LatencyMax != 10*ms {
		t.Fatalf("phase 1 latency: %v %v", p1.LatencyP50, p1.LatencyMax)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 0.5); p != 50 {
		t.Fatalf("p50 = %d", p)
	}
	if p := percentile(d, 0.99); p != 99 {
		t.Fatalf("p99 = %d", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Fatalf("empty = %d", p)
	}
}

// Flags: --short sets the CI sizes unless a flag says otherwise; bad values
// are refused.
func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--short", "--connections", "50"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.connections != 50 || o.settle != 10*time.Second || len(o.phases) != 4 {
		t.Fatalf("%+v", o)
	}
	for _, bad := range [][]string{{"--phases", "a,x"}, {"--connections", "0"}, {"--outage-mode", "pause"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}

// Every flag and every column of the table is described in the "Cluster
// scenario" section of docs/operations.md.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## Cluster scenario")
	if i < 0 {
		t.Fatal("docs/operations.md has no Cluster scenario section")
	}
	section := doc[i:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	fs := flagSet(new(options))
	fs.VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(section, "`--"+f.Name+"`") {
			t.Errorf("flag --%s is not in the Cluster scenario section", f.Name)
		}
	})
	var out strings.Builder
	printReport(&out, &report{Phases: []phaseReport{{Name: "base"}}, Violations: []string{}})
	lines := strings.Split(out.String(), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "phase ") {
			continue
		}
		for _, col := range strings.Fields(l)[1:] {
			if !strings.Contains(section, "`"+col+"`") {
				t.Errorf("column %s is not in the Cluster scenario section", col)
			}
		}
	}
}

// An empty window (two equal bounds) gets nothing; the event at the bound
// goes to the later window.
func TestAnalyseEmptyWindow(t *testing.T) {
	evs := []scanEvent{ev(1, "c1", "refresh.started", "e1", 0, ""), ev(2, "c1", "refresh.succeeded", "e2", time.Millisecond, "")}
	got := analyse(evs, []uint64{1, 2, 2}, 2)
	if got[0].Events != 1 || got[1].Events != 0 || got[2].Events != 1 || got[2].Succeeded != 1 {
		t.Fatalf("%+v", got)
	}
}

// A connection lost as rotated_tokens_lost in phase a is excused only when
// the killed instance held its lease; a loss whose lease another instance
// held, or another reason, stays a violation.
func TestKilledHolderExcused(t *testing.T) {
	evs := []scanEvent{
		ev(1, "c1", "refresh.started", "e1", 0, ""),
		ev(2, "c2", "refresh.started", "e2", 0, ""),
		ev(3, "c1", "refresh.failed", "e3", time.Second, `{"terminal":true,"error_code":"lease_expired"}`),
		ev(4, "c2", "refresh.failed", "e4", time.Second, `{"terminal":true,"error_code":"lease_expired"}`),
	}
	evs[0].Actor, evs[1].Actor = "instance/t1", "instance/t2"
	facts := analyse(evs, []uint64{1}, 4)
	if facts[0].DiedHolding["c1"] != "t1" || facts[0].DiedHolding["c2"] != "t2" {
		t.Fatalf("DiedHolding = %v", facts[0].DiedHolding)
	}
	p := phaseReport{Name: "a", Target: "t1", Stream: facts[0], Lost: 3,
		LostReasons: map[string]int{"rotated_tokens_lost": 2, "refresh_retries_exhausted": 1},
		lostIDs:     map[string]string{"c1": "rotated_tokens_lost", "c2": "rotated_tokens_lost", "c3": "refresh_retries_exhausted"}}
	p.excuseKilledHolder()
	if p.DiedWithKilled != 1 || p.Lost != 2 || p.LostReasons["rotated_tokens_lost"] != 1 {
		t.Fatalf("after excusing: died %d, lost %d %v", p.DiedWithKilled, p.Lost, p.LostReasons)
	}
	q := phaseReport{Name: "b", Target: "t1", Stream: facts[0], Lost: 1, LostReasons: map[string]int{"rotated_tokens_lost": 1},
		lostIDs: map[string]string{"c1": "rotated_tokens_lost"}}
	q.excuseKilledHolder()
	if q.DiedWithKilled != 0 || q.Lost != 1 {
		t.Fatal("a loss in a phase that killed no tokenline instance was excused")
	}
}
