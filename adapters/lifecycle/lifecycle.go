// Package lifecycle runs the token lifecycle of tokenline's connections: it
// authorises and reauthorises (PKCE S256, one-time state), refreshes ahead of
// expiry with at most one refresh per connection in flight across every
// instance sharing the stream, classifies failures (terminal versus
// transient), detects revoked access from API-call rejections, and acts at
// once on a terminal failure: the gate closes, the connection becomes
// unauthenticated with its reason, stored tokens are destroyed (and revoked
// at the provider, best effort), and the connection waits for the user.
//
// Every decision is a domain command decided against the connection's current
// state and appended to the event store with optimistic concurrency. The
// append of refresh.started is the refresh lock: a second instance deciding
// against the same version gets domain.ErrConflict and backs off.
package lifecycle

import (
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
	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
)

// Gate is the part of the API-call gate the lifecycle writes to.
type Gate interface {
	// CloseAfter closes the gate for a connection at once, before a
	// terminal event is appended; version is the aggregate version the
	// decision was made against (only a newer event re-opens the entry).
	CloseAfter(connectionID string, reason domain.Reason, version uint64)
	// Reopen undoes a Close that no event has superseded (the terminal
	// event could not be appended).
	Reopen(connectionID string)
	// SetToken hands the gate the access token whose fingerprint is fp.
	SetToken(connectionID, fp, accessToken string) error
	// Check returns the access token if the connection may be used now.
	Check(connectionID string) (string, error)
}

// Config configures a Service.
type Config struct {
	Store     domain.EventStore
	Vault     domain.TokenVault
	Gate      Gate
	Providers map[string]*provider.Provider
	// Pending keeps open authorisation attempts; default in memory.
	Pending PendingStore
	// Instance names this process in events ("instance/<Instance>").
	Instance string
	Logger   *slog.Logger
	Now      func() time.Time

	// AuthorisationTTL is how long an authorisation attempt (state) lives;
	// default 10 minutes.
	AuthorisationTTL time.Duration
	// Lease is how long a refresher holds the refresh lock; default 30 s.
	Lease time.Duration
	// MaxAttempts bounds consecutive transient refresh failures; default 5.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff with jitter
	// between transient failures; defaults 1 s and 5 min.
	BackoffBase, BackoffMax time.Duration
	// Margin returns how long before expiry a token of the given lifetime is
	// refreshed; default lifetime/5 clamped to [1 s, 5 min] (3 min for Pleo's
	// 15-minute tokens), with ±10 % jitter.
	Margin func(lifetime time.Duration) time.Duration
	// Concurrency bounds refreshes in flight on this instance; default 16.
	Concurrency int
	// Tick is the scheduler period; default 250 ms.
	Tick time.Duration
}

// Service is the lifecycle. It is safe for concurrent use.
type Service struct {
	cfg   Config
	log   *slog.Logger
	actor string
	sem   chan struct{}

	mu       sync.Mutex
	sched    map[string]*schedEntry
	dueQ     dueQueue
	inflight map[string]bool
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Vault == nil || cfg.Gate == nil || len(cfg.Providers) == 0 {
		return nil, errors.New("lifecycle: store, vault, gate and at least one provider are required")
	}
	if cfg.Pending == nil {
		cfg.Pending = NewMemoryPending()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AuthorisationTTL <= 0 {
		cfg.AuthorisationTTL = 10 * time.Minute
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.Margin == nil {
		cfg.Margin = DefaultMargin
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	if cfg.Instance == "" {
		cfg.Instance = uuid.NewString()[:8]
	}
	return &Service{
		cfg: cfg, log: cfg.Logger, actor: "instance/" + cfg.Instance,
		sem:   make(chan struct{}, cfg.Concurrency),
		sched: map[string]*schedEntry{}, inflight: map[string]bool{},
	}, nil
}

// DefaultMargin is lifetime/5 clamped to [1 s, 5 min].
func DefaultMargin(lifetime time.Duration) time.Duration {
	return min(max(lifetime/5, time.Second), 5*time.Minute)
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

func (s *Service) provider(c *domain.Connection) (*provider.Provider, error) {
	p, ok := s.cfg.Providers[c.Provider]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrNoProvider, c.Provider)
	}
	return p, nil
}

// HasProvider reports whether a provider of that name is configured.
func (s *Service) HasProvider(name string) bool { _, ok := s.cfg.Providers[name]; return ok }

// decideAppend loads the connection, decides cmd(c) and appends the event,
// retrying on conflict a few times (the command is re-decided against the
// new state each time). pre, if set, runs after a successful decision and
// before the append (used to close the gate before a terminal event).
func (s *Service) decideAppend(ctx context.Context, id string, cmd func(*domain.Connection) (domain.Command, error), pre func(*domain.Connection, domain.Payload)) (domain.Connection, domain.Event, error) {
	var lastErr error
	for try := 0; try < 4; try++ {
		c, err := s.cfg.Store.Load(ctx, id)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return c, domain.Event{}, err
		}
		command, err := cmd(&c)
		if err != nil {
			return c, domain.Event{}, err
		}
		p, err := domain.Decide(&c, command)
		if err != nil {
			return c, domain.Event{}, err
		}
		if pre != nil {
			pre(&c, p)
		}
		e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: s.cfg.Now().UTC(), Actor: s.actor, Payload: p}
		out, err := s.cfg.Store.Append(ctx, id, c.Version, e)
		if err != nil && pre != nil {
			s.cfg.Gate.Reopen(id) // a Close made by pre is undone if the event did not land
		}
		if err == nil {
			if aerr := c.Apply(out); aerr != nil {
				return c, out, aerr
			}
			return c, out, nil
		}
		if !errors.Is(err, domain.ErrConflict) {
			return c, domain.Event{}, err
		}
		lastErr = err
	}
	return domain.Connection{}, domain.Event{}, lastErr
}

