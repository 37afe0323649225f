package webhook

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
)

// Names of what the webhooks live in.
const (
	// DefaultStream is the sibling stream of subscription events
	// (tokenline.webhook.<id>) and dead letters (tokenline.webhook.<id>.dead).
	DefaultStream = "TOKENLINE_WEBHOOKS"
	// DefaultLogStream keeps each subscription's recent delivery attempts
	// (tokenline.webhooklog.<id>, the last Config.LogKeep, at most
	// Config.LogMaxAge old).
	DefaultLogStream = "TOKENLINE_WEBHOOK_LOG"
	// DefaultSecretsBucket holds the sealed signing secrets.
	DefaultSecretsBucket = "tokenline_webhook_secrets"
	// SubjectPrefix starts every subject of the webhooks stream.
	SubjectPrefix = "tokenline.webhook."
	// LogSubjectPrefix starts every subject of the log stream.
	LogSubjectPrefix = "tokenline.webhooklog."
	// ConsumerPrefix names each subscription's durable consumer on the
	// connections' stream: webhook_<id>.
	ConsumerPrefix = "webhook_"
	// PriorityGroup is the pinned priority group of the delivery consumers.
	PriorityGroup = "deliver"
	// LogKeep is how many attempts the log keeps per subscription by
	// default (Config.LogKeep).
	LogKeep = 200
	// LogMaxAge bounds how long an attempt stays in the log by default
	// (Config.LogMaxAge).
	LogMaxAge = 7 * 24 * time.Hour
	// MaxSubscriptions bounds the subscriptions not deleted by default
	// (Config.MaxSubscriptions): each is a durable consumer on the
	// connections' stream, a sealed secret and a filter every event is
	// matched against.
	MaxSubscriptions = 1000
)

// Config configures a Manager.
type Config struct {
	// EventStream is the connections' stream (jsstore.DefaultStream).
	EventStream   string
	Stream        string
	LogStream     string
	SecretsBucket string
	Replicas      int
	// SecretsKey seals the signing secrets (32 bytes; app derives it from
	// the vault key).
	SecretsKey []byte
	Safety     Safety
	// Timeout bounds one delivery attempt (default 10 s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one event before its dead letter
	// (default 12).
	MaxAttempts int
	// BackoffBase is the delay after the first failed attempt (default 1 s),
	// doubling up to BackoffMax (default 10 min), with jitter; a
	// Retry-After answer waits at least as long as it says (up to 1 h).
	BackoffBase, BackoffMax time.Duration
	// AckWait is how long an event a crashed instance held waits before
	// another instance re-delivers it (default 30 s); live instances
	// extend it for the events they hold.
	AckWait time.Duration
	// PinnedTTL is how long an instance that stopped pulling stays the one
	// delivering a subscription before another takes over (default 30 s).
	PinnedTTL time.Duration
	// MaxPending bounds the events of one subscription held at once,
	// delivering or waiting behind their connection's earlier event
	// (default 4096).
	MaxPending int
	// Concurrency bounds the HTTP requests in flight per subscription
	// (default 64).
	Concurrency int
	// MaxResponse bounds how much of a receiver's answer is read (default
	// 64 KiB).
	MaxResponse int64
	// SecretGrace is how long the previous secret still signs after a
	// rotation (default 24 h).
	SecretGrace time.Duration
	// LogKeep and LogMaxAge are the delivery log's retention: the last
	// LogKeep log messages per subscription (each a batch of 1 to 64
	// attempts, so at least the last LogKeep attempts; Log answers the
	// newest LogKeep), none older than LogMaxAge
	// (defaults: the constants). They shape the log stream, which every
	// instance updates as it opens and /readyz checks.
	LogKeep   int
	LogMaxAge time.Duration
	// MaxSubscriptions bounds the subscriptions not deleted (default
	// MaxSubscriptions); Create refuses one more (ErrInvalid). Instances
	// creating at the same moment may each let one more in.
	MaxSubscriptions int
	// Provider returns a connection's provider, for provider filters.
	Provider func(ctx context.Context, connectionID string) (string, error)
	Instance string
	Logger   *slog.Logger
	Metrics  *Metrics
	// UserAgent of the deliveries (default "tokenline-webhooks").
	UserAgent string
	Now       func() time.Time
}

