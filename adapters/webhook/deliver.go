package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/domain"
)

// connSubjectPrefix is events.SubjectPrefix (this package reads the
// connections' stream without decoding the events).
const connSubjectPrefix = "tokenline.conn."

// item is one event of the connections' stream held by a deliverer.
type item struct {
	msg jetstream.Msg
	seq uint64
	// prev is the stream sequence of the connection's previous event (the
	// Nats-Expected-Last-Subject-Sequence the store appended it with; 0:
	// the first, or not known).
	prev uint64
	id   string
	typ  domain.EventType
	conn string

	// The delivery's progress, kept when a worker hands the connection to
	// a goroutine of its own (see drain).
	attempt int
	first   time.Time
	// wait is the pause before the next attempt; pending, an attempt's
	// result not yet handled.
	wait    time.Duration
	pending *result
}

// connQueue holds a connection's events in stream order: the first is
// being delivered, the rest wait for it (per-connection order), while the
// other connections' queues go on.
type connQueue struct {
	conn    string
	items   []*item
	running bool
	// busy: items[0] is being delivered (nothing goes before it).
	busy bool
}

// deliverer delivers one subscription from its durable consumer. The
// consumer is pinned (priority group, PriorityPolicyPinned): one instance
// pulls at a time, so per-connection order holds across instances, and
// another takes over when that one stops pulling.
type deliverer struct {
	m   *Manager
	id  string
	ctx context.Context
	// cancel stops the deliveries; the events held go back to the consumer.
	cancel context.CancelFunc

	mu        sync.Mutex
	w         domain.Webhook
	conns     map[string]*connQueue
	leftovers []*item
	providers map[string]string
	it        jetstream.MessagesContext

	// acked are the sequences this deliverer acknowledged above ackFloor
	// (the consumer's: every event up to it is acknowledged).
	acked    map[uint64]struct{}
	ackFloor uint64
	// wake is signalled when a connection's queue gets an earlier event.
	wake chan struct{}
	// floorNow asks the heartbeat to read the ack floor now (see
	// ackedLocked).
	floorNow chan struct{}

	// delivered counts the successful deliveries (nil: no metrics).
	delivered prometheus.Counter

	keys      atomic.Pointer[signer]
	keysStale atomic.Bool
	gotAny    atomic.Bool
	// inactive: stopping because the subscription was paused, disabled or
	// deleted (every instance stops), not because this instance closes.
	inactive atomic.Bool

	// runq feeds the workers (up to Config.Concurrency goroutines) with the
	// connections that have an event to send; sem bounds the HTTP attempts
	// in flight (the workers' and the retrying connections').
	runq chan *connQueue
	sem  chan struct{}
	// workers run, idle of them wait for a connection.
	workers, idle atomic.Int64
	drains        sync.WaitGroup
	runDone       chan struct{}
	// after is closed when the previous deliverer of the subscription in
	// this process has given its events back (nil: none); stopped is
	// closed when this one has.
	after, stopped chan struct{}
	stopOnce       sync.Once
}

func newDeliverer(m *Manager, w domain.Webhook, after chan struct{}) *deliverer {
	ctx, cancel := context.WithCancel(m.ctx)
	d := &deliverer{m: m, id: w.ID, ctx: ctx, cancel: cancel, w: w, conns: map[string]*connQueue{}, providers: map[string]string{},
		acked: map[uint64]struct{}{}, wake: make(chan struct{}, 1), floorNow: make(chan struct{}, 1),
		runq: make(chan *connQueue, m.cfg.MaxPending+1), sem: make(chan struct{}, m.cfg.Concurrency), runDone: make(chan struct{}), after: after, stopped: make(chan struct{})}
	d.keysStale.Store(true)
	d.delivered = m.cfg.Metrics.deliveredCounter(w.ID)
	return d
}

func (d *deliverer) start() { go d.run() }

// update takes a changed subscription (a rotated secret).
func (d *deliverer) update(w domain.Webhook) {
	d.mu.Lock()
	d.w = w
	d.mu.Unlock()
	d.keysStale.Store(true)
}

