package jsstore_test

import "os"

// benchSmoke is TOKENLINE_BENCH_SMOKE=1: CI runs every benchmark once
// (-benchtime 1x) to catch one that broke, not to measure, so the sizes
// shrink (docs/performance.md). BenchmarkClusterKill9 needs
// TOKENLINE_NATS_SERVER (a nats-server binary) and is skipped without it;
// BenchmarkVerify runs the server in this process then.
var benchSmoke = os.Getenv("TOKENLINE_BENCH_SMOKE") == "1"

// benchSize is full, or small in a smoke run.
func benchSize(full, small int) int {
	if benchSmoke {
		return small
	}
	return full
}