func fixed(cmd domain.Command) func(*domain.Connection) (domain.Command, error) {
	return func(*domain.Connection) (domain.Command, error) { return cmd, nil }
}

// Create makes a new connection (unauthenticated, never_authorised).
func (s *Service) Create(ctx context.Context, providerName string, scopes []string, config map[string]string) (domain.Connection, error) {
	if _, ok := s.cfg.Providers[providerName]; !ok {
		return domain.Connection{}, fmt.Errorf("%w %q", ErrNoProvider, providerName)
	}
	id := uuid.NewString()
	c, _, err := s.decideAppend(ctx, id, fixed(domain.Create{Provider: providerName, Scopes: scopes, Config: config}), nil)
	return c, err
}

// Update changes a connection's configuration and/or scopes; state and
// tokens are untouched (non-destructive).
func (s *Service) Update(ctx context.Context, id string, scopes []string, config map[string]string) (domain.Connection, error) {
	c, _, err := s.decideAppend(ctx, id, fixed(domain.Update{Scopes: scopes, Config: config}), nil)
	return c, err
}

// Delete closes the gate, destroys the tokens (revoking them at the
// provider, best effort) and deletes the connection. History stays.
func (s *Service) Delete(ctx context.Context, id string) error {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return err
	}
	if c.Deleted {
		return domain.ErrDeleted
	}
	s.cfg.Gate.CloseAfter(id, domain.ReasonConnectionDeleted, c.Version)
	if _, _, err := s.decideAppend(ctx, id, fixed(domain.Delete{}), nil); err != nil {
		s.cfg.Gate.Reopen(id)
		return err
	}
	return s.invalidate(ctx, id)
}

func randomState() string {
	b := make([]byte, 32) // 256 bits
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func stateKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// StartAuthorisation opens an authorisation (or reauthorisation) attempt and
// returns the provider's authorize URL: the connection's scopes, a one-time
// state (256 bits, bound to this connection and attempt, expiring after
// AuthorisationTTL) and a PKCE S256 challenge. The verifier stays here.
func (s *Service) StartAuthorisation(ctx context.Context, id string) (string, error) {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return "", err
	}
	if c.State == domain.StateUnauthenticated && c.TokensHeld {
		// The terminal failure's invalidation has not finished (it was
		// interrupted): finish it first, so it cannot later delete the
		// tokens this authorisation stores.
		if err := s.invalidate(ctx, id); err != nil {
			return "", err
		}
	}
	p, err := s.provider(&c)
	if err != nil {
		return "", err
	}
	state, verifier := randomState(), oauth2.GenerateVerifier()
	attempt := uuid.NewString()
	expires := s.cfg.Now().Add(s.cfg.AuthorisationTTL).UTC()
	if err := s.cfg.Pending.Put(ctx, stateKey(state), Pending{ConnectionID: id, AttemptID: attempt, Verifier: verifier, ExpiresAt: expires}); err != nil {
		return "", err
	}
	c, _, err = s.decideAppend(ctx, id, fixed(domain.StartAuthorisation{AttemptID: attempt, ExpiresAt: expires}), nil)
	if err != nil {
		return "", err
	}
	s.log.Info("reauthorisation triggered", "connection_id", id, "attempt_id", attempt, "previous_reason", string(c.Reason))
	return p.AuthCodeURL(state, verifier, c.Scopes, domain.AuthorizeParams(c.Config)), nil
}

// CallbackResult is what the callback did.
type CallbackResult struct {
	ConnectionID string
	State        domain.State
}

