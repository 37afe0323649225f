// Package lifecycle holds tokenline's use cases: the token lifecycle of its
// connections. It authorises and reauthorises (PKCE S256, one-time state),
// refreshes ahead of expiry with at most one refresh per connection in
// flight across every instance sharing the event store, classifies failures
// (terminal versus transient), detects revoked access from API-call
// rejections, and acts at once on a terminal failure: the gate closes, the
// connection becomes unauthenticated with its reason, stored tokens are
// destroyed (and revoked at the provider, best effort), and the connection
// waits for the user.
//
// The package is application logic on ports: it depends on domain's
// interfaces (EventStore, TokenVault, Attempts, TokenEndpoint, GateWriter,
// Clock) and on domain types only, never on an adapter, and does no I/O of
// its own. cmd/tokenline wires the JetStream, KV, x/oauth2 and projection
// implementations; the unit tests wire adapters/memory.
//
// Every decision is a domain command decided against the connection's
// current state and appended with optimistic concurrency. The append of
// refresh.started is the refresh lock: a second instance deciding against
// the same version gets domain.ErrConflict and backs off.
package lifecycle

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// Config configures a Service.
type Config struct {
	Store     domain.EventStore
	Vault     domain.TokenVault
	Gate      domain.GateWriter
	Attempts  domain.Attempts
	Providers map[string]domain.TokenEndpoint
	// Clock is the time source (default domain.SystemClock).
	Clock domain.Clock
	// Instance names this process in events ("instance/<Instance>").
	Instance string
	Logger   *slog.Logger

	// AuthorisationTTL is how long an authorisation attempt (state) lives;
	// default 10 minutes.
	AuthorisationTTL time.Duration
	// Lease is how long a refresh.started (or refresh.lease_extended) holds
	// the refresh lock; default 30 s. A refresher that is still working
	// extends it once less than half is left, so Lease/2 is how long the
	// stream may be unwritable before the lease runs out. The token request
	// gets Lease/3.
	Lease time.Duration
	// LeaseGrace is how long after the end of a lease another instance
	// recovers it (the holder is then taken for dead); default Lease. A
	// holder whose extensions fail (a JetStream leader election, a NATS
	// outage) keeps its lease for Lease/2 + LeaseGrace, 45 s by default.
	LeaseGrace time.Duration
	// StoreTimeout bounds each try of a vault write, and of an append or
	// load the refresher makes after the token request, so that one hung
	// call does not use up the lease; the refresher retries with backoff
	// and jitter (250 ms doubling to 4 s) until it succeeds. Default 5 s:
	// longer than a JetStream leader election usually takes, short against
	// the time the lease gives (Lease/2).
	StoreTimeout time.Duration
	// MaxAttempts bounds consecutive transient refresh failures; default 5.
	MaxAttempts int
	// MaxAuthorisationsPerConnection bounds the authorisation attempts one
	// connection may open within AuthorisationTTL on this instance (each
	// leaves a sealed entry until it expires); default 10. Beyond it
	// StartAuthorisation fails with ErrTooManyAttempts. An attempt that
	// completed successfully no longer counts (its entry is gone).
	MaxAuthorisationsPerConnection int
	// BackoffBase and BackoffMax shape the exponential backoff with jitter
	// between transient failures; defaults 1 s and 5 min.
	BackoffBase, BackoffMax time.Duration
	// Margin returns how long before expiry a token of the given lifetime is
	// refreshed, before ±10 % jitter; default DefaultMargin (the rule of
	// domain.TokenTiming with its defaults: 3 min for Pleo's 15-minute
	// tokens). cmd/tokenline passes the configured TokenTiming's Lead.
	Margin func(lifetime time.Duration) time.Duration
	// Concurrency bounds refreshes in flight on this instance; default 16.
	// With the duration of a refresh it makes the scheduler's capacity,
	// which spreads refreshes coming due together (sched_spread.go).
	Concurrency int
	// Tick is the longest the scheduler sleeps between looks at its queue
	// (it also wakes at the next due time, and when an earlier job is
	// queued); default 250 ms.
	Tick time.Duration
	// ObserveLateness, if set, is told of every job the scheduler starts
	// (refresh, recover, expire, invalidate, lapse) and how long after its
	// planned time it started. It must be fast.
	ObserveLateness func(job string, late time.Duration)

	// Detection are the detection rules per provider name (detect.go);
	// a provider without an entry has the default rules.
	Detection map[string]domain.DetectionRules
	// Probers are the probes per provider name (probe.go); a provider
	// without one is not probed.
	Probers map[string]domain.Prober
	// ProbeConcurrency bounds the probes in flight on this instance;
	// default DefaultProbeConcurrency.
	ProbeConcurrency int
	// ProbeOwner says whether this instance probes a connection (default:
	// every connection; ShardOwner splits them between instances).
	ProbeOwner func(connectionID string) bool
	// ObserveProbe, if set, is told the outcome of every probe. It must be
	// fast.
	ObserveProbe func(provider, outcome string)
}

