package tests

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

var coldEvents = flag.Int("coldstart.events", 100_000, "events in the data dir for BenchmarkColdStart (1000000 for the full measure)")

// lifeOf returns n valid events of one connection: created, authorised, then
// refresh cycles.
func lifeOf(id string, n int, t time.Time) []domain.Event {
	ev := func(p domain.Payload) domain.Event {
		t = t.Add(time.Second)
		return domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: t, Actor: "instance/bench", Payload: p}
	}
	tok := func(i int) domain.TokenInfo {
		return domain.Tokens{AccessToken: fmt.Sprintf("at-%s-%d", id, i), RefreshToken: fmt.Sprintf("rt-%s-%d", id, i), Expiry: t.Add(15 * time.Minute), Scopes: []string{"users:read"}}.Info()
	}
	out := []domain.Event{
		ev(domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"team": "finance"}}),
		ev(domain.AuthorisationStarted{AttemptID: "a", Scopes: []string{"users:read"}, ExpiresAt: t.Add(10 * time.Minute)}),
		ev(domain.AuthorisationCompleted{AttemptID: "a", Tokens: tok(0)}),
	}
	for i := 1; len(out) < n; i++ {
		out = append(out, ev(domain.RefreshStarted{Attempt: 1, LeaseUntil: t.Add(30 * time.Second), Trigger: "schedule"}))
		if len(out) < n {
			out = append(out, ev(domain.RefreshSucceeded{Attempt: 1, Tokens: tok(i), Rotated: true}))
		}
	}
	return out[:n]
}

// BenchmarkColdStart measures `tokenline serve` (Main.Run: embedded NATS,
// store, vault, projections restored from their snapshot and position, the
// tail replayed, HTTP up) on a data dir holding many events, against a start
// whose snapshot was removed (full replay), in the same run.
//
//	go test -run '^$' -bench ColdStart -benchtime 1x ./tests/ -coldstart.events=1000000
func BenchmarkColdStart(b *testing.B) {
	n := *coldEvents
	conns := max(n/10, 1)
	dir := b.TempDir()
	mk := func() *app.Main {
		m := app.NewMain()
		m.Config.DataDir, m.Config.NATSListen, m.Config.HTTPAddr = dir, "127.0.0.1:0", "127.0.0.1:0"
		m.Config.LogLevel = "error"
		m.LogOutput = io.Discard
		return m
	}
	m := mk()
	ctx := context.Background()
	if err := m.Run(ctx); err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(m.Conn, jetstream.WithPublishAsyncMaxPending(20000))
	t0 := time.Now().Add(-48 * time.Hour)
	lives := make([][]domain.Event, conns)
	for i := range lives {
		lives[i] = lifeOf(uuid.NewString(), n/conns, t0)
	}
	start := time.Now()
	for step := 0; step < n/conns; step++ {
		for i := range lives {
			data, err := events.Encode(lives[i][step])
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishAsync(events.Subject(lives[i][step].ConnectionID), data, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
	}
	<-js.PublishAsyncComplete()
	lives = nil
	fmt.Printf("populated %d events across %d connections in %v\n", n, conns, time.Since(start).Round(time.Millisecond))
	// Let the projections catch up, then stop: Close writes the snapshot.
	eventually(b, 5*time.Minute, "projections caught up", func() bool {
		lag, err := m.Proj.Runner.Lag(ctx)
		return err == nil && lag == 0
	})
	m.Close()

	measure := func() (time.Duration, int) {
		m := mk()
		s := time.Now()
		if err := m.Run(ctx); err != nil {
			b.Fatal(err)
		}
		d := time.Since(s)
		fmt.Printf("  start-up phases: %v\n", m.Startup)
		got := len(m.Proj.Status.List())
		m.Close()
		return d, got
	}
	b.ResetTimer()
	var warm time.Duration
	for i := 0; i < b.N; i++ {
		d, got := measure()
		if got != conns {
			b.Fatalf("status has %d connections, want %d", got, conns)
		}
		warm += d
	}
	b.StopTimer()
	warm /= time.Duration(b.N)
	// The same data dir without a snapshot: a full replay.
	m2 := mk()
	if err := m2.Run(ctx); err != nil {
		b.Fatal(err)
	}
	objs, err := m2.Store.JetStream().ObjectStore(ctx, "tokenline_snapshots")
	if err == nil {
		_ = objs.Delete(ctx, "status")
	}
	m2.Close()
	// Closing writes a new snapshot; remove it again without starting projections.
	_ = os.RemoveAll(filepath.Join(dir, "jetstream", "$G", "streams", "OBJ_tokenline_snapshots"))
	full, got := measure()
	if got != conns {
		b.Fatalf("full replay: %d connections, want %d", got, conns)
	}
	b.ReportMetric(float64(warm.Milliseconds()), "coldstart-ms")
	b.ReportMetric(float64(full.Milliseconds()), "fullreplay-ms")
	fmt.Printf("cold start with %d events: %v from snapshot+position, %v by full replay (target < 2s)\n", n, warm.Round(time.Millisecond), full.Round(time.Millisecond))
}
