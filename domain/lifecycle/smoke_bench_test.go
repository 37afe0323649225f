package lifecycle

import "os"

// benchSmoke is TOKENLINE_BENCH_SMOKE=1: CI runs every benchmark once
// (-benchtime 1x) to catch one that broke, not to measure, so the sizes
// shrink (docs/performance.md): BenchmarkSeed seeds 5,000 connections,
// BenchmarkSchedulerBurst (whose knobs are TOKENLINE_BURST_*; the values
// set here are defaults only) runs 300 connections for 1 s per mode.
var benchSmoke = os.Getenv("TOKENLINE_BENCH_SMOKE") == "1"

// benchSize is full, or small in a smoke run.
func benchSize(full, small int) int {
	if benchSmoke {
		return small
	}
	return full
}

func init() {
	if !benchSmoke {
		return
	}
	for k, v := range map[string]string{"TOKENLINE_BURST_CONNECTIONS": "300", "TOKENLINE_BURST_SECONDS": "1"} {
		if os.Getenv(k) == "" {
			_ = os.Setenv(k, v)
		}
	}
}