// Service is the lifecycle. It is safe for concurrent use.
type Service struct {
	cfg   Config
	clock domain.Clock
	log   *slog.Logger
	actor string
	sem   chan struct{}
	wake  chan struct{} // an entry became the earliest of dueQ

	mu       sync.Mutex
	sched    map[string]*schedEntry
	dueQ     dueQueue
	inflight map[string]bool
	seedSink uint64 // what Seed read ahead (readAhead; keeps the loads)
	spread   *spreader
	attempts *attemptLimiter
	probes   probeSet
	// providers interns the connections' provider names (schedEntry.provider).
	providers names

	tokenLocks tokenLocks // lockTokens
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Vault == nil || cfg.Gate == nil || cfg.Attempts == nil || len(cfg.Providers) == 0 {
		return nil, errors.New("lifecycle: store, vault, gate, attempts and at least one provider are required")
	}
	cfg.Clock = cmp.Or[domain.Clock](cfg.Clock, domain.SystemClock{})
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.AuthorisationTTL = positiveOr(cfg.AuthorisationTTL, 10*time.Minute)
	cfg.Lease = positiveOr(cfg.Lease, 30*time.Second)
	cfg.LeaseGrace = positiveOr(cfg.LeaseGrace, cfg.Lease)
	cfg.StoreTimeout = positiveOr(cfg.StoreTimeout, 5*time.Second)
	cfg.MaxAttempts = positiveOr(cfg.MaxAttempts, 5)
	cfg.MaxAuthorisationsPerConnection = positiveOr(cfg.MaxAuthorisationsPerConnection, 10)
	cfg.BackoffBase = positiveOr(cfg.BackoffBase, time.Second)
	cfg.BackoffMax = positiveOr(cfg.BackoffMax, 5*time.Minute)
	if cfg.Margin == nil {
		cfg.Margin = DefaultMargin
	}
	cfg.Concurrency = positiveOr(cfg.Concurrency, 16)
	cfg.Tick = positiveOr(cfg.Tick, 250*time.Millisecond)
	if cfg.Instance == "" {
		cfg.Instance = uuid.NewString()[:8]
	}
	return &Service{
		cfg: cfg, clock: cfg.Clock, log: cfg.Logger, actor: "instance/" + cfg.Instance,
		sem: make(chan struct{}, cfg.Concurrency), wake: make(chan struct{}, 1),
		sched: map[string]*schedEntry{}, inflight: map[string]bool{}, spread: newSpreader(cfg.Concurrency),
		attempts: newAttemptLimiter(cfg.AuthorisationTTL, cfg.MaxAuthorisationsPerConnection, 100000),
	}, nil
}

// positiveOr returns v, or def when v is zero or negative.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// DefaultMargin is domain.TokenTiming{}.Lead: lifetime/5 clamped to
// [1 s, 5 min], but never less than the default gate margin and refresh
// latency need (docs/transitions.md, "Token lifetimes").
func DefaultMargin(lifetime time.Duration) time.Duration {
	return domain.TokenTiming{}.Lead(lifetime)
}

