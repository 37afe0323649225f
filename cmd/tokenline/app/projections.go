package app

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// Projections holds this instance's read models: the status projection
// (durable: snapshot + position), the gate derived from it, and the runner
// that keeps them up to date with the stream.
type Projections struct {
	Gate   *projections.Gate
	Status *projections.Status
	Runner *projections.Runner
	store  *jsstore.Store
	snapN  int
	m      *Main
}

func openProjections(_ context.Context, m *Main) (*Projections, error) {
	p := &Projections{store: m.Store, m: m, snapN: m.Config.SnapshotEvery}
	p.Gate = projections.NewGate(projections.GateOptions{ExpiryMargin: m.Config.GateExpiryMargin})
	p.Status = projections.NewStatus()
	// Read-your-own-writes: this instance's appends reach the gate and the
	// status projection before Append returns.
	m.Store.OnAppend(p.Gate.Apply)
	m.Store.OnAppend(func(e domain.Event) { _, _ = p.Status.Apply(e) })
	return p, nil
}

// Start restores the projections, catches up with the stream, seeds the
// scheduler and then follows the stream, feeding observe with every event.
func (p *Projections) Start(ctx context.Context, seed func(domain.Connection), observers ...func(domain.Event)) error {
	observe := func(e domain.Event) {
		for _, o := range observers {
			o(e)
		}
	}
	r, err := projections.NewRunner(ctx, projections.RunnerConfig{
		// One name for every instance: a snapshot carries its own
		// position, so whichever instance wrote the latest serves all.
		Store: p.store, Status: p.Status, Gate: p.Gate, Name: "status",
		SnapshotEvery: p.snapN, Logger: p.m.Logger, OnEvent: observe,
	})
	if err != nil {
		return err
	}
	p.Runner = r
	if err := r.Start(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := r.WaitReady(wctx); err != nil {
		return fmt.Errorf("projections: catching up: %w", err)
	}
	p.Status.Each(func(c *domain.Connection) { seed(*c) })
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
