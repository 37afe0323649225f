package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Source is the event stream that is projected (required).
	Source Source
	// Checkpoints keeps the snapshot and the position between runs
	// (nil: the runner starts from the beginning of the stream every time
	// and writes no snapshot).
	Checkpoints Checkpoints
	// Status is the durable projection (default NewStatus()). Register its
	// observers (Gate.Observe, ...) with Status.OnChange before Start.
	Status *Status
	// Name keys the projection's position and snapshot (default "status").
	// Instances that share the buckets may share the name: a snapshot holds
	// the state at its own position, whoever wrote it; give each instance its
	// own name to keep their snapshots apart.
	Name string
	// SnapshotEvery writes a snapshot after this many applied records, or
	// after half as many records as there are connections if that is more
	// (default 10000; negative: never on count). A snapshot writes every
	// connection: with many connections, one every SnapshotEvery records
	// would cost more than replaying the records since the last.
	SnapshotEvery int
	// SnapshotInterval writes a snapshot this often when the position moved
	// (default 1m; negative: never on time).
	SnapshotInterval time.Duration
	// OnEvent, if set, receives every live event the runner applies (after
	// catch-up) exactly once, in stream order, including the ones this
	// instance appended (metrics count events through it). It must not
	// block. Observers of the connections' state use Status.OnChange.
	OnEvent func(domain.Event)
	// CatchUpGCPercent, if above the garbage collector's current setting
	// (GOGC, default 100), is the setting from Start until the Runner is
	// ready (the snapshot restored, the tail replayed, the observers
	// seeded), or stops: the collector runs less often while the heap
	// grows from nothing to the whole projection, and while a rebuild's
	// heap is mostly the garbage of decoded records, for a higher peak
	// heap during that time only. The previous setting is restored then.
	// 0: unchanged.
	CatchUpGCPercent int
	// Logger receives skipped-record warnings (default slog.Default()). The
	// payload of a record is never logged.
	Logger *slog.Logger
}

// Runner keeps the Status projection up to date with the stream.
//
// Start restores Status from its latest snapshot and position
// (Checkpoints), catches up with the stream's tail after the position,
// tells the Status's observers of every connection (Status.OnChange),
// becomes Ready and then follows the stream from the next sequence,
// applying each record to Status in stream order. A record that does not
// decode, or that the aggregate refuses, is logged (sequence, subject and
// error, never the payload) and passed over: the Runner never stops on one.
// Snapshots are written every SnapshotEvery records (at least half the
// connections' worth) or SnapshotInterval and on Close: first the snapshot,
// then its position.
type Runner struct {
	cfg RunnerConfig
	src Source
	cp  Checkpoints
	log *slog.Logger

	mu        sync.Mutex // serialises handle, capture and the live subscription
	pos       atomic.Uint64
	sinceSnap int
	live      bool
	stop      func() // ends the live subscription

	ready   atomic.Bool
	readyCh chan struct{}
	snapReq chan struct{}

	restored  bool // a snapshot was restored (set by Start)
	announced bool // the observers were seeded (the run goroutine's)

	snapMu  sync.Mutex // one snapshot write at a time
	snapPos uint64     // position of the last snapshot written or restored

	lifeMu  sync.Mutex // guards started and cancel
	started bool
	cancel  context.CancelFunc

	gcRestore func()          // set by startGC, before the run goroutine
	gcOnce    sync.Once       // gcDone
	runCtx    context.Context // set once by Start, before the run goroutine
	done      chan struct{}   // closed when the run goroutine ends
}

// NewRunner returns a runner for cfg. Status is followed from now on: its
// Apply becomes this instance's read-your-own-writes path.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Source == nil {
		return nil, errors.New("projections: runner needs a source")
	}
	if cfg.Status == nil {
		cfg.Status = NewStatus()
	}
	cfg.Name = cmp.Or(cfg.Name, "status")
	cfg.SnapshotEvery = cmp.Or(cfg.SnapshotEvery, 10000)
	cfg.SnapshotInterval = cmp.Or(cfg.SnapshotInterval, time.Minute)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Status.follow()
	return &Runner{
		cfg: cfg, src: cfg.Source, cp: cfg.Checkpoints, log: cfg.Logger.With("projection", cfg.Name),
		readyCh: make(chan struct{}), snapReq: make(chan struct{}, 1), done: make(chan struct{}),
	}, nil
}

// Status returns the status projection.
func (r *Runner) Status() *Status { return r.cfg.Status }

// Position returns the stream sequence of the last record the Runner
// applied (0: none yet).
func (r *Runner) Position() uint64 { return r.pos.Load() }

// Ready reports whether the runner caught up with the stream's last sequence
// as of Start.
func (r *Runner) Ready() bool { return r.ready.Load() }