// Errors of the callback. None of them carries the state value.
var (
	ErrStateMissing  = errors.New("lifecycle: callback without state")
	ErrStateUnknown  = errors.New("lifecycle: unknown or already used authorisation state")
	ErrStateExpired  = errors.New("lifecycle: authorisation state expired")
	ErrStateMismatch = errors.New("lifecycle: authorisation state does not belong to this connection's open attempt")
	ErrDenied        = errors.New("lifecycle: authorisation was not granted")
	ErrNoProvider    = errors.New("lifecycle: unknown provider")
)

func (s *Service) now() time.Time { return s.clock.Now().UTC() }

func (s *Service) provider(name string) (domain.TokenEndpoint, error) {
	p, ok := s.cfg.Providers[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrNoProvider, name)
	}
	return p, nil
}

// HasProvider reports whether a provider of that name is configured.
func (s *Service) HasProvider(name string) bool { _, ok := s.cfg.Providers[name]; return ok }

func (s *Service) event(id string, p domain.Payload) domain.Event {
	return domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: s.now(), Actor: s.actor, Payload: p}
}

// commandFunc decides which command to send given the connection's current
// state (it is called again with the new state after a conflict).
type commandFunc func(c *domain.Connection) (domain.Command, error)

func fixed(cmd domain.Command) commandFunc {
	return func(*domain.Connection) (domain.Command, error) { return cmd, nil }
}

// appendLoader is an event store that can hand out, without a request, the
// aggregate it holds for a connection a caller is about to decide an
// append against (adapters/jsstore). cached reports that it did: the
// aggregate may then be stale, and only a successful append proves it was
// not. A conflict, or a refusal that the aggregate's state caused, is
// answered by loading again with Load (loadToDecide with verify).
type appendLoader interface {
	LoadForAppend(ctx context.Context, id string) (c domain.Connection, cached bool, err error)
}

// loadToDecide loads the connection that the caller decides its next
// append against: from the store's cache when the store has one and
// verify is false (cached true), else with Load.
func (s *Service) loadToDecide(ctx context.Context, id string, verify bool) (domain.Connection, bool, error) {
	if l, ok := s.cfg.Store.(appendLoader); ok && !verify {
		return l.LoadForAppend(ctx, id)
	}
	c, err := s.cfg.Store.Load(ctx, id)
	return c, false, err
}

// transact decides cmd against the connection and appends the event,
// retrying on conflict a few times with the connection loaded again (the
// command is decided again each time). c is the connection as the caller
// already holds it (nil: load it first, from the store's cache if it has
// one: loadToDecide; a refusal decided against a cached aggregate is not
// final, the connection is loaded from the stream and decided again). With closeTerminal, a decision that
// makes the connection unauthenticated closes the gate before the append
// (and reopens it if the append fails), so that no API call slips through
// after tokenline decided the connection is dead. On success c, if given,
// holds the connection after the event.
func (s *Service) transact(ctx context.Context, id string, c *domain.Connection, cmd commandFunc, closeTerminal bool) (domain.Connection, domain.Event, error) {
	var cur domain.Connection
	if c != nil {
		cur = *c
	}
	loaded := c != nil
	cached, verify := false, false
	var lastErr error
	for try := 0; try < 4; try++ {
		if !loaded {
			var err error
			if cur, cached, err = s.loadToDecide(ctx, id, verify); err != nil && !errors.Is(err, domain.ErrNotFound) {
				return cur, domain.Event{}, err
			}
		}
		loaded, verify = false, true // a second try reads the stream
		var p domain.Payload
		command, err := cmd(&cur)
		if err == nil {
			p, err = domain.Decide(&cur, command)
		}
		if err != nil {
			if cached {
				lastErr = err
				continue // refused by what the cache says: ask the stream first
			}
			return cur, domain.Event{}, err
		}
		reason, terminal := domain.Reason(""), false
		if closeTerminal {
			if reason, terminal = terminalReason(p); terminal {
				s.cfg.Gate.CloseAfter(id, reason, cur.Version)
			}
		}
		e, err := s.cfg.Store.Append(ctx, id, cur.Version, s.event(id, p))
		if err != nil {
			if terminal {
				s.cfg.Gate.Reopen(id) // the decision did not land; the next event decides
			}
			if !errors.Is(err, domain.ErrConflict) {
				return cur, domain.Event{}, err
			}
			lastErr = err
			continue
		}
		if err := cur.Apply(e); err != nil {
			return cur, e, err
		}
		if c != nil {
			*c = cur
		}
		return cur, e, nil
	}
	return domain.Connection{}, domain.Event{}, lastErr
}

