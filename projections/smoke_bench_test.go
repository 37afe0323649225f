package projections

import (
	"flag"
	"os"
)

// benchSmoke is TOKENLINE_BENCH_SMOKE=1: CI runs every benchmark once
// (-benchtime 1x) to catch one that broke, not to measure
// (docs/performance.md), so the benchmarks of 100k connections take 2,000
// and BenchmarkRebuild's stream 5,000 events (a -rebuild.events or
// TOKENLINE_BENCH_CONNS given still wins).
var benchSmoke = os.Getenv("TOKENLINE_BENCH_SMOKE") == "1"

// benchSize is full, or small in a smoke run.
func benchSize(full, small int) int {
	if benchSmoke {
		return small
	}
	return full
}

func init() {
	if benchSmoke {
		_ = flag.Set("rebuild.events", "5000")
	}
}
