package projections

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Store is the event store whose stream is projected (required).
	Store *jsstore.Store
	// Status is the durable projection (default NewStatus()).
	Status *Status
	// Gate, if set, is seeded from Status once caught up and then receives
	// every live event. Register Gate.Apply with Store.OnAppend as well.
	Gate *Gate
	// Name keys the projection's position and snapshot (default "status").
	// Instances that share the buckets may share the name: a snapshot holds
	// the state at its own position, whoever wrote it; give each instance its
	// own name to keep their snapshots apart.
	Name string
	// SnapshotEvery writes a snapshot after this many applied records
	// (default 10000; negative: never on count).
	SnapshotEvery int
	// SnapshotInterval writes a snapshot this often when the position moved
	// (default 1m; negative: never on time).
	SnapshotInterval time.Duration
	// OnEvent, if set, receives every live event the runner applies (after
	// catch-up) exactly once, in stream order, including the ones this
	// instance appended: the lifecycle scheduler and metrics observe the
	// stream through it (never through OnAppend, which delivers this
	// instance's events ahead of earlier ones of other instances). It must
	// not block.
	OnEvent func(domain.Event)
	// Logger receives skipped-record warnings (default slog.Default()). The
	// payload of a record is never logged.
	Logger *slog.Logger
}

// Runner keeps the projections up to date with the stream.
//
// Start restores the Status projection from its latest snapshot (object
// store SnapshotsBucket) and position (KV PositionsBucket), catches up with
// the stream's tail after the position with a parallel-decoding replay,
// seeds the Gate from Status, becomes Ready and then follows the stream with
// jsstore.Subscribe from the next sequence, applying each record to Status
// and Gate in stream order. A record that does not decode, or that the
// aggregate refuses, is logged (sequence, subject and error, never the
// payload), counted in Skipped, and passed over: the Runner never stops on
// one. Snapshots are written every SnapshotEvery records or SnapshotInterval
// and on Close: first the snapshot, then its position to KV.
type Runner struct {
	cfg   RunnerConfig
	store *jsstore.Store
	log   *slog.Logger
	kv    jetstream.KeyValue
	obs   jetstream.ObjectStore

	mu        sync.Mutex // serialises handle, capture and the live subscription
	pos       atomic.Uint64
	applied   atomic.Int64
	skipped   atomic.Int64
	sinceSnap int
	live      bool
	sub       jsstore.Subscription

	ready   atomic.Bool
	readyCh chan struct{}
	snapReq chan struct{}

	snapMu     sync.Mutex // one snapshot write at a time
	snapPos    uint64     // position of the last snapshot written or restored
	snapshots  atomic.Int64
	restoredAt uint64

	runCtx context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner opens (creating if needed) the positions and snapshots buckets.
func NewRunner(ctx context.Context, cfg RunnerConfig) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("projections: runner needs a store")
	}
	if cfg.Status == nil {
		cfg.Status = NewStatus()
	}
	if cfg.Name == "" {
		cfg.Name = "status"
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 10000
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kv, obs, err := buckets(ctx, cfg.Store.JetStream())
	if err != nil {
		return nil, err
	}
	cfg.Status.follow()
	return &Runner{
		cfg: cfg, store: cfg.Store, log: cfg.Logger.With("projection", cfg.Name), kv: kv, obs: obs,
		readyCh: make(chan struct{}), snapReq: make(chan struct{}, 1),
	}, nil
}

// Status returns the status projection.
func (r *Runner) Status() *Status { return r.cfg.Status }

// Position returns the last stream sequence applied.
func (r *Runner) Position() uint64 { return r.pos.Load() }

// Applied counts the records this runner applied since it started (records
// restored from a snapshot are not counted).
func (r *Runner) Applied() int64 { return r.applied.Load() }

// Skipped counts the records passed over: undecodable, unknown type, or
// refused by the aggregate.
func (r *Runner) Skipped() int64 { return r.skipped.Load() }

// Snapshots counts the snapshots written.
func (r *Runner) Snapshots() int64 { return r.snapshots.Load() }

// RestoredPosition is the position of the snapshot Start restored (0: none).
func (r *Runner) RestoredPosition() uint64 { return r.restoredAt }

// Ready reports whether the runner caught up with the stream's last sequence
// as of Start.
func (r *Runner) Ready() bool { return r.ready.Load() }