// terminalReason reports whether an event payload makes the connection
// unauthenticated because its grant is dead, and with which reason.
func terminalReason(p domain.Payload) (domain.Reason, bool) {
	switch d := p.(type) {
	case domain.RefreshFailed:
		return d.Reason, d.Terminal
	case domain.AccessRejected:
		return d.Reason, d.Terminal
	case domain.ConnectionDeleted:
		return domain.ReasonConnectionDeleted, true
	}
	return "", false
}

// Create makes a new connection (unauthenticated, never_authorised).
func (s *Service) Create(ctx context.Context, providerName string, scopes []string, config map[string]string) (domain.Connection, error) {
	if _, err := s.provider(providerName); err != nil {
		return domain.Connection{}, err
	}
	c := domain.Connection{}
	_, _, err := s.transact(ctx, uuid.NewString(), &c, fixed(domain.Create{Provider: providerName, Scopes: scopes, Config: config}), false)
	return c, err
}

// Update changes a connection's configuration and/or scopes; state and
// tokens are untouched (non-destructive).
func (s *Service) Update(ctx context.Context, id string, scopes []string, config map[string]string) (domain.Connection, error) {
	c, _, err := s.transact(ctx, id, nil, fixed(domain.Update{Scopes: scopes, Config: config}), false)
	return c, err
}

// Delete destroys a connection's tokens and deletes it, once: the gate
// closes, the tokens are revoked at the provider (best effort) and removed
// from the vault, tokens.invalidated (reason connection_deleted) is
// appended, then connection.deleted, after which nothing follows. History
// stays. A connection already deleted gives domain.ErrDeleted, so of
// concurrent deletes exactly one succeeds.
//
// The tokens leave the vault once (TokenVault.Take, across instances) and
// whoever took them revokes them, so a token is revoked at most once; on
// this instance the destruction of a connection's tokens is also
// serialised (Delete, a terminal failure's invalidation, the scheduler's,
// abandoned tokens: lockTokens). A refresh in flight holds the tokens:
// Delete waits for its outcome (at most until its lease could be
// recovered) and then destroys the tokens it stored.
func (s *Service) Delete(ctx context.Context, id string) error {
	defer s.lockTokens(id)()
	// One event, sent again as it is after an append without an answer
	// (the store reports a resend of its last event as the success it
	// was), so that a delete whose append landed is not answered
	// ErrDeleted by its own retry.
	ev := s.event(id, domain.ConnectionDeleted{})
	var err error
	var took destroyed
	for try := 1; try <= 8; try++ {
		var c domain.Connection
		if c, err = s.awaitRefresh(ctx, id); err != nil {
			return err
		}
		if _, err = domain.Decide(&c, domain.Delete{}); err != nil {
			return err // ErrDeleted: another delete got there first
		}
		s.cfg.Gate.CloseAfter(id, domain.ReasonConnectionDeleted, c.Version)
		if c.TokensHeld {
			// A refresh may have started since the load, or tokens be
			// stored by a reauthorisation: then the tokens.invalidated
			// append conflicts and the tokens now stored are destroyed
			// on the next try.
			if err = s.invalidateLocked(ctx, &c, domain.ReasonConnectionDeleted, &took); err != nil && !errors.Is(err, errTokensChanged) {
				return err
			}
			if err != nil || c.TokensHeld {
				continue
			}
		}
		// An append without an answer may have landed: the same event is
		// sent again at the same version until the store answers.
		for resend := 1; ; resend++ {
			actx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
			_, err = s.cfg.Store.Append(actx, id, c.Version, ev)
			cancel()
			if err == nil {
				s.log.Info("connection deleted", "connection_id", id)
				return nil
			}
			if errors.Is(err, domain.ErrConflict) || permanent(err) || ctx.Err() != nil || resend >= 8 {
				break
			}
			s.log.Warn("appending connection.deleted got no answer; sending it again", "connection_id", id, "attempt", resend, "error", err.Error())
			if !s.sleep(ctx, retryDelay(resend)) {
				return ctx.Err()
			}
		}
		if !errors.Is(err, domain.ErrConflict) {
			return err
		}
		ev = s.event(id, domain.ConnectionDeleted{}) // decided again on the new version
	}
	return err
}

