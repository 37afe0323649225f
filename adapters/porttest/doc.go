// Package porttest holds one contract test suite per port of
// domain/ports.go. Each suite is an exported function taking the test and a
// factory; the test files of every implementation (adapters/memory and the
// production adapters) call it, so that all implementations of a port
// agree on every documented behaviour:
//
//	func TestContract(t *testing.T) {
//		porttest.EventStore(t, func(t *testing.T) (a, b domain.EventStore) { ... })
//	}
//
// Factories that return two handles give two instances on one backend (two
// stores on one stream, two vaults on one bucket); they may be the same
// value for an in-memory implementation. The suites use fresh random
// connection ids and keys, so a factory may share its backend between
// calls.
//
// support.go holds the few helpers that test packages share beyond the
// contracts: LogBuffer (a goroutine-safe log sink), SkewClock (real time
// plus a skew a test moves forward) and the walk through the sandbox's
// consent (Redirect, Consent, CompleteAuthorisation).
package porttest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// subtest is one named case of a suite.
type subtest[O any] struct {
	name string
	f    func(*testing.T, O)
}

// run runs each case as a subtest of t, handing it the suite's factory.
func run[O any](t *testing.T, open O, cases []subtest[O]) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(t, open) })
	}
}

// together calls f(0) … f(n-1) in n goroutines released at the same moment
// and returns when all have returned.
func together(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

// either returns a for an even i and b for an odd one: concurrent callers
// spread over the two handles of a factory.
func either[T any](i int, a, b T) T {
	if i%2 == 1 {
		return b
	}
	return a
}

// ctxT returns a context bounded to a generous deadline and canceled at the
// end of the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