// WaitReady waits until Ready, the runner stops, or ctx ends.
func (r *Runner) WaitReady(ctx context.Context) error {
	if r.done == nil {
		return errors.New("projections: runner not started")
	}
	select {
	case <-r.readyCh:
		return nil
	case <-r.done:
		return errors.New("projections: runner stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lag returns how many stream sequences the projections are behind.
func (r *Runner) Lag(ctx context.Context) (uint64, error) {
	last, err := r.store.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	if p := r.pos.Load(); last > p {
		return last - p, nil
	}
	return 0, nil
}

// Start restores the latest snapshot and then catches up and follows the
// stream in the background until Close or ctx ends. Use WaitReady to wait
// for the catch-up.
func (r *Runner) Start(ctx context.Context) error {
	if r.done != nil {
		return errors.New("projections: runner already started")
	}
	if err := r.restore(ctx); err != nil {
		return err
	}
	r.runCtx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go r.run(r.runCtx)
	return nil
}

// restore loads the snapshot, if it is usable, into Status.
func (r *Runner) restore(ctx context.Context) error {
	kvPos, err := readPosition(ctx, r.kv, r.cfg.Name)
	if err != nil {
		return err
	}
	info, err := r.store.Stream().Info(ctx)
	if err != nil {
		return fmt.Errorf("projections: stream info: %w", err)
	}
	res, err := r.obs.Get(ctx, r.cfg.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		if kvPos > 0 {
			r.log.Warn("position without snapshot: rebuilding from the start", "position", kvPos)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("projections: read snapshot: %w", err)
	}
	h, st, err := readSnapshot(res)
	if err == nil {
		_, err = io.Copy(io.Discard, res) // reaching EOF verifies the digest
	}
	res.Close()
	switch {
	case err != nil:
		r.log.Warn("snapshot not usable: rebuilding from the start", "error", err.Error())
		return nil
	case h.Stream != r.store.StreamName() || !h.StreamCreated.Equal(info.Created) || h.Position > info.State.LastSeq:
		r.log.Warn("snapshot is of another stream: rebuilding from the start", "snapshot_stream", h.Stream, "position", h.Position)
		return nil
	}
	if h.Position != kvPos {
		r.log.Info("snapshot and recorded position differ: using the snapshot's", "snapshot_position", h.Position, "position", kvPos)
	}
	r.cfg.Status.replace(st)
	r.pos.Store(h.Position)
	r.snapPos, r.restoredAt = h.Position, h.Position
	return nil
}

func (r *Runner) run(ctx context.Context) {
	defer close(r.done)
	backoff := 100 * time.Millisecond
	for {
		err := r.catchUpAndFollow(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		r.log.Warn("projection runner: retrying", "error", err.Error(), "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	<-ctx.Done()
}

// catchUpAndFollow replays the tail, becomes ready and subscribes; it then
// writes snapshots until ctx ends.
func (r *Runner) catchUpAndFollow(ctx context.Context) error {
	if !r.ready.Load() {
		last, err := r.store.LastSeq(ctx)
		if err != nil {
			return err
		}
		if last > r.pos.Load() {
			if _, err := scan(ctx, r.store, scanOptions{From: r.pos.Load() + 1, To: last}, func(rec *jsstore.Record) error {
				r.handle(rec, false)
				return nil
			}); err != nil {
				return err
			}
		}
		if r.cfg.Gate != nil {
			r.cfg.Gate.Seed(r.cfg.Status, false)
		}
		r.ready.Store(true)
		close(r.readyCh)
	}
	if err := r.follow(ctx); err != nil {
		return err
	}
	var tick <-chan time.Time
	if r.cfg.SnapshotInterval > 0 {
		t := time.NewTicker(r.cfg.SnapshotInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		case <-r.snapReq:
		}
		if err := r.Snapshot(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("snapshot failed", "error", err.Error())
		}
	}
}

// follow subscribes from the next sequence (r.mu not held).
func (r *Runner) follow(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub != nil {
		return nil
	}
	sub, err := r.store.Subscribe(ctx, r.pos.Load()+1, func(rec jsstore.Record) { r.handle(&rec, true) })
	if err != nil {
		return err
	}
	r.sub, r.live = sub, true
	return nil
}

// stopFollowing ends the live subscription and waits for a record in
// progress.
func (r *Runner) stopFollowing() {
	r.mu.Lock()
	sub := r.sub
	r.sub, r.live = nil, false
	r.mu.Unlock()
	if sub != nil {
		sub.Stop()
	}
	// Barrier: taking the lock waits for a handle call in progress.
	r.mu.Lock()
	//lint:ignore SA2001 the empty critical section is the point
	r.mu.Unlock()

}

// handle applies one record to the projections, in stream order.
func (r *Runner) handle(rec *jsstore.Record, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if live && !r.live {
		return // delivered after stopFollowing
	}
	if rec.Seq != 0 && rec.Seq <= r.pos.Load() {
		return // already applied (a redelivery)
	}
	r.apply(rec, live)
	if rec.Seq > r.pos.Load() {
		r.pos.Store(rec.Seq)
	}
	r.sinceSnap++
	if r.cfg.SnapshotEvery > 0 && r.sinceSnap >= r.cfg.SnapshotEvery {
		r.sinceSnap = 0
		select {
		case r.snapReq <- struct{}{}:
		default:
		}
	}
}

func (r *Runner) apply(rec *jsstore.Record, live bool) {
	defer func() {
		if p := recover(); p != nil {
			r.skip(rec, fmt.Errorf("projections: panic applying the record: %v", p))
		}
	}()
	if rec.Err != nil {
		if id, ok := connectionOfSubject(rec.Subject); ok {
			r.cfg.Status.Skip(id, rec.Seq)
		}
		r.skip(rec, rec.Err)
		return
	}
	changed, err := r.cfg.Status.applyStream(rec.Event)
	if err != nil {
		r.skip(rec, err)
		return
	}
	if live && r.cfg.Gate != nil {
		// Idempotent: an event this instance applied through the OnAppend
		// hook changes nothing; a late one fills what the hook could not.
		r.cfg.Gate.Apply(rec.Event)
	}
	if changed {
		r.applied.Add(1)
	}
	// Observers see every live event once, in stream order, whether or not
	// this instance had applied it early through the OnAppend hook.
	if live && r.cfg.OnEvent != nil {
		r.cfg.OnEvent(rec.Event)
	}
}

func (r *Runner) skip(rec *jsstore.Record, err error) {
	r.skipped.Add(1)
	r.log.Warn("projection skipped a record", "seq", rec.Seq, "subject", rec.Subject, "type", string(rec.Event.Type()), "error", err.Error())
}

// Snapshot writes a snapshot of Status now, then its position to KV. It is
// skipped when the position has not moved since the last one.
func (r *Runner) Snapshot(ctx context.Context) error {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	r.mu.Lock()
	pos := r.pos.Load()
	if pos == r.snapPos {
		r.mu.Unlock()
		return nil
	}
	conns := r.cfg.Status.capture()
	r.mu.Unlock()
	info, err := r.store.Stream().Info(ctx)
	if err != nil {
		return fmt.Errorf("projections: stream info: %w", err)
	}
	h := snapshotHeader{Projection: r.cfg.Name, Stream: r.store.StreamName(), StreamCreated: info.Created, Position: pos, WrittenAt: time.Now().UTC()}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeSnapshot(pw, h, conns)) }()
	_, err = r.obs.Put(ctx, jetstream.ObjectMeta{
		Name:        r.cfg.Name,
		Description: "tokenline status projection snapshot",
		Metadata:    map[string]string{"position": strconv.FormatUint(pos, 10), "format": snapshotFormat},
	}, pr)
	pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if Put failed early
	if err != nil {
		return fmt.Errorf("projections: write snapshot: %w", err)
	}
	if _, err := r.kv.Put(ctx, r.cfg.Name, []byte(strconv.FormatUint(pos, 10))); err != nil {
		return fmt.Errorf("projections: write position: %w", err)
	}
	r.snapPos = pos
	r.snapshots.Add(1)
	return nil
}

// Rebuild discards the projections and builds them again from sequence 1:
// it stops following, replays the whole stream into a fresh Status, swaps it
// in, seeds the Gate from it (merging: newer events and tokens handed over
// with SetToken are kept), writes a snapshot and follows the stream again
// from the next sequence.
func (r *Runner) Rebuild(ctx context.Context) error {
	if r.done == nil {
		return errors.New("projections: runner not started")
	}
	if err := r.WaitReady(ctx); err != nil {
		return err
	}
	r.stopFollowing()
	fresh, pos, skipped, err := build(ctx, r.store, r.log)
	if err != nil {
		// keep the old projection and follow again
		if ferr := r.follow(r.runCtx); ferr != nil {
			return errors.Join(err, ferr)
		}
		return err
	}
	r.mu.Lock()
	r.cfg.Status.replace(fresh)
	r.pos.Store(pos)
	r.skipped.Add(skipped)
	r.mu.Unlock()
	if r.cfg.Gate != nil {
		// Merge: events this instance applied through the OnAppend hook
		// after the rebuild's end stay in the gate.
		r.cfg.Gate.Seed(r.cfg.Status, false)
	}
	if err := r.follow(r.runCtx); err != nil {
		return err
	}
	return r.Snapshot(ctx)
}

// Close stops following the stream and writes a final snapshot.
func (r *Runner) Close(ctx context.Context) error {
	if r.done == nil {
		return nil
	}
	r.stopFollowing()
	r.cancel()
	<-r.done
	if !r.ready.Load() {
		return nil
	}
	return r.Snapshot(ctx)
}

// Build replays the whole stream into a fresh Status (what Rebuild does,
// without touching a runner). It returns the projection, the position it is
// at, and how many records it passed over.
func Build(ctx context.Context, store *jsstore.Store) (*Status, uint64, int64, error) {
	return build(ctx, store, slog.Default())
}

func build(ctx context.Context, store *jsstore.Store, log *slog.Logger) (*Status, uint64, int64, error) {
	st := NewStatus()
	var skipped int64
	pos, err := scan(ctx, store, scanOptions{}, func(rec *jsstore.Record) error {
		if rec.Err != nil {
			if id, ok := connectionOfSubject(rec.Subject); ok {
				st.skipLocked(id, rec.Seq)
			}
			skipped++
			log.Warn("rebuild skipped a record", "seq", rec.Seq, "subject", rec.Subject, "error", rec.Err.Error())
			return nil
		}
		if _, err := st.applyLocked(rec.Event); err != nil {
			skipped++
			log.Warn("rebuild skipped a record", "seq", rec.Seq, "subject", rec.Subject, "type", string(rec.Event.Type()), "error", err.Error())
		}
		return nil
	})
	if err != nil {
		return nil, 0, skipped, err
	}
	return st, pos, skipped, nil
}