// awaitRefresh loads the connection, waiting while a refresh holds its
// lease: until the refresher records its outcome, or at most until the
// lease could be recovered (LeaseGrace after its end; a dead refresher's
// tokens are then destroyed as they are).
func (s *Service) awaitRefresh(ctx context.Context, id string) (domain.Connection, error) {
	var deadline time.Time
	for attempt := 1; ; attempt++ {
		c, err := s.cfg.Store.Load(ctx, id)
		if err != nil || c.Deleted || c.State != domain.StateRefreshing {
			return c, err
		}
		now := s.clock.Now()
		if deadline.IsZero() {
			deadline = now.Add(s.cfg.Lease + s.cfg.LeaseGrace)
		}
		if !now.Before(c.LeaseUntil.Add(s.cfg.LeaseGrace)) || !now.Before(deadline) {
			return c, nil
		}
		if !s.sleep(ctx, min(10*time.Millisecond<<min(attempt-1, 5), 250*time.Millisecond)) {
			return c, ctx.Err()
		}
	}
}

// lockTokens serialises, on this instance, everything that destroys one
// connection's stored tokens; it returns the unlock. Other connections are
// not held up.
func (s *Service) lockTokens(id string) func() {
	l := &s.tokenLocks
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*tokenLock{}
	}
	e := l.held[id]
	if e == nil {
		e = &tokenLock{}
		l.held[id] = e
	}
	e.users++
	l.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.held, id)
		}
		l.mu.Unlock()
	}
}

// tokenLocks holds one mutex per connection while someone holds or waits
// for it (lockTokens).
type tokenLocks struct {
	mu   sync.Mutex
	held map[string]*tokenLock
}

type tokenLock struct {
	sync.Mutex
	users int // holders and waiters (tokenLocks.mu)
}

// backoff returns the delay before transient attempt n+1: exponential from
// BackoffBase, capped at BackoffMax, with "equal jitter" (half fixed, half
// random), and never less than the server's Retry-After.
func (s *Service) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := s.cfg.BackoffBase << min(max(attempt-1, 0), 20)
	d = min(d, s.cfg.BackoffMax)
	d = d/2 + mrand.N(d/2+1)
	return max(d, retryAfter)
}

// retryDelay is the wait before try attempt+1 of a refresher's vault
// write or append: 250 ms doubling up to 4 s, with equal jitter.
func retryDelay(attempt int) time.Duration {
	d := min(250*time.Millisecond<<min(max(attempt-1, 0), 4), 4*time.Second)
	return d/2 + mrand.N(d/2+1)
}

// sleep waits for d on the clock, or until ctx ends (false).
func (s *Service) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-s.clock.After(d):
		return true
	}
}

// SetClientSecret installs a provider's new client secret (after the
// operator rotated it at the provider) without a restart. Connections that
// went unauthenticated with invalid_client meanwhile need the user to
// reconnect; the secret is never logged.
func (s *Service) SetClientSecret(providerName, secret string) error {
	p, err := s.provider(providerName)
	if err != nil {
		return err
	}
	if secret == "" || len(secret) > 1024 {
		return fmt.Errorf("%w: client secret must be 1 to 1024 bytes", domain.ErrInvalidCommand)
	}
	p.SetClientSecret(secret)
	s.log.Warn("client secret replaced", "provider", providerName)
	return nil
}

// randomSecret returns 32 random bytes, base64url without padding: a
// 256-bit state value, or a PKCE verifier of 43 characters (RFC 7636 §4.1).
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// stateKey is what the attempts store keys an attempt by: the hex SHA-256
// of its state (the state itself is never stored).
func stateKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}
