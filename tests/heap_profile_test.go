package tests

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
)

// TestHeapProfile is a harness, not an assertion: with
// TOKENLINE_HEAP_PROFILE=file it starts Main (embedded NATS, sandbox with
// 30 s access tokens), creates and authorises TOKENLINE_HEAP_CONNECTIONS
// connections (default 3000), lets a refresh cycle pass, collects garbage
// and writes a heap profile to file; it logs the heap in use per
// connection over the heap before set-up. Read it with
//
//	go tool pprof -sample_index=inuse_space -top file
//
// The embedded NATS server and the sandbox run in the same process, so
// their heap is in the figure; the profile separates tokenline's packages.
func TestHeapProfile(t *testing.T) {
	out := os.Getenv("TOKENLINE_HEAP_PROFILE")
	if out == "" {
		t.Skip("set TOKENLINE_HEAP_PROFILE=file to run the heap harness")
	}
	n := 3000
	if s := os.Getenv("TOKENLINE_HEAP_CONNECTIONS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 100000 {
			t.Fatalf("TOKENLINE_HEAP_CONNECTIONS=%q: want 1 to 100000", s)
		}
		n = v
	}
	runtime.MemProfileRate = 4096
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	in := startTB(t, func(c *app.Config) {
		c.SandboxAccessTTL = 30 * time.Second
		c.LogLevel = "warn"
	})
	inuse := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := inuse()
	// One context for all: ctxT registers a cleanup per call, which
	// would show in the profile.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < n; i++ {
		c, err := in.Lifecycle.Create(ctx, "sandbox", []string{"export-jobs:read", "users:read"}, nil)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		u, err := in.Lifecycle.StartAuthorisation(ctx, c.ID)
		if err != nil {
			t.Fatalf("start authorisation: %v", err)
		}
		q := consent(t, u)
		if _, err := in.Lifecycle.HandleCallback(ctx, q.Get("state"), q.Get("code"), q.Get("error"), q.Get("error_description")); err != nil {
			t.Fatalf("callback: %v", err)
		}
	}
	t.Logf("%d connections authorised", n)
	// One refresh cycle: move the clock past the refresh margin and wait
	// (bounded) until the sandbox has seen n refreshes.
	in.advance(25 * time.Second)
	deadline := time.Now().Add(3 * time.Minute)
	for stats(t, in).TokenRequests.RefreshToken < int64(n) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("refreshes: %d", stats(t, in).TokenRequests.RefreshToken)
	time.Sleep(2 * time.Second)
	after := inuse()
	t.Logf("heap in use: before %d B, after %d B: %.0f B per connection (NATS and sandbox included)",
		before, after, float64(int64(after)-int64(before))/float64(n))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}
