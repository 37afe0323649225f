// Package jsstore is tokenline's event store on NATS JetStream.
//
// One stream (TOKENLINE by default) holds every event of every connection,
// one subject per connection: tokenline.conn.<connection-id>. The stream is
// file-backed, refuses message deletion and purges (DenyDelete, DenyPurge: the
// audit history is immutable), has no age or per-subject limits, allows
// direct gets, and is replicated as configured (1 by default, 3 on a cluster).
//
// Every appended event is linked into its connection's hash chain (the
// envelope's prevhash, see events/chain.go): the head is the cached
// aggregate's (Load on a miss), which the expected sequence already pins.
//
// Appends use per-subject optimistic concurrency: each publish carries
// Nats-Expected-Last-Subject-Sequence, the stream sequence of the last message
// on the connection's subject that the writer decided against. If another
// writer appended first, the server refuses the message (error 10071, or
// 10164 on replicated streams) and Append returns domain.ErrConflict. Each
// event's id is its Nats-Msg-Id, so a re-sent event is de-duplicated; because
// a standalone server checks the expected sequence before de-duplication, a
// conflict whose subject's last message carries the same id is reported as
// the success it was.
//
// tokenline decides one event per command, so a single-event Append is the
// common path. Append with several events publishes them as one JetStream
// atomic batch (Nats-Batch-Id / Nats-Batch-Sequence / Nats-Batch-Commit): all
// of them are stored, or none.
//
// Load serves aggregates from an in-memory cache and checks staleness with a
// single request for the subject's last message to the stream's leader (a
// follower may be behind); only the missing tail is read (by batched direct
// get, what a lagging replica lacks from the leader), never the stream.
// LoadForAppend, for a caller about to append, skips that request when the
// cache holds the connection: the append's expected sequence checks it.
//
// Every request has its own per-try timeout and is tried again across a
// leader election (adapters/jsreq), instead of one request to a node that is
// gone consuming the caller's whole deadline.
package jsstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// DefaultStream is the name of the stream.
const DefaultStream = "TOKENLINE"

// Config configures a Store.
type Config struct {
	// Stream name; default DefaultStream.
	Stream string
	// Replicas of the stream: 1 (default) or 3 on a cluster.
	Replicas int
	// Duplicates is the de-duplication window for event ids; default 2m.
	Duplicates time.Duration
	// Actor is written on events that have none (e.g. "instance/<id>").
	Actor string
	// Logger receives skipped-event warnings; default slog.Default().
	Logger *slog.Logger
	// RequestTimeout bounds JetStream requests made with a context that has
	// no deadline; default 5s. (Reads, appends and Info are tried again
	// across a leader election, each try within 2 s, all of them within the
	// caller's deadline or, without one, jsreq.NoDeadlineBudget.)
	RequestTimeout time.Duration
	// CacheSize bounds the aggregates Load keeps; beyond it an arbitrary
	// entry is dropped. Default 10000, or DefaultSeededCacheSize with a
	// Seed: the seed holds every aggregate already, and LoadForAppend
	// takes a miss from it without a request, so the cache only needs the
	// connections being transitioned now (each entry costs ~0.5 KB).
	CacheSize int
	// Seed, if set, supplies an aggregate that is correct up to its Version
	// (a projection that follows the stream) when the cache misses; Load
	// then reads only the subject's messages after it.
	Seed func(connectionID string) (domain.Connection, bool)
	// FollowConn, if set, is the connection Follow's deliveries arrive on
	// (nil: the store's own). On one connection the server queues a
	// follower's deliveries and the appends' acknowledgements in one
	// outbound buffer and the client reads them in one loop, so an append
	// waits behind the deliveries of the events before it; the projection
	// Runner, which takes every event a second time, follows on a
	// connection of its own in production (BenchmarkTransition).
	FollowConn *nats.Conn
}

// DefaultSeededCacheSize is Config.CacheSize's default when Config.Seed is
// set: room for the connections a busy instance transitions within a few
// seconds (a refresh touches its connection two or three times within a
// second), not a second copy of every aggregate.
const DefaultSeededCacheSize = 1024

