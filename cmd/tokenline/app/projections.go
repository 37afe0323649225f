package app

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// Projections holds this instance's read models: the status projection
// (durable: snapshot + position on JetStream), the gate that follows it
// (Status.OnChange), and the runner that keeps it up to date with the
// stream.
type Projections struct {
	Gate   *projections.Gate
	Status *projections.Status
	Runner *projections.Runner
	m      *Main
}

func newProjections(m *Main) *Projections {
	p := &Projections{m: m}
	p.Gate = projections.NewGate(projections.GateOptions{ExpiryMargin: m.Config.GateExpiryMargin, Now: m.now()})
	p.Status = projections.NewStatus()
	// One write path: the gate derives every entry from the status
	// projection's changes, and this instance's appends reach the status
	// (and so the gate) before Append returns (read-your-own-writes).
	p.Status.OnChangeSeeded(p.Gate.Observe, p.Gate.Seed)
	m.Store.OnAppend(func(e domain.Event) { _, _ = p.Status.Apply(e) })
	// Another instance's events make the store's cached aggregate stale:
	// the next decision reads the stream rather than conflicting.
	p.Status.OnChange(func(_, after *domain.Connection) {
		if after != nil {
			m.Store.Saw(after.ID, after.Version)
		}
	})
	return p
}

// Open makes the projections' Runner (p.Runner), which will feed onEvent
// with every event it delivers after the catch-up, once each, in stream
// order (the metrics count them). Start then starts it.
func (p *Projections) Open(ctx context.Context, onEvent func(domain.Event)) error {
	cp, err := p.m.Store.CheckpointsWithKey(ctx, p.m.checkpointKey)
	if err != nil {
		return err
	}
	r, err := projections.NewRunner(projections.RunnerConfig{
		// One name for every instance: a snapshot carries its own
		// position, so whichever instance wrote the latest serves all.
		Source: p.m.Store, Checkpoints: cp, Status: p.Status, Name: "status",
		SnapshotEvery: p.m.Config.SnapshotEvery, Logger: p.m.Logger, OnEvent: onEvent,
		// Until ready (snapshot restored, tail replayed, observers seeded)
		// the collector runs a quarter as often: the heap grows from
		// nothing to the whole projection, and a rebuild's is mostly the
		// garbage of decoded records (GC was a quarter of its CPU). Peak
		// heap during a rebuild may reach five times the live heap instead
		// of twice; GOGC set higher, or off, is left alone.
		CatchUpGCPercent: 400,
	})
	if err != nil {
		return err
	}
	p.Runner = r
	return nil
}

// Start restores the projections, catches up with the stream (the
// observers registered with Status.OnChange are seeded then) and follows
// the stream. Open comes first.
func (p *Projections) Start(ctx context.Context) error {
	r := p.Runner
	if err := r.Start(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := r.WaitReady(wctx); err != nil {
		return fmt.Errorf("projections: catching up: %w", err)
	}
	return nil
}

// Close writes a last snapshot and stops following the stream.
func (p *Projections) Close() {
	if p.Runner != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Runner.Close(ctx)
	}
}