func (c Config) withDefaults() Config {
	c.EventStream = cmp.Or(c.EventStream, "TOKENLINE")
	c.Stream = cmp.Or(c.Stream, DefaultStream)
	c.LogStream = cmp.Or(c.LogStream, DefaultLogStream)
	c.SecretsBucket = cmp.Or(c.SecretsBucket, DefaultSecretsBucket)
	c.Replicas = max(c.Replicas, 1)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Second)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 12)
	c.BackoffBase = cmp.Or(c.BackoffBase, time.Second)
	c.BackoffMax = cmp.Or(c.BackoffMax, 10*time.Minute)
	c.AckWait = cmp.Or(c.AckWait, 30*time.Second)
	c.PinnedTTL = cmp.Or(c.PinnedTTL, 30*time.Second)
	c.MaxPending = cmp.Or(c.MaxPending, 4096)
	c.Concurrency = cmp.Or(c.Concurrency, 64)
	c.MaxResponse = cmp.Or(c.MaxResponse, 64<<10)
	c.SecretGrace = cmp.Or(c.SecretGrace, 24*time.Hour)
	c.LogKeep = cmp.Or(c.LogKeep, LogKeep)
	c.LogMaxAge = cmp.Or(c.LogMaxAge, LogMaxAge)
	c.MaxSubscriptions = cmp.Or(c.MaxSubscriptions, MaxSubscriptions)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.UserAgent = cmp.Or(c.UserAgent, "tokenline-webhooks")
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// StreamConfig is the webhooks stream: file storage, no limits, no deletes
// or purges (the subscriptions' history is kept like the connections').
func StreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name: c.Stream, Description: "tokenline webhook subscriptions (events) and dead letters",
		Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardNew, MaxMsgs: -1, MaxBytes: -1, MaxMsgsPerSubject: -1, Replicas: c.Replicas,
		Duplicates: 2 * time.Minute, DenyDelete: true, DenyPurge: true, AllowDirect: true,
	}
}

// LogStreamConfig is the delivery-log stream: bounded per subscription and
// in age, old entries dropped.
func LogStreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name: c.LogStream, Description: "tokenline webhook delivery attempts (recent)",
		Subjects: []string{LogSubjectPrefix + "*"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, MaxAge: c.LogMaxAge, MaxMsgs: -1, MaxBytes: -1, MaxMsgsPerSubject: int64(c.LogKeep),
		Replicas: c.Replicas, AllowDirect: true,
	}
}

// Errors of the commands.
var (
	ErrNotFound = fmt.Errorf("webhook: no such webhook subscription (%w)", domain.ErrNotFound)
	ErrInvalid  = fmt.Errorf("webhook: invalid request (%w)", domain.ErrInvalidCommand)
)

// Manager owns the subscriptions of one instance: it follows their events
// (every instance sees every subscription), runs a deliverer for each
// active one and executes the API's commands.
type Manager struct {
	cfg     Config
	js      jetstream.JetStream
	events  jetstream.Stream
	stream  jetstream.Stream
	logs    jetstream.Stream
	secrets *secrets
	client  *http.Client
	log     *logWriter
	// urls caches the subscriptions' URLs parsed (see target).
	urls     sync.Map
	urlCount atomic.Int64

	mu      sync.Mutex
	subs    map[string]*domain.Webhook
	workers map[string]*deliverer
	// stopping: the last deliverer stopped per subscription, which a new
	// one waits for.
	stopping map[string]*deliverer
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	follow jetstream.MessagesContext
}

// Open creates (or updates) the webhooks stream, the log stream and the
// secrets bucket, reads every subscription, starts following them and
// starts delivering the active ones.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	m := &Manager{cfg: cfg, js: js, subs: map[string]*domain.Webhook{}, workers: map[string]*deliverer{}, stopping: map[string]*deliverer{}}
	var err error
	if m.events, err = js.Stream(ctx, cfg.EventStream); err != nil {
		return nil, fmt.Errorf("webhook: event stream %s: %w", cfg.EventStream, err)
	}
	if m.stream, err = createOrKeep(ctx, js, StreamConfig(cfg)); err != nil {
		return nil, err
	}
	if m.logs, err = js.CreateOrUpdateStream(ctx, LogStreamConfig(cfg)); err != nil {
		return nil, fmt.Errorf("webhook: log stream: %w", err)
	}
	if m.secrets, err = openSecrets(ctx, js, cfg.SecretsBucket, cfg.Replicas, cfg.SecretsKey); err != nil {
		return nil, err
	}
	m.client = cfg.Safety.Client(cfg.Timeout)
	if tr, ok := m.client.Transport.(*http.Transport); ok {
		// Every sender of a subscription keeps its connection: an idle pool
		// smaller than the senders closes connections that the next
		// attempts dial again (a TCP and TLS handshake each).
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, cfg.Concurrency)
		tr.MaxIdleConns = max(tr.MaxIdleConns, 4*cfg.Concurrency)
	}
	m.log = newLogWriter(m)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.start(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// createOrKeep creates the stream, or leaves an existing one as it is (the
// shape check reports a changed one rather than Open hiding the change).
func createOrKeep(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, want)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: stream %s: %w", want.Name, err)
	}
	return st, nil
}