// Store implements domain.EventStore on JetStream. It is safe for concurrent
// use.
type Store struct {
	nc *nats.Conn
	// replies sends the appends (jsreq.Replies: AppendThen's function
	// runs between the request and its answer).
	replies *jsreq.Replies
	js      jetstream.JetStream
	stream  jetstream.Stream
	// follow is the stream's handle on Config.FollowConn (stream without
	// one): Follow's consumer is created, and delivers, there.
	follow jetstream.Stream
	// checkpoints is the signed-checkpoint stream (nil: a reader opened
	// before it existed).
	checkpoints jetstream.Stream
	cfg         Config
	log         *slog.Logger

	mu    sync.RWMutex
	cache map[string]*domain.Connection
	// doubt holds the connections whose cache entry an append failed
	// against: the stream may be ahead of it (LoadForAppend).
	doubt map[string]struct{}

	hookMu sync.RWMutex
	hooks  []func(domain.Event)

	skipped sync.Map // connection id -> count of undecodable or refused events
}

var _ domain.EventStore = (*Store)(nil)

// StreamConfig returns the stream configuration the store creates.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	cfg = withDefaults(cfg)
	return jetstream.StreamConfig{
		Name:               cfg.Stream,
		Description:        "tokenline connection events (CloudEvents, one subject per connection)",
		Subjects:           []string{events.SubjectPrefix + "*"},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		MaxAge:             0,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxMsgsPerSubject:  -1,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.Duplicates,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
}

func withDefaults(cfg Config) Config {
	cfg.Stream = cmp.Or(cfg.Stream, DefaultStream)
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
		if cfg.Seed != nil {
			cfg.CacheSize = DefaultSeededCacheSize
		}
	}
	return cfg
}

// Open creates the stream and the checkpoint stream (or updates them to the
// configuration, unless their history guards were changed: see
// ShapeProblems) and returns a store on them.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg = withDefaults(cfg)
	// Requests whose context has no deadline (an HTTP handler's, say) get
	// one: while NATS is unreachable they fail instead of hanging.
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("jsstore: jetstream: %w", err)
	}
	st, err := ensureStream(ctx, js, StreamConfig(cfg), cfg.Logger)
	if err != nil {
		return nil, err
	}
	cp, err := ensureStream(ctx, js, CheckpointStreamConfig(cfg), cfg.Logger)
	if err != nil {
		return nil, err
	}
	follow, err := followStream(ctx, cfg, st)
	if err != nil {
		return nil, err
	}
	return &Store{nc: nc, replies: jsreq.NewReplies(nc), js: js, stream: st, follow: follow, checkpoints: cp, cfg: cfg, log: cfg.Logger, cache: make(map[string]*domain.Connection), doubt: map[string]struct{}{}}, nil
}

// followStream returns the handle Follow uses: st, or the stream's handle
// on cfg.FollowConn.
func followStream(ctx context.Context, cfg Config, st jetstream.Stream) (jetstream.Stream, error) {
	if cfg.FollowConn == nil {
		return st, nil
	}
	js, err := jetstream.New(cfg.FollowConn, jetstream.WithDefaultTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("jsstore: jetstream: %w", err)
	}
	f, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("jsstore: stream %s on the follow connection: %w", cfg.Stream, err)
	}
	return f, nil
}

// ensureStream creates a stream, or updates it to want unless someone
// changed what guards the history (ShapeProblems): such a stream is left
// as it is, for CheckShape to report (tokenline is then not ready).
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, log *slog.Logger) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, want.Name)
	if err == nil {
		if p := ShapeProblems(st.CachedInfo().Config, want); len(p) > 0 {
			log.Error("stream configuration changed: not updating it, tokenline is not ready until it is restored", "stream", want.Name, "problems", strings.Join(p, "; "))
			return st, nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("jsstore: stream %s: %w", want.Name, err)
	}
	st, err = js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("jsstore: create stream %s: %w", want.Name, err)
	}
	return st, nil
}

// JetStream returns the JetStream context the store uses.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Stream returns the underlying stream handle.
func (s *Store) Stream() jetstream.Stream { return s.stream }