// consumerConfig is the subscription's durable consumer.
func (d *deliverer) consumerConfig() jetstream.ConsumerConfig {
	d.mu.Lock()
	w := d.w
	d.mu.Unlock()
	filter := connSubjectPrefix + "*"
	if w.Connection != "" {
		filter = connSubjectPrefix + w.Connection
	}
	return jetstream.ConsumerConfig{
		Durable: ConsumerPrefix + w.ID, Description: "tokenline webhook " + w.ID,
		FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy, AckWait: d.m.cfg.AckWait,
		MaxAckPending: d.m.cfg.MaxPending, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(w.StartSeq, 1),
		PriorityGroups: []string{PriorityGroup}, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL: d.m.cfg.PinnedTTL, Replicas: d.m.cfg.Replicas,
	}
}

func (d *deliverer) run() {
	defer close(d.runDone)
	log := d.m.cfg.Logger.With("webhook", d.id)
	if d.after != nil {
		select {
		case <-d.after:
		case <-d.ctx.Done():
			return
		}
	}
	var it jetstream.MessagesContext
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		cctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		cons, err := d.m.js.CreateOrUpdateConsumer(cctx, d.m.cfg.EventStream, d.consumerConfig())
		cancel()
		if err == nil {
			// Pull requests expire well within PinnedTTL, so the pin stays
			// with a live instance even when there is nothing to deliver:
			// the pin moves only when an instance stops (another that got
			// it meanwhile would wait, for a connection's next event, on
			// an acknowledgement it cannot see).
			expiry := min(5*time.Second, max(d.m.cfg.PinnedTTL/3, time.Second))
			it, err = cons.Messages(jetstream.PullPriorityGroup(PriorityGroup), jetstream.PullMaxMessages(min(256, d.m.cfg.MaxPending)),
				jetstream.PullExpiry(expiry))
		}
		if err == nil {
			break
		}
		log.Warn("webhook: cannot open the delivery consumer; retrying", "error", err.Error(), "in", wait.String())
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	d.mu.Lock()
	d.it = it
	d.mu.Unlock()
	if d.ctx.Err() != nil {
		it.Stop()
		return
	}
	hb, hbDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(hbDone); d.heartbeat(hb) }()
	// The heartbeat ends before stop gives the events back (a progress
	// report after a NAK would take the event off the redelivery queue).
	defer func() { close(hb); <-hbDone }()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			continue // heartbeats missed, leader change: the iterator goes on
		}
		d.gotAny.Store(true)
		if d.ctx.Err() != nil {
			// Stopping: keep it to give back in order.
			if it := d.parse(msg); it != nil {
				d.mu.Lock()
				d.leftovers = append(d.leftovers, it)
				d.mu.Unlock()
			}
			continue
		}
		d.dispatch(msg)
	}
}

// worker delivers the connections put on runq until the deliverer stops.
// Workers start as connections come, up to Config.Concurrency, and end
// after workerIdle without one: an idle subscription holds no goroutine.
func (d *deliverer) worker() {
	defer d.drains.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		d.idle.Add(1)
		select {
		case q := <-d.runq:
			d.idle.Add(-1)
			d.drain(q, true)
			idle.Reset(workerIdle)
		case <-d.ctx.Done():
			d.idle.Add(-1)
			d.workers.Add(-1)
			return
		case <-idle.C:
			d.idle.Add(-1)
			d.workers.Add(-1)
			// A connection queued while this worker was counted (so none
			// was started for it) is still taken.
			if len(d.runq) == 0 {
				return
			}
			d.workers.Add(1)
			idle.Reset(workerIdle)
		}
	}
}

// workerIdle is how long a worker waits for a connection before it ends.
var workerIdle = 10 * time.Second

// enqueue puts a connection on the run queue and starts a worker if none
// is idle and fewer than Config.Concurrency run; false: the queue is full.
func (d *deliverer) enqueue(q *connQueue) bool {
	select {
	case d.runq <- q:
	default:
		return false
	}
	for d.idle.Load() == 0 {
		n := d.workers.Load()
		if n >= int64(d.m.cfg.Concurrency) {
			break
		}
		if d.workers.CompareAndSwap(n, n+1) {
			d.drains.Add(1)
			go d.worker()
			break
		}
	}
	return true
}

