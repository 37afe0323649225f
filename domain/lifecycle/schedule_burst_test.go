package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/projections"
)

// BenchmarkSchedulerBurst is issue 13's scenario on the in-memory ports and
// the real clock: 3,000 connections whose access tokens live 30 s, created
// in one burst, refreshed by the real scheduler (Concurrency 16, Tick
// 250 ms) through a token endpoint that answers in 65 ms, for about 2.5
// token lifetimes. It runs the scheduler as it was (RunUnspread) and as it
// is (Run), one after the other, and prints per 10 s window how many
// scheduled refreshes started, their lateness (start minus planned time)
// p50/p99/max, and how many refreshes completed after the token they
// replaced had expired. It takes about three minutes:
//
//	go test -run '^$' -bench BenchmarkSchedulerBurst -benchtime 1x ./domain/lifecycle/
//
// TOKENLINE_BURST_CONNECTIONS, TOKENLINE_BURST_SECONDS and
// TOKENLINE_BURST_LATENCY_MS change the scenario.
func BenchmarkSchedulerBurst(b *testing.B) {
	n := envInt("TOKENLINE_BURST_CONNECTIONS", 3000)
	secs := envInt("TOKENLINE_BURST_SECONDS", 75)
	latency := time.Duration(envInt("TOKENLINE_BURST_LATENCY_MS", 65)) * time.Millisecond
	for b.Loop() {
		for _, mode := range []string{"before", "after"} {
			burst(b, mode, n, time.Duration(secs)*time.Second, latency)
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// slowEndpoint answers refresh requests after a delay, like a provider
// over the network.
type slowEndpoint struct {
	*memory.TokenEndpoint
	delay time.Duration
}

func (s slowEndpoint) Refresh(ctx context.Context, rt string, scopes []string) (domain.Tokens, bool, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
	}
	return s.TokenEndpoint.Refresh(ctx, rt, scopes)
}

type startRecord struct {
	at   time.Duration // since the burst began
	late time.Duration
}

func burst(b *testing.B, mode string, n int, run, latency time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), run+2*time.Minute)
	defer cancel()
	store := memory.NewEventStore(memory.EventStoreConfig{})
	tep := memory.NewTokenEndpoint(memory.TokenEndpointConfig{AccessTokenLifetime: 30 * time.Second})
	var mu sync.Mutex
	var starts []startRecord
	var t0 time.Time
	var began atomic.Bool
	cfg := lifecycle.Config{
		Store: store, Vault: memory.NewVault(), Attempts: memory.NewAttempts(),
		Providers: map[string]domain.TokenEndpoint{provider: slowEndpoint{tep, latency}},
		Instance:  "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ObserveLateness: func(job string, late time.Duration) {
			if job != "refresh" || !began.Load() {
				return
			}
			mu.Lock()
			starts = append(starts, startRecord{time.Since(t0), late})
			mu.Unlock()
		},
	}
	status, gate := projections.NewStatus(), projections.NewGate(projections.GateOptions{})
	cfg.Gate = gate
	svc, err := lifecycle.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if mode == "before" {
		lifecycle.Unspread(svc)
	}
	status.OnChange(gate.Observe)
	status.OnChange(svc.Observe)

	// Completions after expiry, per window, and refresh durations.
	expiry := map[string]time.Time{}
	started := map[string]time.Time{}
	lateDone := map[int]int{}
	var durations []time.Duration
	store.OnAppend(func(e domain.Event) {
		_, _ = status.Apply(e)
		mu.Lock()
		defer mu.Unlock()
		switch p := e.Payload.(type) {
		case domain.AuthorisationCompleted:
			expiry[e.ConnectionID] = p.Tokens.AccessTokenExpiresAt
		case domain.RefreshStarted:
			started[e.ConnectionID] = e.Time
		case domain.RefreshSucceeded:
			if e.Time.After(expiry[e.ConnectionID]) {
				lateDone[int(e.Time.Sub(t0)/(10*time.Second))]++
			}
			expiry[e.ConnectionID] = p.Tokens.AccessTokenExpiresAt
			durations = append(durations, e.Time.Sub(started[e.ConnectionID]))
		}
	})

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if mode == "before" {
			lifecycle.RunUnspread(svc, runCtx)
		} else {
			svc.Run(runCtx)
		}
	}()
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 = time.Now()
	began.Store(true)
	// The burst: every connection authorised at once, 8 at a time.
	ids := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ids {
				if err := activate(ctx, svc, tep); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	created := time.Since(t0)
	select {
	case <-time.After(run - created):
	case <-ctx.Done():
	}
	stop()
	<-done
	elapsed := time.Since(t0)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("\n%s (%s): %d connections with 30 s tokens created in %v, token endpoint %v, concurrency 16; CPU %.0f%% of one core\n",
		mode, map[string]string{"before": "RunUnspread: fixed tick, no spreading", "after": "Run"}[mode],
		n, created.Round(time.Millisecond), latency, 100*cpu.Seconds()/elapsed.Seconds())
	slices.Sort(durations)
	if len(durations) > 0 {
		fmt.Printf("  refresh duration (refresh.started to refresh.succeeded) p50 %v p99 %v\n",
			durations[len(durations)/2].Round(time.Millisecond), durations[len(durations)*99/100].Round(time.Millisecond))
	}
	fmt.Printf("  %-9s %8s %10s %10s %10s %s\n", "window", "started", "late p50", "late p99", "late max", "completed after expiry")
	windows := int(elapsed/(10*time.Second)) + 1
	totalLate, total := 0, 0
	for w := 0; w < windows; w++ {
		var late []time.Duration
		for _, s := range starts {
			if int(s.at/(10*time.Second)) == w {
				late = append(late, s.late)
			}
		}
		totalLate += lateDone[w]
		total += len(late)
		if len(late) == 0 && lateDone[w] == 0 {
			continue
		}
		slices.Sort(late)
		q := func(p float64) string {
			if len(late) == 0 {
				return "-"
			}
			return late[min(len(late)-1, int(p*float64(len(late))))].Round(time.Millisecond).String()
		}
		fmt.Printf("  %3d-%3ds %8d %10s %10s %10s %d\n", w*10, w*10+10, len(late), q(0.5), q(0.99), q(1), lateDone[w])
	}
	fmt.Printf("  total: %d scheduled refreshes started, %d completed after expiry (%.1f%%)\n", total, totalLate, 100*float64(totalLate)/float64(max(total, 1)))
}

// activate makes one active connection through the callback.
func activate(ctx context.Context, svc *lifecycle.Service, tep *memory.TokenEndpoint) error {
	c, err := svc.Create(ctx, provider, []string{"read"}, nil)
	if err != nil {
		return err
	}
	authURL, err := svc.StartAuthorisation(ctx, c.ID)
	if err != nil {
		return err
	}
	code, err := tep.Approve(authURL)
	if err != nil {
		return err
	}
	u, err := url.Parse(authURL)
	if err != nil {
		return err
	}
	_, err = svc.HandleCallback(ctx, u.Query().Get("state"), code, "", "")
	return err
}