// StreamName returns the stream's name.
func (s *Store) StreamName() string { return s.cfg.Stream }

// OnAppend registers f to be called, synchronously and before Append returns,
// with every event this store appended (Seq set). Projections on the same
// instance use it for read-your-own-writes. f must be fast and must not call
// back into the store.
func (s *Store) OnAppend(f func(domain.Event)) {
	s.hookMu.Lock()
	s.hooks = append(s.hooks, f)
	s.hookMu.Unlock()
}

// prepare fills in what the event leaves empty, links it to the chain head
// and encodes it into dst[:0]; e.Link.Hash is the hash of the returned
// bytes.
func (s *Store) prepare(dst []byte, connectionID string, head domain.ChainHead, e *domain.Event) ([]byte, error) {
	if err := e.Stamp(connectionID, time.Now, s.cfg.Actor); err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	events.Chain(e, head)
	b, err := events.AppendEncode(dst[:0], e)
	if err != nil {
		return nil, err
	}
	e.Link.Hash = events.HashOf(b)
	return b, nil
}

// outMsg is a single-event append's message, kept in outMsgs between
// appends: the message, its header map and values, and the body's buffer
// are reused (nats.go has copied them out when the publish returns).
type outMsg struct {
	m               nats.Msg
	id, seq, stream [1]string
	body            []byte
}

// An event's message names the stream it is for (Nats-Expected-Stream):
// any other stream refuses it. A push consumer delivers to whatever
// subject its creator names, and a stream stores what is delivered on its
// subjects; a reader's consumer on the event stream delivering to another
// stream's subject would otherwise copy events into it.
var outMsgs = sync.Pool{New: func() any {
	o := &outMsg{body: make([]byte, 0, 1024)}
	o.m.Header = nats.Header{jetstream.MsgIDHeader: o.id[:], jetstream.ExpectedLastSubjSeqHeader: o.seq[:],
		jetstream.ExpectedStreamHeader: o.stream[:]}
	return o
}}

// maxPooledBody bounds the body buffers outMsgs keeps (events are far
// smaller; a rare large one is not kept).
const maxPooledBody = 8 << 10

// head returns the chain head of a connection at expectedLastSeq: the
// genesis for a new connection, the cached aggregate's or the seed's when
// it is at that sequence (no request), else the head Load finds.
func (s *Store) head(ctx context.Context, connectionID string, expectedLastSeq uint64) (domain.ChainHead, error) {
	if expectedLastSeq == 0 {
		return domain.ChainHead{}, nil
	}
	s.mu.RLock()
	c, ok := s.cache[connectionID]
	var h domain.ChainHead
	current := ok && c.Version == expectedLastSeq // read under s.mu: applyAppended updates c in place
	if current {
		h = c.Head
	}
	s.mu.RUnlock()
	if current {
		return h, nil
	}
	// The seed (the status projection, confirmed by the stream) at the
	// expected version has the head: the hash of the message at that
	// sequence, whoever folded it. No request.
	if s.cfg.Seed != nil {
		if sc, ok := s.cfg.Seed(connectionID); ok && sc.ID == connectionID && sc.Version == expectedLastSeq {
			return sc.Head, nil
		}
	}
	lc, err := s.Load(ctx, connectionID)
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return h, err
	}
	// A subject that moved on makes the publish fail with a conflict (or
	// succeed as the re-send of an event that already landed): the server
	// decides, with whatever head.
	return lc.Head, nil
}

// Append implements domain.EventStore: one message published with the
// subject's expected last sequence (Nats-Expected-Last-Subject-Sequence),
// the event id as Nats-Msg-Id and the stream's name as
// Nats-Expected-Stream.
func (s *Store) Append(ctx context.Context, connectionID string, expectedLastSeq uint64, e domain.Event) (domain.Event, error) {
	return s.AppendThen(ctx, connectionID, expectedLastSeq, e, nil)
}