// start reads the subscriptions to the end, then follows new events.
func (m *Manager) start(ctx context.Context) error {
	cons, err := m.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{SubjectPrefix + "*"}})
	if err != nil {
		return fmt.Errorf("webhook: follow subscriptions: %w", err)
	}
	info, err := m.stream.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+"*"))
	if err != nil {
		return fmt.Errorf("webhook: subscriptions: %w", err)
	}
	var pending uint64
	for _, n := range info.State.Subjects {
		pending += n
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("webhook: follow subscriptions: %w", err)
	}
	m.follow = it
	// Catch up: read as many messages as there were, within ctx.
	for read := uint64(0); read < pending; read++ {
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return fmt.Errorf("webhook: read subscriptions: %w", err)
		}
		m.applyMsg(msg, false)
	}
	m.mu.Lock()
	ids := make([]string, 0, len(m.subs))
	for id, w := range m.subs {
		if w.State != domain.WebhookDeleted {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		m.reconcile(id)
	}
	// The consumers of deleted subscriptions: one listing, not a delete
	// request per subscription ever deleted.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := m.sweep(sctx); err != nil {
		m.cfg.Logger.Warn("webhook: cannot list the delivery consumers to delete those of deleted subscriptions (the NATS user needs $JS.API.CONSUMER.NAMES on the event stream)",
			"error", err.Error())
	}
	cancel()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				sctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
				if err := m.sweep(sctx); err != nil {
					m.cfg.Logger.Debug("webhook: listing delivery consumers", "error", err.Error())
				}
				cancel()
			}
		}
	}()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				if m.ctx.Err() != nil {
					return
				}
				m.cfg.Logger.Warn("webhook: following subscriptions", "error", err.Error())
				continue
			}
			m.applyMsg(msg, true)
		}
	}()
	return nil
}

// applyMsg folds one subscription event, ignoring what is already applied
// (own writes are applied when appended).
func (m *Manager) applyMsg(msg jetstream.Msg, live bool) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	e, err := decodeEvent(msg.Data())
	if err != nil {
		m.cfg.Logger.Warn("webhook: skipping an unreadable subscription event", "seq", meta.Sequence.Stream, "error", err.Error())
		return
	}
	e.Seq = meta.Sequence.Stream
	if m.apply(e) && live {
		m.reconcile(e.WebhookID)
	}
}

// apply folds e unless it is already folded; it reports a change.
func (m *Manager) apply(e domain.WebhookEvent) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.subs[e.WebhookID]
	if w == nil {
		w = &domain.Webhook{}
		m.subs[e.WebhookID] = w
	}
	if e.Seq <= w.Version {
		return false
	}
	w.Apply(e)
	return true
}

// reconcile starts, restarts or stops the deliverer of id to match its
// state.
func (m *Manager) reconcile(id string) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	w := *m.subs[id]
	d := m.workers[id]
	var stop *deliverer
	switch {
	case w.State == domain.WebhookActive && d == nil:
		var after chan struct{}
		if prev := m.stopping[id]; prev != nil {
			after = prev.stopped
		}
		d = newDeliverer(m, w, after)
		m.workers[id] = d
		d.start()
	case w.State == domain.WebhookActive:
		d.update(w)
	case d != nil:
		delete(m.workers, id)
		m.stopping[id] = d
		d.inactive.Store(true)
		stop = d
	}
	m.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
	if w.State == domain.WebhookDeleted {
		// Every instance tries; the first succeeds, the rest find nothing.
		dctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		_ = m.js.DeleteConsumer(dctx, m.cfg.EventStream, ConsumerPrefix+id)
		cancel()
	}
}

// sweepEvery is how often each instance deletes the delivery consumers of
// deleted subscriptions that are still there.
const sweepEvery = time.Minute