// HandleCallback completes an attempt from the provider's redirect. The
// state is checked before anything else; an unknown, expired, reused or
// mismatched state changes nothing. An error from the provider ends the
// attempt (authorisation_denied); a code is exchanged (PKCE) and the tokens
// are stored before authorisation.completed is appended.
func (s *Service) HandleCallback(ctx context.Context, state, code, errCode, errDesc string) (CallbackResult, error) {
	if state == "" {
		return CallbackResult{}, ErrStateMissing
	}
	pd, err := s.cfg.Pending.Take(ctx, stateKey(state))
	if err != nil {
		return CallbackResult{}, err
	}
	res := CallbackResult{ConnectionID: pd.ConnectionID}
	if !s.cfg.Now().Before(pd.ExpiresAt) {
		return res, ErrStateExpired
	}
	c, err := s.cfg.Store.Load(ctx, pd.ConnectionID)
	if err != nil {
		return res, err
	}
	if c.State != domain.StateReauthorising || c.AttemptID != pd.AttemptID {
		return res, ErrStateMismatch
	}
	p, err := s.provider(&c)
	if err != nil {
		return res, err
	}
	fail := func(code, desc string, exchange bool) (CallbackResult, error) {
		c, e, err := s.decideAppend(ctx, c.ID, fixed(domain.FailAuthorisation{AttemptID: pd.AttemptID, Exchange: exchange, ErrorCode: code, Description: truncate(desc, 200)}), nil)
		if err != nil {
			return res, err
		}
		res.State = c.State
		s.log.Warn("authorisation failed", "connection_id", c.ID, "reason", string(e.Payload.(domain.AuthorisationFailed).Reason), "error_code", code)
		return res, fmt.Errorf("%w: %s", ErrDenied, code)
	}
	if errCode != "" {
		return fail(safe(errCode), errDesc, false)
	}
	if code == "" {
		return fail("invalid_request", "callback without code", false)
	}
	toks, err := s.exchange(ctx, p, code, pd.Verifier, c.Scopes)
	if err != nil {
		f := provider.Classify(err)
		return fail(f.Code, "", true)
	}
	if err := s.cfg.Vault.Put(ctx, c.ID, toks); err != nil {
		return res, err
	}
	info := toks.Info()
	c, _, err = s.decideAppend(ctx, c.ID, fixed(domain.CompleteAuthorisation{AttemptID: pd.AttemptID, Tokens: info}), nil)
	if err != nil {
		return res, err
	}
	_ = s.cfg.Gate.SetToken(c.ID, info.AccessTokenFP, toks.AccessToken)
	res.State = c.State
	s.log.Info("authorisation completed", "connection_id", c.ID, "attempt_id", pd.AttemptID, "access_token_fp", info.AccessTokenFP, "expires_at", info.AccessTokenExpiresAt)
	return res, nil
}

// exchange trades the code, retrying transient failures (network, 5xx, 429)
// twice with a short backoff: a code is single-use, but a request that
// failed that way was not answered, so the code is still good.
func (s *Service) exchange(ctx context.Context, p *provider.Provider, code, verifier string, scopes []string) (domain.Tokens, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var toks domain.Tokens
		if toks, err = p.Exchange(ctx, code, verifier, scopes); err == nil {
			return toks, nil
		}
		f := provider.Classify(err)
		if f.Terminal {
			return domain.Tokens{}, err
		}
		s.log.Warn("code exchange failed, retrying", "class", "transient", "error_code", f.Code, "http_status", f.Status, "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return domain.Tokens{}, err
		case <-time.After(max(time.Duration(100*(attempt+1)*(attempt+1))*time.Millisecond, min(f.RetryAfter, 2*time.Second))):
		}
	}
	return domain.Tokens{}, err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func safe(code string) string {
	if len(code) > 64 {
		code = code[:64]
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < 0x20 || c > 0x7e {
			return "invalid_error_code"
		}
	}
	return code
}

// Token returns the connection's access token if the gate is open. On an
// instance that has not seen the token yet (another instance refreshed it),
// it loads it from the vault once.
func (s *Service) Token(ctx context.Context, id string) (string, time.Time, error) {
	tok, err := s.cfg.Gate.Check(id)
	if err == nil {
		return tok, s.expiry(id), nil
	}
	var ge *domain.GateError
	if !errors.As(err, &ge) || ge.Detail != domain.DetailTokenNotLoaded {
		return "", time.Time{}, err
	}
	t, verr := s.cfg.Vault.Get(ctx, id)
	if verr != nil {
		return "", time.Time{}, err
	}
	_ = s.cfg.Gate.SetToken(id, domain.Fingerprint(t.AccessToken), t.AccessToken)
	tok, err = s.cfg.Gate.Check(id)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, t.Expiry, nil
}

func (s *Service) expiry(id string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.sched[id]; ok {
		return e.expiresAt
	}
	return time.Time{}
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

// SetClientSecret installs a provider's new client secret (after the
// operator rotated it at the provider) without a restart. Connections that
// went unauthenticated with invalid_client meanwhile need the user to
// reconnect; the secret is never logged.
func (s *Service) SetClientSecret(providerName, secret string) error {
	p, ok := s.cfg.Providers[providerName]
	if !ok {
		return fmt.Errorf("%w %q", ErrNoProvider, providerName)
	}
	if secret == "" || len(secret) > 1024 {
		return fmt.Errorf("%w: client secret must be 1 to 1024 bytes", domain.ErrInvalidCommand)
	}
	p.SetClientSecret(secret)
	s.log.Warn("client secret replaced", "provider", providerName)
	return nil
}