// heartbeat tells the server the events held are still being worked on,
// so that they are not re-delivered while this instance lives.
func (d *deliverer) heartbeat(done chan struct{}) {
	t := time.NewTicker(max(d.m.cfg.AckWait/3, 100*time.Millisecond))
	defer t.Stop()
	var early time.Time
	for {
		select {
		case <-done:
			return
		case <-d.floorNow:
			// Many acknowledgements remembered: read the floor now, at
			// most every ackedEvery (the floor may be held by a failing
			// connection's event).
			if !sleepOr(done, ackedEvery-time.Since(early)) {
				return
			}
			early = time.Now()
			d.refreshAckFloor()
			continue
		case <-t.C:
		}
		d.mu.Lock()
		var held []jetstream.Msg
		for _, q := range d.conns {
			for _, it := range q.items {
				held = append(held, it.msg)
			}
		}
		d.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress()
		}
		// The consumer's ack floor moves up as events are acknowledged:
		// reading it now and then bounds the acknowledgements remembered
		// above it.
		d.refreshAckFloor()
	}
}

// head is what delivery reads of an event without decoding it.
type head struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

func (d *deliverer) parse(msg jetstream.Msg) *item {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return nil
	}
	h, ok := scanHead(msg.Data())
	if !ok {
		// An event no reader can read (the store refuses to write one):
		// nothing to deliver.
		_ = msg.Term()
		return nil
	}
	prev, _ := strconv.ParseUint(msg.Headers().Get(jetstream.ExpectedLastSubjSeqHeader), 10, 64)
	return &item{msg: msg, seq: meta.Sequence.Stream, prev: prev, id: h.ID, typ: domain.EventType(strings.TrimPrefix(h.Type, "tokenline.")),
		conn: strings.TrimPrefix(msg.Subject(), connSubjectPrefix)}
}