// sweep deletes the delivery consumers of subscriptions recorded as
// deleted. Deleting a subscription deletes its consumer, but a consumer can
// come back or stay: another instance that had not yet seen the deletion
// created it (its deliverer starting, or its create request still in flight
// when it stopped), or the delete request failed. A deleted subscription
// never becomes active again, so its consumer is an orphan: the sweep, at
// start and every sweepEvery, removes it. Consumers of subscriptions this
// instance does not know are left alone (one may have just been created
// elsewhere).
func (m *Manager) sweep(ctx context.Context) error {
	names := m.events.ConsumerNames(ctx)
	var orphans []string
	for name := range names.Name() {
		id, ok := strings.CutPrefix(name, ConsumerPrefix)
		if !ok {
			continue
		}
		m.mu.Lock()
		w := m.subs[id]
		dead := w != nil && w.State == domain.WebhookDeleted
		m.mu.Unlock()
		if dead {
			orphans = append(orphans, name)
		}
	}
	for _, name := range orphans {
		derr := m.js.DeleteConsumer(ctx, m.cfg.EventStream, name)
		if derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
			m.cfg.Logger.Warn("webhook: cannot delete the consumer of a deleted subscription", "consumer", name, "error", derr.Error())
			continue
		}
		if derr == nil {
			m.cfg.Logger.Info("webhook: deleted the leftover consumer of a deleted subscription", "consumer", name)
		}
	}
	return names.Err()
}

// Close stops every deliverer (the events they hold go back to the
// consumer, in order, for the next instance) and the follower.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	ws := make([]*deliverer, 0, len(m.workers))
	for _, d := range m.workers {
		ws = append(ws, d)
	}
	m.workers = map[string]*deliverer{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range ws {
		wg.Go(d.stop)
	}
	wg.Wait()
	if m.follow != nil {
		m.follow.Stop()
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.log != nil {
		m.log.stop()
	}
}

// CreateRequest is what a new subscription is made of.
type CreateRequest struct {
	URL        string
	EventTypes []string
	Provider   string
	Connection string
	Actor      string
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "wh_" + hex.EncodeToString(b)
}

// ValidID reports whether id is a subscription id ("wh_" and 16 hex digits).
func ValidID(id string) bool {
	if len(id) != 19 || id[:3] != "wh_" {
		return false
	}
	_, err := hex.DecodeString(id[3:])
	return err == nil && id == "wh_"+hex.EncodeToString(mustHex(id[3:]))
}

func mustHex(s string) []byte { b, _ := hex.DecodeString(s); return b }

// Create validates req, stores a new secret, records the subscription and
// returns it with its secret (shown this once; only its fingerprint is
// recorded).
func (m *Manager) Create(ctx context.Context, req CreateRequest) (domain.Webhook, string, error) {
	return m.create(ctx, req, 0)
}

// create is Create delivering from startSeq (0: from now).
func (m *Manager) create(ctx context.Context, req CreateRequest, startSeq uint64) (domain.Webhook, string, error) {
	if err := m.cfg.Safety.CheckURL(req.URL); err != nil {
		return domain.Webhook{}, "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	types, err := domain.ParseEventTypeFilter(req.EventTypes)
	if err != nil {
		return domain.Webhook{}, "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if req.Connection != "" && !domain.ValidConnectionID(req.Connection) {
		return domain.Webhook{}, "", fmt.Errorf("%w: connection %q is not a connection id", ErrInvalid, req.Connection)
	}
	if len(req.Provider) > 64 {
		return domain.Webhook{}, "", fmt.Errorf("%w: provider name too long", ErrInvalid)
	}
	if n := m.live(); n >= m.cfg.MaxSubscriptions {
		return domain.Webhook{}, "", fmt.Errorf("%w: there are %d subscriptions, at most %d; delete one first", ErrInvalid, n, m.cfg.MaxSubscriptions)
	}
	info, err := m.events.Info(ctx)
	if err != nil {
		return domain.Webhook{}, "", fmt.Errorf("webhook: create: %w", err)
	}
	if startSeq == 0 {
		startSeq = info.State.LastSeq + 1
	}
	id := newID()
	secret := NewSecret()
	if err := m.secrets.put(ctx, id, secretRecord{Current: secret}); err != nil {
		return domain.Webhook{}, "", err
	}
	e := domain.WebhookEvent{Type: domain.WebhookCreated, WebhookID: id, URL: req.URL, EventTypes: types,
		Provider: req.Provider, Connection: req.Connection, StartSeq: startSeq,
		SecretFingerprint: Fingerprint(secret), Actor: req.Actor}
	w, err := m.append(ctx, domain.Webhook{ID: id}, e)
	return w, secret, err
}

// append decides e against w (the caller's fold), publishes it with the
// subject's expected last sequence, applies it and reconciles.
func (m *Manager) append(ctx context.Context, w domain.Webhook, e domain.WebhookEvent) (domain.Webhook, error) {
	if err := domain.DecideWebhook(w, e.Type); err != nil {
		if errors.Is(err, domain.ErrNotFound) {
			return domain.Webhook{}, ErrNotFound
		}
		return domain.Webhook{}, err
	}
	e.ID = uuid.NewString()
	e.WebhookID = cmp.Or(e.WebhookID, w.ID)
	e.Time = m.cfg.Now().UTC()
	if e.Actor == "" {
		e.Actor = "instance/" + m.cfg.Instance
	}
	body, err := encodeEvent(e)
	if err != nil {
		return domain.Webhook{}, err
	}
	msg := &nats.Msg{Subject: SubjectPrefix + e.WebhookID, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, e.ID)
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.Version, 10))
	ack, err := m.js.PublishMsg(ctx, msg)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164) {
			return domain.Webhook{}, fmt.Errorf("%w: webhook %s changed concurrently, try again", domain.ErrConflict, e.WebhookID)
		}
		return domain.Webhook{}, fmt.Errorf("webhook: record %s: %w", e.Type, err)
	}
	e.Seq = ack.Sequence
	m.apply(e)
	m.reconcile(e.WebhookID)
	got, _ := m.Get(e.WebhookID)
	return got, nil
}