// WaitReady waits until Ready, the runner stops, or ctx ends.
func (r *Runner) WaitReady(ctx context.Context) error {
	r.lifeMu.Lock()
	started := r.started
	r.lifeMu.Unlock()
	if !started {
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

// Lag returns how many stream sequences the projection is behind.
func (r *Runner) Lag(ctx context.Context) (uint64, error) {
	info, err := r.src.Info(ctx)
	if err != nil {
		return 0, err
	}
	if p := r.pos.Load(); info.LastSeq > p {
		return info.LastSeq - p, nil
	}
	return 0, nil
}

// Start restores the latest snapshot and then catches up and follows the
// stream in the background until Close or ctx ends. Use WaitReady to wait
// for the catch-up.
func (r *Runner) Start(ctx context.Context) error {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.started {
		return errors.New("projections: runner already started")
	}
	r.startGC()
	if err := r.restore(ctx); err != nil {
		r.gcDone()
		return err
	}
	r.runCtx, r.cancel = context.WithCancel(ctx)
	r.started = true
	go r.run(r.runCtx)
	return nil
}

// restore loads the snapshot, if it is usable, into Status.
func (r *Runner) restore(ctx context.Context) error {
	if r.cp == nil {
		return nil
	}
	// A position or snapshot that cannot be read, is malformed or fails
	// its authentication is passed over (logged): the projection is
	// rebuilt from the stream, it never keeps the instance from starting.
	cpPos, err := r.cp.Position(ctx, r.cfg.Name)
	if err != nil {
		r.log.Warn("recorded position not usable: ignored", "error", err.Error())
		cpPos = 0
	}
	info, err := r.src.Info(ctx)
	if err != nil {
		return err
	}
	rc, err := r.cp.OpenSnapshot(ctx, r.cfg.Name)
	if err != nil {
		r.log.Warn("snapshot not usable: rebuilding from the start", "error", err.Error())
		return nil
	}
	if rc == nil {
		if cpPos > 0 {
			r.log.Warn("position without snapshot: rebuilding from the start", "position", cpPos)
		}
		return nil
	}
	began := time.Now()
	h, st, err := readSnapshot(rc)
	if err == nil {
		_, err = io.Copy(io.Discard, rc) // reaching EOF verifies the integrity
	}
	rc.Close()
	switch {
	case err != nil:
		r.log.Warn("snapshot not usable: rebuilding from the start", "error", err.Error())
		return nil
	case h.Stream != info.Name || !h.StreamCreated.Equal(info.Created) || h.Position > info.LastSeq:
		r.log.Warn("snapshot is of another stream: rebuilding from the start", "snapshot_stream", h.Stream, "position", h.Position)
		return nil
	}
	if h.Position != cpPos {
		r.log.Info("snapshot and recorded position differ: using the snapshot's", "snapshot_position", h.Position, "position", cpPos)
	}
	r.cfg.Status.replace(st)
	r.pos.Store(h.Position)
	r.snapPos = h.Position
	r.restored = true
	r.log.Info("projection restored from its snapshot", "position", h.Position, "connections", h.Connections,
		"took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

func (r *Runner) run(ctx context.Context) {
	defer close(r.done)
	defer r.gcDone() // stopped before it was ready
	backoff := 100 * time.Millisecond
	for {
		err := r.catchUpAndFollow(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		r.log.Warn("projection runner: retrying", "error", err.Error(), "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	<-ctx.Done()
}

// catchUpAndFollow replays the tail, seeds the observers, becomes ready and
// subscribes; it then writes snapshots until ctx ends.
func (r *Runner) catchUpAndFollow(ctx context.Context) error {
	if !r.ready.Load() {
		info, err := r.src.Info(ctx)
		if err != nil {
			return err
		}
		records, began := 0, time.Now()
		// After a snapshot, a tail shorter than half the connections is
		// replayed while the observers are seeded from the snapshot: a
		// record applied before the seeding is in the state seeded, one
		// after it is told to the observers as a change (the seeding and
		// each record take the projection's lock in turn). Ready waits
		// for both. A longer tail (or none restored) is replayed quietly
		// first and the observers seeded at the end, once.
		var seeded chan struct{}
		tail := info.LastSeq - min(r.pos.Load(), info.LastSeq)
		if !r.announced && r.restored && tail > 0 && tail < uint64(r.cfg.Status.size())/2 {
			r.announced = true
			seeded = make(chan struct{})
			go func() {
				defer close(seeded)
				r.cfg.Status.announceAfter(0)
			}()
		}
		if info.LastSeq > r.pos.Load() {
			if _, err := r.src.Read(ctx, events.Range{From: r.pos.Load() + 1, To: info.LastSeq}, func(rec *events.Record) error {
				r.handle(rec, false)
				records++
				return nil
			}); err != nil {
				if seeded != nil {
					<-seeded
				}
				return err
			}
		}
		read := time.Since(began)
		if seeded != nil {
			<-seeded
		} else if !r.announced {
			r.announced = true
			r.cfg.Status.announceAfter(records)
		}
		r.gcDone()
		r.log.Info("projection caught up", "records", records, "position", r.pos.Load(),
			"read", read.Round(time.Millisecond).String(), "seed", (time.Since(began) - read).Round(time.Millisecond).String(),
			"seeded_during_read", seeded != nil)
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

// startGC applies CatchUpGCPercent until gcDone.
func (r *Runner) startGC() {
	want := r.cfg.CatchUpGCPercent
	if want <= 0 {
		return
	}
	prev := debug.SetGCPercent(want)
	if prev < 0 || prev >= want {
		debug.SetGCPercent(prev) // off, or higher already
		return
	}
	r.gcRestore = func() { debug.SetGCPercent(prev) }
}

// gcDone restores the GC setting startGC changed (once).
func (r *Runner) gcDone() {
	r.gcOnce.Do(func() {
		if r.gcRestore != nil {
			r.gcRestore()
		}
	})
}

// follow subscribes from the next sequence (r.mu not held).
func (r *Runner) follow(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		return nil
	}
	fn := func(rec *events.Record) { r.handle(rec, true) }
	var stop func()
	var err error
	if kf, ok := r.src.(KnownFollower); ok {
		stop, err = kf.FollowKnown(ctx, r.pos.Load()+1, r.cfg.Status.takeAcked, fn)
	} else {
		stop, err = r.src.Follow(ctx, r.pos.Load()+1, fn)
	}
	if err != nil {
		return err
	}
	r.stop, r.live = stop, true
	return nil
}

// stopFollowing ends the live subscription and waits for a record in
// progress.
func (r *Runner) stopFollowing() {
	r.mu.Lock()
	stop := r.stop
	r.stop, r.live = nil, false
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	// Barrier: taking the lock waits for a handle call in progress.
	r.mu.Lock()
	//lint:ignore SA2001 the empty critical section is the point
	r.mu.Unlock()
}

// handle applies one record to the projection, in stream order.
func (r *Runner) handle(rec *events.Record, live bool) {
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
	// At least half the connections' worth of records between snapshots:
	// a snapshot writes every connection, and a restart replays a tail
	// shorter than half of them while it seeds the observers.
	if r.cfg.SnapshotEvery > 0 && r.sinceSnap >= r.cfg.SnapshotEvery && r.sinceSnap >= r.cfg.Status.size()/2 {
		r.sinceSnap = 0
		select {
		case r.snapReq <- struct{}{}:
		default:
		}
	}
}

func (r *Runner) apply(rec *events.Record, live bool) {
	defer func() {
		if p := recover(); p != nil {
			r.skip(rec, fmt.Errorf("projections: panic applying the record: %v", p))
		}
	}()
	if rec.Err != nil {
		if id, ok := connectionOfSubject(rec.Subject); ok {
			r.cfg.Status.skip(id, rec.Seq)
		}
		r.skip(rec, rec.Err)
		return
	}
	if _, err := r.cfg.Status.applyStream(rec.Event); err != nil {
		r.skip(rec, err)
		return
	}
	// Observers of events see every live event once, in stream order,
	// whether or not this instance had applied it early through Apply.
	if live && r.cfg.OnEvent != nil {
		r.cfg.OnEvent(rec.Event)
	}
}

func (r *Runner) skip(rec *events.Record, err error) {
	r.log.Warn("projection skipped a record", "seq", rec.Seq, "subject", rec.Subject, "type", string(rec.Event.Type()), "error", err.Error())
}

// Snapshot writes a snapshot of Status now, then its position. It is
// skipped when the position has not moved since the last one, or when the
// runner has no Checkpoints.
func (r *Runner) Snapshot(ctx context.Context) error {
	if r.cp == nil {
		return nil
	}
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
	info, err := r.src.Info(ctx)
	if err != nil {
		return err
	}
	h := snapshotHeader{Projection: r.cfg.Name, Stream: info.Name, StreamCreated: info.Created, Position: pos, WrittenAt: time.Now().UTC()}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeSnapshot(pw, h, conns)) }()
	err = r.cp.PutSnapshot(ctx, r.cfg.Name, map[string]string{"position": strconv.FormatUint(pos, 10), "format": snapshotFormat}, pr)
	pr.CloseWithError(io.ErrClosedPipe) // unblock the writer if Put failed early
	if err != nil {
		return err
	}
	if err := r.cp.SetPosition(ctx, r.cfg.Name, pos); err != nil {
		return err
	}
	r.snapPos = pos
	return nil
}

// Close stops following the stream and writes a final snapshot.
func (r *Runner) Close(ctx context.Context) error {
	r.lifeMu.Lock()
	started, cancel := r.started, r.cancel
	r.lifeMu.Unlock()
	if !started {
		return nil
	}
	r.stopFollowing()
	cancel()
	<-r.done
	r.gcDone() // stopped before it was ready
	if !r.ready.Load() {
		return nil
	}
	return r.Snapshot(ctx)
}