// AppendThen is Append calling sent (if not nil) once the event's publish
// is on its way to the server, before its acknowledgement is waited for:
// a request sent from sent reaches the server behind the append, in the
// same write when the connection's flusher has not run yet. sent is not
// called if the append fails before it publishes; it may be called again
// if the publish is tried again. It must not block.
//
// A refresh sends its vault read from sent (domain/lifecycle): sent after
// the append, the read is answered first. Sent before it (Prefetch before
// Append), the read's answer came 25-35 us after the append's
// acknowledgement (BenchmarkRefreshCycle, per-step probe): the server and
// the client each run whichever of the two they readied last first, and a
// goroutine readied before another waits for it.
func (s *Store) AppendThen(ctx context.Context, connectionID string, expectedLastSeq uint64, e domain.Event, sent func()) (domain.Event, error) {
	if !domain.ValidConnectionID(connectionID) {
		return domain.Event{}, fmt.Errorf("jsstore: invalid connection id %q", connectionID)
	}
	head, err := s.head(ctx, connectionID, expectedLastSeq)
	if err != nil {
		return domain.Event{}, err
	}
	o := outMsgs.Get().(*outMsg)
	body, err := s.prepare(o.body, connectionID, head, &e)
	if err != nil {
		outMsgs.Put(o)
		return domain.Event{}, err
	}
	if cap(body) <= maxPooledBody {
		o.body = body
	}
	m := &o.m
	m.Subject, m.Data = events.Subject(connectionID), body
	o.id[0], o.seq[0], o.stream[0] = e.ID, strconv.FormatUint(expectedLastSeq, 10), s.cfg.Stream
	ack, err := s.publish(ctx, m, sent)
	m.Subject, m.Data, o.id[0], o.seq[0] = "", nil, "", ""
	if len(m.Header) == 3 { // as built (nats.go adds none to a publish without options)
		outMsgs.Put(o)
	}
	if err == nil {
		e.Seq = ack.Sequence
	} else if e.Seq, err = s.publishError(ctx, connectionID, e.ID, err); err != nil {
		// A conflict, or no answer (it may have landed): the stream may
		// be ahead of the cache.
		s.putInDoubt(connectionID)
		return domain.Event{}, err
	}
	s.applyAppended(connectionID, expectedLastSeq, e)
	return e, nil
}

// publishError maps a failed publish: wrong-last-sequence codes become
// domain.ErrConflict unless the subject's last message is this very event
// (a retry of an event that already landed), which is success: its
// sequence is returned.
func (s *Store) publishError(ctx context.Context, connectionID, eventID string, err error) (uint64, error) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return 0, fmt.Errorf("jsstore: append to %s: %w", connectionID, err)
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
	default:
		return 0, fmt.Errorf("jsstore: append to %s: %w", connectionID, err)
	}
	// Read from the leader: a lagging replica would not have the event yet
	// and turn a landed retry into a conflict.
	last, gerr := jsreq.Latest(ctx, s.js, s.cfg.Stream, s.cfg.Replicas, events.Subject(connectionID))
	if gerr == nil && last.Header.Get(jetstream.MsgIDHeader) == eventID {
		return last.Sequence, nil
	}
	return 0, fmt.Errorf("jsstore: append to %s: %w", connectionID, domain.ErrConflict)
}

func (s *Store) applyAppended(connectionID string, expected uint64, e domain.Event) {
	s.mu.Lock()
	c, ok := s.cache[connectionID]
	switch {
	case ok && c.Version == expected:
		// Readers copy the cached aggregate under s.mu and never keep the
		// pointer, so it is updated in place rather than cloned; Apply
		// leaves it unchanged when it refuses the event. The stream took
		// the event after the entry's version: the entry was current, and
		// is again.
		delete(s.doubt, connectionID)
		if err := c.Apply(e); err != nil {
			delete(s.cache, connectionID)
		}
	case !ok && expected == 0 && len(s.cache) < s.cfg.CacheSize:
		if next := new(domain.Connection); next.Apply(e) == nil {
			s.cache[connectionID] = next
		}
	case ok:
		delete(s.cache, connectionID)
		delete(s.doubt, connectionID)
	}
	s.mu.Unlock()
	s.hookMu.RLock()
	hooks := s.hooks
	s.hookMu.RUnlock()
	for _, h := range hooks {
		h(e)
	}
}