// Get returns a subscription (deleted ones too).
func (m *Manager) Get(id string) (domain.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.subs[id]
	if w == nil || w.Version == 0 {
		return domain.Webhook{}, ErrNotFound
	}
	c := *w
	c.EventTypes = slices.Clone(w.EventTypes)
	return c, nil
}

// live counts the subscriptions not deleted.
func (m *Manager) live() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, w := range m.subs {
		if w.Version > 0 && w.State != domain.WebhookDeleted {
			n++
		}
	}
	return n
}

// List returns the subscriptions that are not deleted, oldest first.
func (m *Manager) List() []domain.Webhook {
	m.mu.Lock()
	out := make([]domain.Webhook, 0, len(m.subs))
	for _, w := range m.subs {
		if w.Version > 0 && w.State != domain.WebhookDeleted {
			c := *w
			c.EventTypes = slices.Clone(w.EventTypes)
			out = append(out, c)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b domain.Webhook) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (m *Manager) transition(ctx context.Context, id string, t domain.WebhookEventType, actor, reason string) (domain.Webhook, error) {
	w, err := m.Get(id)
	if err != nil {
		return domain.Webhook{}, err
	}
	return m.append(ctx, w, domain.WebhookEvent{Type: t, Actor: actor, Reason: reason})
}

// Pause stops delivery; the position is kept.
func (m *Manager) Pause(ctx context.Context, id, actor string) (domain.Webhook, error) {
	return m.transition(ctx, id, domain.WebhookPausedEvt, actor, "")
}

// Resume restarts delivery of a paused or disabled subscription from where
// it stopped.
func (m *Manager) Resume(ctx context.Context, id, actor string) (domain.Webhook, error) {
	return m.transition(ctx, id, domain.WebhookResumed, actor, "")
}

// Delete stops delivery for good, removes the consumer and the secret; the
// subscription's events are kept.
func (m *Manager) Delete(ctx context.Context, id, actor string) (domain.Webhook, error) {
	w, err := m.transition(ctx, id, domain.WebhookDeletedEvt, actor, "")
	if err != nil {
		return w, err
	}
	return w, m.secrets.delete(ctx, id)
}

// disable records that the receiver answered 410 Gone.
func (m *Manager) disable(ctx context.Context, id string) error {
	_, err := m.transition(ctx, id, domain.WebhookDisabledEvt, "", "gone")
	if errors.Is(err, domain.ErrInvalidTransition) || errors.Is(err, domain.ErrConflict) {
		return nil // paused, deleted or disabled meanwhile
	}
	return err
}

// RotateSecret replaces the signing secret and returns the new one (shown
// this once). The previous secret still signs for Config.SecretGrace.
func (m *Manager) RotateSecret(ctx context.Context, id, actor string) (domain.Webhook, string, error) {
	w, err := m.Get(id)
	if err != nil {
		return domain.Webhook{}, "", err
	}
	if err := domain.DecideWebhook(w, domain.WebhookSecretRotated); err != nil {
		return domain.Webhook{}, "", err
	}
	old, err := m.secrets.get(ctx, id)
	if err != nil {
		return domain.Webhook{}, "", err
	}
	secret := NewSecret()
	if err := m.secrets.put(ctx, id, secretRecord{Current: secret, Previous: old.Current, PreviousUntil: m.cfg.Now().Add(m.cfg.SecretGrace)}); err != nil {
		return domain.Webhook{}, "", err
	}
	w, err = m.append(ctx, w, domain.WebhookEvent{Type: domain.WebhookSecretRotated, SecretFingerprint: Fingerprint(secret), Actor: actor})
	return w, secret, err
}

// History returns a subscription's events, oldest first.
func (m *Manager) History(ctx context.Context, id string) ([]domain.WebhookEvent, error) {
	if _, err := m.Get(id); err != nil {
		return nil, err
	}
	var out []domain.WebhookEvent
	err := m.readSubject(ctx, m.stream, SubjectPrefix+id, 10000, func(msg jetstream.Msg, seq uint64) {
		if e, err := decodeEvent(msg.Data()); err == nil {
			e.Seq = seq
			out = append(out, e)
		}
	})
	return out, err
}

// Log returns the subscription's recent delivery attempts (the newest
// LogKeep), newest last. The stream keeps LogKeep messages per
// subscription, each a batch of up to logBatch attempts (logwriter.go): at
// least the last LogKeep attempts, at most logBatch times as many.
func (m *Manager) Log(ctx context.Context, id string) ([]Attempt, error) {
	if _, err := m.Get(id); err != nil {
		return nil, err
	}
	out := []Attempt{}
	err := m.readSubject(ctx, m.logs, LogSubjectPrefix+id, m.cfg.LogKeep, func(msg jetstream.Msg, _ uint64) {
		out = append(out, decodeLog(msg.Data())...)
		if len(out) > 2*m.cfg.LogKeep {
			out = append(out[:0], out[len(out)-m.cfg.LogKeep:]...)
		}
	})
	if len(out) > m.cfg.LogKeep {
		out = out[len(out)-m.cfg.LogKeep:]
	}
	return out, err
}

// DeadLetters returns a subscription's dead letters, oldest first (at most
// limit, the newest).
func (m *Manager) DeadLetters(ctx context.Context, id string, limit int) ([]DeadLetter, error) {
	if _, err := m.Get(id); err != nil {
		return nil, err
	}
	out := []DeadLetter{}
	err := m.readSubject(ctx, m.stream, SubjectPrefix+id+".dead", 100000, func(msg jetstream.Msg, _ uint64) {
		var d DeadLetter
		if json.Unmarshal(msg.Data(), &d) == nil {
			out = append(out, d)
		}
	})
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}

// readSubject reads every message of subject in st (at most limit) with an
// ordered consumer.
func (m *Manager) readSubject(ctx context.Context, st jetstream.Stream, subject string, limit int, f func(jetstream.Msg, uint64)) error {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return err
	}
	n := int(min(info.State.Subjects[subject], uint64(limit)))
	if n == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	for read := 0; read < n; {
		batch, err := cons.Fetch(min(n-read, 256), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for msg := range batch.Messages() {
			meta, _ := msg.Metadata()
			var seq uint64
			if meta != nil {
				seq = meta.Sequence.Stream
			}
			f(msg, seq)
			got++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			break
		}
		read += got
	}
	return nil
}

// Lag returns how many events the subscription's consumer has not yet
// acknowledged (pending plus in flight).
func (m *Manager) Lag(ctx context.Context, id string) (uint64, error) {
	c, err := m.events.Consumer(ctx, ConsumerPrefix+id)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// CheckShape compares the webhooks and log streams with what tokenline
// requires (problems in words, or nil).
func (m *Manager) CheckShape(ctx context.Context, problems func(have, want jetstream.StreamConfig) []string) error {
	var errs []error
	for _, want := range []jetstream.StreamConfig{StreamConfig(m.cfg), LogStreamConfig(m.cfg)} {
		st, err := m.js.Stream(ctx, want.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook: stream %s: %w", want.Name, err))
			continue
		}
		if p := problems(st.CachedInfo().Config, want); len(p) > 0 {
			errs = append(errs, fmt.Errorf("webhook: stream %s: %v", want.Name, p))
		}
	}
	return errors.Join(errs...)
}