func (d *deliverer) dispatch(msg jetstream.Msg) {
	it := d.parse(msg)
	if it == nil {
		return
	}
	d.mu.Lock()
	w := d.w
	if !w.Matches(it.typ, w.Provider, it.conn) { // the provider is checked when delivering
		d.ackedLocked(it.seq)
		d.mu.Unlock()
		_ = msg.Ack()
		d.m.cfg.Metrics.outcome(w.ID, "filtered")
		return
	}
	q := d.conns[it.conn]
	if q == nil {
		q = &connQueue{conn: it.conn}
		d.conns[it.conn] = q
	}
	// In stream order: a re-delivered earlier event (given back by an
	// instance that stopped, or after a server restart) goes before the
	// later ones it arrived after, unless one is already being sent.
	at := len(q.items)
	for at > 0 && q.items[at-1].seq > it.seq && !(at-1 == 0 && q.busy) {
		at--
	}
	q.items = slices.Insert(q.items, at, it)
	if at < len(q.items)-1 {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	start := !q.running
	q.running = true
	d.mu.Unlock()
	if start {
		d.schedule(q)
	}
}

// schedule gives a connection to the workers (or, should their queue be
// full, to a goroutine of its own).
func (d *deliverer) schedule(q *connQueue) {
	if !d.enqueue(q) {
		d.handoff(q)
	}
}

// handoff drains a connection in a goroutine of its own.
func (d *deliverer) handoff(q *connQueue) {
	d.drains.Add(1)
	go func() {
		defer d.drains.Done()
		d.drain(q, false)
	}()
}

// outcome is how far deliver got with an event.
type outcome int

const (
	delivered outcome = iota // acknowledged (delivered, filtered or dead-lettered)
	stopped                  // the deliverer stops or the subscription was disabled: the event goes back
	later                    // (fast only) it has to wait: hand the connection over
)

// drain delivers a connection's events one after the other; it owns the
// connection's queue (q.running) until it returns. A worker drains fast:
// while every event is ready and goes through at its first attempt. At the
// first wait (a failed attempt and its backoff, an earlier event of the
// connection not yet acknowledged, a provider or secret to look up) it
// hands the connection to a goroutine of its own and goes back to the
// others, so that a failing connection never holds a worker; that goroutine
// gives the connection back to the workers once an event went through.
func (d *deliverer) drain(q *connQueue, fast bool) {
	for {
		d.mu.Lock()
		if d.ctx.Err() != nil || len(q.items) == 0 {
			q.running = false
			if len(q.items) == 0 {
				delete(d.conns, q.conn)
			}
			d.mu.Unlock()
			return
		}
		it := q.items[0]
		resume := q.busy // a worker handed the head over mid-delivery
		if fast && !d.doneLocked(it.prev) {
			d.mu.Unlock()
			d.handoff(q)
			return
		}
		if fast {
			q.busy = true
		}
		d.mu.Unlock()
		if !fast && !resume && !d.ready(q, it) {
			continue // stopping, or an earlier event took the head
		}
		switch d.deliver(it, fast) {
		case later:
			d.handoff(q) // q.busy stays: the head is mid-delivery
			return
		case stopped:
			d.mu.Lock()
			q.busy = false
			q.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		q.busy = false
		d.ackedLocked(it.seq)
		q.items = slices.DeleteFunc(q.items, func(x *item) bool { return x == it })
		d.mu.Unlock()
		if !fast && d.enqueue(q) { // back to the workers
			return
		}
	}
}

// ackedLocked records that seq is acknowledged. Past ackedSoft of them
// remembered, it asks the heartbeat to read the consumer's ack floor, which
// forgets those below it (otherwise it does every AckWait/3: at thousands
// of deliveries a second, a map of tens of thousands of sequences).
func (d *deliverer) ackedLocked(seq uint64) {
	if seq > d.ackFloor {
		d.acked[seq] = struct{}{}
		if len(d.acked) > ackedSoft {
			select {
			case d.floorNow <- struct{}{}:
			default:
			}
		}
	}
}

// ackedSoft is how many acknowledgements above the floor a deliverer
// remembers before it reads the floor early, at most every ackedEvery
// (variables for the tests).
var (
	ackedSoft  = 8192
	ackedEvery = time.Second
)

// sleepOr waits d (nothing if d <= 0); false if done closed first.
func sleepOr(done chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}

// doneLocked reports whether the event at seq is acknowledged (or before
// the subscription's start).
func (d *deliverer) doneLocked(seq uint64) bool {
	if seq == 0 || seq < d.w.StartSeq || seq <= d.ackFloor {
		return true
	}
	_, ok := d.acked[seq]
	return ok
}

// ready waits until it may be sent: the connection's previous event is
// acknowledged. The previous event may be pending elsewhere: held by an
// instance that died, or by this one before a NATS restart; the server
// re-delivers it (to this instance, the pinned one) after the ack wait,
// and dispatch puts it at the head of the queue. Meanwhile the consumer's
// ack floor is read now and then. It marks the head busy and returns true,
// or returns false when the deliverer stops or the head changed.
func (d *deliverer) ready(q *connQueue, it *item) bool {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		d.mu.Lock()
		if q.items[0] != it {
			d.mu.Unlock()
			return false
		}
		if d.doneLocked(it.prev) {
			q.busy = true
			d.mu.Unlock()
			return true
		}
		d.mu.Unlock()
		if d.refreshAckFloor() {
			continue
		}
		select {
		case <-d.ctx.Done():
			return false
		case <-d.wake:
			return false
		case <-time.After(wait):
		}
	}
}

// refreshAckFloor reads the consumer's ack floor; it reports a change.
func (d *deliverer) refreshAckFloor() bool {
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	c, err := d.m.js.Consumer(ctx, d.m.cfg.EventStream, ConsumerPrefix+d.id)
	if err != nil {
		return false
	}
	floor := c.CachedInfo().AckFloor.Stream
	d.mu.Lock()
	defer d.mu.Unlock()
	if floor <= d.ackFloor {
		return false
	}
	d.ackFloor = floor
	for s := range d.acked {
		if s <= floor {
			delete(d.acked, s)
		}
	}
	return true
}

// deliver sends one event until it is delivered or dead-lettered
// (delivered: acknowledged) or the deliverer stops (stopped: it goes back).
// Fast (a worker), it makes at most one attempt and never waits: anything
// else returns later, with the event's progress kept in it.
func (d *deliverer) deliver(it *item, fast bool) outcome {
	d.mu.Lock()
	w := d.w
	d.mu.Unlock()
	if w.Provider != "" {
		p, ok := d.provider(it.conn, fast)
		if !ok {
			if fast && d.ctx.Err() == nil {
				return later
			}
			return stopped
		}
		if p != w.Provider {
			_ = it.msg.Ack()
			d.m.cfg.Metrics.outcome(w.ID, "filtered")
			return delivered
		}
	}
	for {
		var res result
		if it.pending != nil {
			res, it.pending = *it.pending, nil
		} else {
			if it.wait > 0 {
				if fast {
					return later
				}
				if !sleep(d.ctx, it.wait) {
					return stopped
				}
				it.wait = 0
			}
			keys, err := d.signingKeys()
			if err != nil {
				if fast {
					return later
				}
				d.m.cfg.Logger.Error("webhook: no signing secret; delivery waits", "webhook", w.ID, "error", err.Error())
				it.wait = d.m.cfg.BackoffMax
				continue
			}
			select {
			case d.sem <- struct{}{}:
			case <-d.ctx.Done():
				return stopped
			}
			res = d.m.send(d.ctx, w, keys, it.id, it.msg.Data())
			<-d.sem
			if d.ctx.Err() != nil && !res.ok() {
				return stopped
			}
			it.attempt++
			if fast && !res.ok() && res.status != http.StatusGone {
				it.pending = &res // the retrying goroutine records it
				return later
			}
		}
		a := Attempt{Time: d.m.cfg.Now().UTC(), EventID: it.id, EventType: "tokenline." + string(it.typ), Connection: it.conn,
			StreamSeq: it.seq, Attempt: it.attempt, Status: res.status, Error: res.err, LatencyMS: ms(res.latency), Instance: d.m.cfg.Instance}
		d.m.cfg.Metrics.latency(res.latency)
		switch {
		case res.ok():
			_ = it.msg.Ack()
			a.Outcome = "delivered"
			if d.delivered != nil {
				d.delivered.Inc()
			}
			d.m.log.add(w.ID, a)
			return delivered
		case res.status == http.StatusGone:
			a.Outcome = "gone"
			d.m.record(w.ID, a)
			d.m.cfg.Logger.Warn("webhook: the receiver answered 410 Gone; disabling the subscription", "webhook", w.ID)
			d.m.wg.Add(1)
			go func() {
				defer d.m.wg.Done()
				if err := d.m.disable(d.m.ctx, w.ID); err != nil {
					d.m.cfg.Logger.Error("webhook: disable", "webhook", w.ID, "error", err.Error())
				}
			}()
			return stopped
		}
		if it.first.IsZero() {
			it.first = a.Time
		}
		if it.attempt >= d.m.cfg.MaxAttempts {
			a.Outcome = "dead_letter"
			d.m.record(w.ID, a)
			if !d.m.deadLetter(d.ctx, DeadLetter{Webhook: w.ID, EventID: it.id, EventType: a.EventType, Connection: it.conn,
				StreamSeq: it.seq, Attempts: it.attempt, LastStatus: res.status, LastError: res.err, Time: a.Time,
				Instance: d.m.cfg.Instance, FirstFailed: it.first}) {
				return stopped
			}
			_ = it.msg.Ack()
			return delivered
		}
		it.wait = d.m.backoff(it.attempt, res.retryAfter)
		next := a.Time.Add(it.wait)
		a.Outcome, a.NextRetry = "failed", &next
		d.m.record(w.ID, a)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// provider returns a connection's provider, retrying (with backoff) until
// it is known or the deliverer stops (once: one try).
func (d *deliverer) provider(conn string, once bool) (string, bool) {
	d.mu.Lock()
	p, ok := d.providers[conn]
	d.mu.Unlock()
	if ok {
		return p, true
	}
	if d.m.cfg.Provider == nil {
		return "", true
	}
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		p, err := d.m.cfg.Provider(d.ctx, conn)
		if err != nil && once {
			return "", false
		}
		if err == nil {
			d.mu.Lock()
			if len(d.providers) > 100000 {
				clear(d.providers)
			}
			d.providers[conn] = p
			d.mu.Unlock()
			return p, true
		}
		if !sleep(d.ctx, wait) {
			return "", false
		}
	}
}

func (d *deliverer) signingKeys() (*signer, error) {
	if k := d.keys.Load(); d.keysStale.Load() || k == nil || (!k.until.IsZero() && !d.m.cfg.Now().Before(k.until)) {
		d.keysStale.Store(false)
		ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
		r, err := d.m.secrets.get(ctx, d.id)
		cancel()
		if err != nil {
			d.keysStale.Store(true)
			return nil, err
		}
		now := d.m.cfg.Now()
		keys, err := r.keys(now)
		if err != nil {
			return nil, err
		}
		sg := newSigner(keys)
		if len(keys) > 1 {
			// The previous secret signs until its grace ends, not until
			// the subscription next changes.
			sg.until = r.PreviousUntil
		}
		d.keys.Store(sg)
	}
	return d.keys.Load(), nil
}

// stop stops delivering and gives every event held back to the consumer,
// in stream order, so that the next instance delivers them first (a NAK
// without delay puts them at the head of the redelivery queue).
func (d *deliverer) stop() {
	d.stopOnce.Do(d.doStop)
	<-d.stopped
}

func (d *deliverer) doStop() {
	defer close(d.stopped)
	d.cancel()
	d.mu.Lock()
	it := d.it
	d.mu.Unlock()
	if it != nil {
		it.Drain()
	}
	<-d.runDone
	d.drains.Wait()
	d.mu.Lock()
	var held []*item
	for _, q := range d.conns {
		held = append(held, q.items...)
	}
	held = append(held, d.leftovers...)
	d.conns, d.leftovers = map[string]*connQueue{}, nil
	d.mu.Unlock()
	slices.SortFunc(held, func(a, b *item) int { return cmpU(a.seq, b.seq) })
	// The pull subscription is gone, but the server still lists its pull
	// request until it notices the missing interest; a NAK meanwhile makes
	// it try that request, fail, and put the event at the END of the
	// redelivery queue (nats-server 2.15 consumer.go, loopAndGatherMsgs),
	// behind later events of its connection. A consumer info request makes
	// the server drop the requests nobody listens to (processWaiting), so
	// the NAKs that follow queue the events in order. A subscription that
	// was paused drops them too: an event stored meanwhile would pin the
	// consumer to such a request, and the deliverer of a quick resume
	// would wait the whole PinnedTTL for the pin.
	if len(held) > 0 || d.inactive.Load() {
		_ = d.m.js.Conn().FlushTimeout(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = d.m.js.Consumer(ctx, d.m.cfg.EventStream, ConsumerPrefix+d.id)
		cancel()
	}
	for _, h := range held {
		_ = h.msg.Nak()
	}
	// Unpin what this deliverer held; a subscription no instance delivers
	// any more is unpinned even if this one never got an event (its pull
	// request may have been pinned without one).
	if d.gotAny.Load() || d.inactive.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if st, err := d.m.js.Stream(ctx, d.m.cfg.EventStream); err == nil {
			_ = st.UnpinConsumer(ctx, ConsumerPrefix+d.id, PriorityGroup)
		}
		cancel()
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// result is one HTTP attempt's outcome.
type result struct {
	status     int
	err        string
	latency    time.Duration
	retryAfter time.Duration
}

func (r result) ok() bool { return r.status >= 200 && r.status < 300 }

// send makes one signed POST of body (the event's CloudEvents envelope,
// as stored) to w's URL; a redirect is an answer like any other (not
// followed: a failed attempt). The request is built directly (the URL parsed
// once per subscription URL, the headers in canonical form in one
// allocation): http.NewRequest and Header.Set cost a URL parse and a key
// canonicalisation per header on every delivery.
func (m *Manager) send(ctx context.Context, w domain.Webhook, sg *signer, id string, body []byte) result {
	u, err := m.target(w.URL)
	if err != nil {
		return result{err: "request: " + err.Error()}
	}
	ts := m.cfg.Now().Unix()
	v := make([]string, 5)
	v[0], v[1], v[2], v[3], v[4] = "application/cloudevents+json", m.cfg.UserAgent, id, strconv.FormatInt(ts, 10), sg.header(id, ts, body)
	req := (&http.Request{Method: http.MethodPost, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": v[0:1:1], "User-Agent": v[1:2:2], "Webhook-Id": v[2:3:3],
			"Webhook-Timestamp": v[3:4:4], "Webhook-Signature": v[4:5:5]},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	})
	// The client's transport directly, the attempt bounded by Timeout in
	// its context (reading the answer included): http.Client.Do would add
	// a copy of the headers for redirects (never followed here), a
	// deadline and its timer per request.
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	req = req.WithContext(ctx)
	t0 := time.Now()
	resp, err := m.client.Transport.RoundTrip(req)
	if err != nil {
		return result{err: attemptError(err), latency: time.Since(t0)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, m.cfg.MaxResponse))
	resp.Body.Close()
	r := result{status: resp.StatusCode, latency: time.Since(t0)}
	if !r.ok() {
		r.err = "HTTP " + strconv.Itoa(resp.StatusCode)
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), m.cfg.Now())
	}
	return r
}

// target returns a subscription URL parsed (cached: the client never
// modifies a request's URL).
func (m *Manager) target(raw string) (*url.URL, error) {
	if u, ok := m.urls.Load(raw); ok {
		return u.(*url.URL), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("not an absolute http(s) URL")
	}
	if m.urlCount.Add(1) > 10000 { // bounded: subscriptions' URLs, rarely changed
		m.urls.Clear()
		m.urlCount.Store(1)
	}
	m.urls.Store(raw, u)
	return u, nil
}

// attemptError says why an attempt failed, without the URL (whose query may
// carry the receiver's own credentials).
func attemptError(err error) string {
	if isPrivateDial(err) {
		return errPrivateTarget.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// maxRetryAfter caps how long a Retry-After answer holds a connection.
const maxRetryAfter = time.Hour

// backoff is the wait after the attempt-th failure: exponential from
// BackoffBase up to BackoffMax, "equal jitter" (half fixed, half random),
// at least Retry-After (capped at an hour).
func (m *Manager) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := m.cfg.BackoffMax
	if attempt-1 < 30 {
		if b := m.cfg.BackoffBase << (attempt - 1); b > 0 && b < d {
			d = b
		}
	}
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, maxRetryAfter)
	}
	return d
}

// record counts an attempt and queues it for the delivery log (see
// logwriter.go: never blocking, batched).
func (m *Manager) record(id string, a Attempt) {
	m.cfg.Metrics.outcome(id, a.Outcome)
	m.log.add(id, a)
}

// deadLetter records an event given up on (synchronously: the event is
// acknowledged only once its dead letter is stored).
func (m *Manager) deadLetter(ctx context.Context, dl DeadLetter) bool {
	b, _ := json.Marshal(dl)
	msg := &nats.Msg{Subject: SubjectPrefix + dl.Webhook + ".dead", Data: b, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, dl.Webhook+":"+dl.EventID)
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := m.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			m.cfg.Metrics.dead(dl.Webhook)
			m.cfg.Logger.Warn("webhook: event dead-lettered", "webhook", dl.Webhook, "event", dl.EventID, "attempts", dl.Attempts)
			return true
		}
		if !sleep(ctx, wait) {
			return false
		}
	}
}
