package tests

import "os"

// TOKENLINE_BENCH_SMOKE=1: CI runs every benchmark once (-benchtime 1x) to
// catch one that broke, not to measure (docs/performance.md), so
// BenchmarkColdStart's store shrinks to 2,000 events of 200 connections,
// one round, started without waiting out the stream's de-duplication window
// (two minutes of CI for a figure that means nothing; defaults only:
// TOKENLINE_COLDSTART_* set in the environment win).
func init() {
	if os.Getenv("TOKENLINE_BENCH_SMOKE") != "1" {
		return
	}
	for k, v := range map[string]string{"TOKENLINE_COLDSTART_EVENTS": "2000", "TOKENLINE_COLDSTART_CONNS": "200", "TOKENLINE_COLDSTART_ROUNDS": "1", "TOKENLINE_COLDSTART_NOWAIT": "1"} {
		if os.Getenv(k) == "" {
			_ = os.Setenv(k, v)
		}
	}
}
