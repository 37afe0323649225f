package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// ErrNotDue: the connection does not need a refresh now (or is not active).
var ErrNotDue = errors.New("lifecycle: refresh not due")

// Refresh refreshes one connection now if it is active (and, for the
// schedule trigger, due). It takes the refresh lock by appending
// refresh.started against the version it loaded (from the store's cache
// when it has one: a conflict or a refusal caused by a stale cache is
// decided once more against the stream), and reads the vault meanwhile;
// losing the race returns an error wrapping domain.ErrConflict and sends no
// token request. The refresh token read is used only under the lock: the
// version check guarantees that no other refresher stored tokens since the
// version (a refresher appends refresh.started before it writes the vault,
// and the lock keeps everyone else out after it), and the fingerprint
// check adopts a vault that is ahead of the events, so a replaced refresh
// token is never presented.
//
// The token request is sent immediately after refresh.started is appended.
// A refresh.started whose lease ran out therefore means "the request may
// have been sent" (see recoverLease). ctx is honoured until the lock is
// taken; from then on the refresh runs to its end whatever ctx does: a
// caller that gave up must not strand a rotated token between the provider
// and the vault.
//
// After the token request the refresher holds the only copy of the new
// tokens. It stores them, and records the outcome, for as long as it
// lives: every vault write, append and load gets its own StoreTimeout and
// is retried with backoff and jitter, and the lease is extended
// (refresh.lease_extended) whenever less than half of it is left, so that
// no other instance recovers it meanwhile. It stops only when the lease is
// no longer its own (recovered, or the connection deleted), or a Lease
// after ctx ended (the process is stopping: the lease then runs out and
// another instance records rotated_tokens_lost).
//
// The path loads the connection once and appends twice (the lock and the
// outcome), plus tokens.invalidated after a terminal failure and one
// refresh.lease_extended per half lease that the work takes.
func (s *Service) Refresh(ctx context.Context, id, trigger string) error {
	_, err := s.refresh(ctx, id, trigger)
	return err
}

// refresh is Refresh returning the connection as this instance last saw it
// (after the outcome it recorded, when it got that far).
func (s *Service) refresh(ctx context.Context, id, trigger string) (domain.Connection, error) {
	return s.refreshFrom(ctx, id, trigger, false)
}

// refreshFrom is refresh deciding against the store's cached aggregate
// unless verify (loadToDecide). Whatever the cached aggregate makes it
// refuse (not due, or a conflict taking the lock: it was stale) is decided
// again, once, against the connection read from the stream.
func (s *Service) refreshFrom(ctx context.Context, id, trigger string, verify bool) (domain.Connection, error) {
	c, cached, err := s.loadToDecide(ctx, id, verify)
	if err != nil {
		return c, err
	}
	if c.State != domain.StateActive || !c.TokensHeld || c.Deleted {
		if cached {
			return s.refreshFrom(ctx, id, trigger, true) // the cache may be stale
		}
		return c, ErrNotDue
	}
	if c.Tokens.RefreshTokenFP == "" {
		if cached {
			return s.refreshFrom(ctx, id, trigger, true) // ending a grant: decide on the stream
		}
		return c, s.refreshWithoutToken(ctx, &c) // nothing to present (norefresh.go)
	}
	if trigger == domain.TriggerSchedule && !s.due(&c, s.clock.Now()) {
		if cached {
			return s.refreshFrom(ctx, id, trigger, true) // the cache may be stale
		}
		return c, ErrNotDue
	}
	p, err := s.provider(c.Provider)
	if err != nil {
		return c, err
	}
	if err := ctx.Err(); err != nil {
		return c, err // shutting down before anything was appended or sent
	}
	lease := s.now().Add(s.cfg.Lease)
	pl, err := domain.Decide(&c, domain.StartRefresh{LeaseUntil: lease, Trigger: trigger, RefreshTokenFP: c.Tokens.RefreshTokenFP})
	if err != nil {
		return c, err
	}
	r := refreshRun{s: s, c: &c, p: p, lease: lease, trigger: trigger, caller: ctx}
	work := context.WithoutCancel(ctx)
	// The vault is read while the lock is taken (one round trip instead
	// of two), and what it read is used only once the lock is this
	// refresher's: between the version the lock was decided against (no
	// lease held) and the end of this refresh, no one else writes tokens.
	// The read's request goes out right behind the lock's (startRead,
	// called by the store between the append's request and its answer:
	// appendThen), so that the two round trips overlap.
	var read func() (domain.Tokens, error)
	vcancel := context.CancelFunc(func() {})
	startRead := func() {
		if read == nil {
			// Its own StoreTimeout from when it is sent (a lock tried
			// again may send it late).
			var vctx context.Context
			vctx, vcancel = context.WithTimeout(work, s.cfg.StoreTimeout)
			read = s.readVault(vctx, id)
		}
	}
	if err := r.lock(work, s.event(id, pl), startRead); err != nil {
		if read != nil {
			_, _ = read() // the read ends with the call (it is unused)
		}
		vcancel()
		if cached && errors.Is(err, domain.ErrConflict) && ctx.Err() == nil {
			return s.refreshFrom(ctx, id, trigger, true) // decided against a stale cache
		}
		return c, err // ErrConflict: another instance holds or just used the lock
	}
	startRead() // no-op unless the store answered before it published
	toks, verr := read()
	vcancel()
	err = r.run(work, toks, verr)
	return c, err
}

// vaultRead is what refresh's vault read found.
type vaultRead struct {
	toks domain.Tokens
	err  error
}

// prefetcher is a token vault that can send a read's request from the
// caller's goroutine and be waited for later (adapters/vault).
type prefetcher interface {
	Prefetch(ctx context.Context, connectionID string) func() (domain.Tokens, error)
}

// readVault starts reading the connection's tokens and returns the
// function that waits for them; it must be called once. The request is on
// its way when readVault returns: with a prefetcher, sent from this
// goroutine; otherwise from a goroutine this one hands over to first (a
// new goroutine runs only once this one blocks, and then behind whatever
// this one's next request wakes, which made the read start 50-60 us late
// and finish well after the lock: BenchmarkRefreshCycle).
//
// appendThen calls it between the lock's request and its answer.
func (s *Service) readVault(ctx context.Context, id string) func() (domain.Tokens, error) {
	if p, ok := s.cfg.Vault.(prefetcher); ok {
		return p.Prefetch(ctx, id)
	}
	vault := make(chan vaultRead, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		toks, err := s.cfg.Vault.Get(ctx, id)
		vault <- vaultRead{toks, err}
	}()
	<-started
	return func() (domain.Tokens, error) {
		v := <-vault
		return v.toks, v.err
	}
}

// lock appends refresh.started. An append that fails without an answer
// (a timeout during a leader election) may have landed: then the lock is
// this refresher's and, unless it sends the request and records the
// outcome, the lease would run out and be recovered as rotated_tokens_lost
// though nothing was sent. So the same event is sent again until the store
// answers: stored (or found stored: the store reports a resend of the last
// event as its success), or a conflict, after which the lease on the
// stream tells whether it is this one.
//
// sent is called (by appendThen) once the lock's request is on its way,
// or before it; it may be called more than once.
func (r *refreshRun) lock(ctx context.Context, ev domain.Event, sent func()) error {
	s, id := r.s, r.c.ID
	version := r.c.Version
	r.leaseID = ev.ID
	ambiguous := false
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		e, err := s.appendThen(actx, id, version, ev, sent)
		cancel()
		switch {
		case err == nil:
			return r.c.Apply(e)
		case errors.Is(err, domain.ErrConflict) && ambiguous:
			lctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
			c, lerr := s.cfg.Store.Load(lctx, id)
			cancel()
			if lerr == nil && r.ours(&c) {
				*r.c, r.lease = c, c.LeaseUntil
				return nil
			}
			if lerr == nil {
				return err
			}
			err = lerr
		case errors.Is(err, domain.ErrConflict), permanent(err):
			return err
		}
		ambiguous = true
		if r.stopping() {
			s.log.Error("taking the refresh lock got no answer; giving up", "connection_id", id, "error", err.Error())
			return err
		}
		s.log.Warn("taking the refresh lock got no answer; sending it again", "connection_id", id, "attempt", attempt, "error", err.Error())
		s.sleep(ctx, retryDelay(attempt))
	}
}

// sendingStore is an event store that can run a function between an
// append's request and the wait for its answer (adapters/jsstore).
type sendingStore interface {
	AppendThen(ctx context.Context, connectionID string, expectedLastSeq uint64, e domain.Event, sent func()) (domain.Event, error)
}

// appendThen appends e and calls sent while the append's request is on its
// way (sendingStore), or else before the append.
func (s *Service) appendThen(ctx context.Context, id string, version uint64, e domain.Event, sent func()) (domain.Event, error) {
	if st, ok := s.cfg.Store.(sendingStore); ok {
		return st.AppendThen(ctx, id, version, e, sent)
	}
	sent()
	return s.cfg.Store.Append(ctx, id, version, e)
}

// permanent reports whether an append failed for a reason that trying
// again cannot change (the event or the connection is refused), as
// opposed to the store being unreachable or slow.
func permanent(err error) bool {
	for _, e := range []error{domain.ErrInvalidCommand, domain.ErrInvalidTransition, domain.ErrNotFound, domain.ErrDeleted, domain.ErrExists} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errLeaseLost: the refresh lease is no longer this refresher's (another
// instance recovered it, or the connection was deleted or changed state).
var errLeaseLost = fmt.Errorf("%w: the refresh lease was recovered or the connection changed state", domain.ErrConflict)

// refreshRun is one refresh under a lease this instance holds. It is used
// by one goroutine.
type refreshRun struct {
	s       *Service
	c       *domain.Connection // the connection as this refresher last saw it
	p       domain.TokenEndpoint
	lease   time.Time // the end of this refresher's lease (moved by extensions)
	leaseID string    // the id of its refresh.started
	trigger string

	caller      context.Context // the caller's context: its end starts the shutdown budget
	callerEnded time.Time
	extension   pendingAppend // an extension whose append failed and may have landed
}

// pendingAppend is an event whose append failed without an answer (a
// timeout): it may have landed. It is sent again as it is (same id, same
// expected version), which the event store reports as the success it was
// if it did land; a conflict drops it.
type pendingAppend struct {
	ev      domain.Event
	version uint64
}

// run does the refresh after the lock was taken; ctx does not end (the
// caller's end is r.caller's).
func (r *refreshRun) run(ctx context.Context, toks domain.Tokens, verr error) error {
	s, id := r.s, r.c.ID
	switch {
	case errors.Is(verr, domain.ErrNoTokens):
		return r.failed(ctx, &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"})
	case verr != nil:
		s.log.Warn("reading the vault failed", "connection_id", id, "error", verr.Error())
		return r.failed(ctx, &domain.Failure{Code: "vault_read_failed"})
	}
	if fp := domain.Fingerprint(toks.RefreshToken); r.c.Tokens.RefreshTokenFP != "" && fp != r.c.Tokens.RefreshTokenFP {
		// An earlier refresher stored rotated tokens and died before its
		// event: the vault is ahead of the stream. Adopt them; presenting
		// the refresh token the events describe would present a replaced one.
		s.log.Warn("adopting tokens stored by an interrupted refresh", "connection_id", id, "refresh_token_fp", fp)
		return r.succeeded(ctx, toks, true)
	}
	// The token request gets a third of the lease: the lease is not
	// extended while it is in flight, and at least half of it must be left
	// for the first extension (adapters/provider's HTTP client gives up
	// after 10 s as well).
	pctx, pcancel := context.WithTimeout(ctx, s.cfg.Lease/3)
	newToks, rotated, err := r.p.Refresh(pctx, toks.RefreshToken, toks.Scopes)
	pcancel()
	if err != nil {
		return r.failed(ctx, domain.FailureOf(err))
	}
	// Store access and refresh token together before the event is appended.
	// If the provider rotated, the old refresh token is dead and these are
	// the only copy of the grant: keep trying.
	if err := r.store(ctx, newToks); err != nil {
		if errors.Is(err, errLeaseLost) {
			// Recorded by another instance meanwhile (deleted, or the lease
			// recovered: rotated_tokens_lost). New refresh tokens that no
			// record describes are revoked (best effort) so that the grant
			// does not outlive the record of it; a refresh token the
			// provider kept is the grant's, and stays.
			if rotated {
				if rerr := r.p.Revoke(ctx, newToks.RefreshToken, "refresh_token"); rerr != nil && !errors.Is(rerr, domain.ErrNoRevocation) {
					s.log.Warn("revoking the unrecorded rotated tokens failed (best effort)", "connection_id", id, "error", rerr.Error())
				}
			}
			return fmt.Errorf("lifecycle: store refreshed tokens of %s: %w", id, err)
		}
		// Stopping: the lease runs out and another instance records
		// rotated_tokens_lost (or adopts the tokens if the last write did
		// land after all, which is why they are not revoked here).
		s.log.Error("stopping with refreshed tokens not stored; the lease is left to expire", "connection_id", id, "rotated", rotated, "error", err.Error())
		return fmt.Errorf("lifecycle: store refreshed tokens of %s: %w", id, err)
	}
	return r.succeeded(ctx, newToks, rotated)
}

// store writes the vault, each try with its own StoreTimeout, until it
// succeeds, the lease is lost (errLeaseLost) or the shutdown budget is
// spent (the last write's error).
func (r *refreshRun) store(ctx context.Context, t domain.Tokens) error {
	s, id := r.s, r.c.ID
	for attempt := 1; ; attempt++ {
		if err := r.keepAlive(ctx); err != nil {
			return err
		}
		tctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		err := s.cfg.Vault.Put(tctx, id, t)
		cancel()
		if err == nil {
			return nil
		}
		if r.stopping() {
			return err
		}
		s.log.Warn("storing refreshed tokens failed; retrying", "connection_id", id, "attempt", attempt, "error", err.Error())
		s.sleep(ctx, retryDelay(attempt))
	}
}

// stopping reports whether the caller's context ended at least a Lease
// ago (on the clock): the process is stopping and the refresher gives up.
func (r *refreshRun) stopping() bool {
	if r.caller.Err() == nil {
		return false
	}
	now := r.s.clock.Now()
	if r.callerEnded.IsZero() {
		r.callerEnded = now
	}
	return now.Sub(r.callerEnded) >= r.s.cfg.Lease
}

// keepAlive extends the lease when less than half of it is left. A failed
// extension is logged and tried again at the next call (the loops call it
// before every try); it returns errLeaseLost once the lease is not this
// refresher's any more, nil otherwise.
func (r *refreshRun) keepAlive(ctx context.Context) error {
	s := r.s
	if r.lease.Sub(s.clock.Now()) >= s.cfg.Lease/2 {
		return nil
	}
	_, _, err := r.appendOurs(ctx, domain.ExtendLease{LeaseUntil: s.now().Add(s.cfg.Lease)}, &r.extension)
	switch {
	case errors.Is(err, errLeaseLost):
		return err
	case err != nil:
		s.log.Warn("extending the refresh lease failed; retrying", "connection_id", r.c.ID, "lease_until", r.lease, "error", err.Error())
	default:
		s.log.Debug("refresh lease extended", "connection_id", r.c.ID, "lease_until", r.lease)
	}
	return nil
}

// ours reports whether c is refreshing under this refresher's lease (the
// one its refresh.started took, however often extended).
func (r *refreshRun) ours(c *domain.Connection) bool {
	return c.State == domain.StateRefreshing && c.LeaseID == r.leaseID
}

// appendOurs decides cmd against the connection as this refresher last saw
// it and appends the event, if the lease is still this refresher's. A
// conflict (another instance appended a self-loop such as access.rejected
// or connection.updated) reloads the connection and decides again, up to
// four times. An append or load that fails otherwise returns its error
// with retry true; the event stays in pending and is sent again as it is.
// A decision that makes the connection unauthenticated closes the gate
// before its append (and reopens it if the append fails).
func (r *refreshRun) appendOurs(ctx context.Context, cmd domain.Command, pending *pendingAppend) (p domain.Payload, retry bool, err error) {
	s, id := r.s, r.c.ID
	for try := 0; try < 4; try++ {
		if pending.ev.Payload == nil {
			if !r.ours(r.c) {
				return nil, false, errLeaseLost
			}
			pl, err := domain.Decide(r.c, cmd)
			if err != nil {
				return nil, false, err
			}
			*pending = pendingAppend{ev: s.event(id, pl), version: r.c.Version}
		}
		reason, terminal := terminalReason(pending.ev.Payload)
		if terminal {
			s.cfg.Gate.CloseAfter(id, reason, pending.version)
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		e, err := s.cfg.Store.Append(actx, id, pending.version, pending.ev)
		cancel()
		if err == nil {
			*pending = pendingAppend{}
			if e.Seq == 0 || e.Seq > r.c.Version { // else a resend of an event already loaded
				if err := r.c.Apply(e); err != nil {
					return nil, false, err
				}
			}
			if ext, ok := e.Payload.(domain.RefreshLeaseExtended); ok {
				r.lease = ext.LeaseUntil
			}
			return e.Payload, false, nil
		}
		if terminal {
			s.cfg.Gate.Reopen(id) // the decision did not land (yet); the next event decides
		}
		if !errors.Is(err, domain.ErrConflict) {
			return nil, !permanent(err), err
		}
		// Another writer appended first: reload, and decide again if the
		// lease is still this refresher's (its end may have moved by an
		// extension of its own that landed without an answer).
		*pending = pendingAppend{}
		lctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		c, err := s.cfg.Store.Load(lctx, id)
		cancel()
		if err != nil {
			return nil, true, err
		}
		*r.c = c
		if r.ours(&c) {
			r.lease = c.LeaseUntil
		}
	}
	return nil, false, fmt.Errorf("%w: the connection kept changing", domain.ErrConflict)
}

func (r *refreshRun) succeeded(ctx context.Context, toks domain.Tokens, rotated bool) error {
	s, id := r.s, r.c.ID
	info := toks.Info()
	if _, err := r.outcome(ctx, domain.SucceedRefresh{Tokens: info, Rotated: rotated}); err != nil {
		s.abandonTokens(ctx, id, toks)
		return fmt.Errorf("lifecycle: record refresh of %s: %w", id, err)
	}
	_ = s.cfg.Gate.SetToken(id, info.AccessTokenFP, toks.AccessToken)
	s.log.Info("refresh succeeded", "connection_id", id, "trigger", r.trigger, "rotated", rotated, "access_token_fp", info.AccessTokenFP, "expires_at", info.AccessTokenExpiresAt)
	return nil
}

// failed records a failed attempt; a terminal one then destroys the tokens.
func (r *refreshRun) failed(ctx context.Context, f *domain.Failure) error {
	s, id := r.s, r.c.ID
	retryAt := s.now().Add(s.backoff(r.c.TransientFailures+r.c.ProviderWaits+1, f.RetryAfter))
	if f.Code == domain.CodeProviderUnavailable {
		// Waiting for the provider: bounded in how often (the backoff
		// grows with every wait), not in how long; at most a minute
		// apart so that the connection follows soon once it is back.
		retryAt = s.now().Add(min(s.backoff(r.c.TransientFailures+r.c.ProviderWaits+1, f.RetryAfter), max(time.Minute, f.RetryAfter)))
	}
	pl, err := r.outcome(ctx, domain.FailRefresh{Terminal: f.Terminal, ErrorCode: f.Code, HTTPStatus: f.Status, RetryAt: retryAt, MaxAttempts: s.cfg.MaxAttempts})
	if err != nil {
		return fmt.Errorf("lifecycle: record refresh failure of %s: %w", id, err)
	}
	rf := pl.(domain.RefreshFailed)
	attrs := []any{"connection_id", id, "class", rf.Class, "error_code", rf.ErrorCode,
		"http_status", rf.HTTPStatus, "attempt", rf.Attempt, "terminal", rf.Terminal}
	if rf.Terminal {
		attrs = append(attrs, "reason", string(rf.Reason)) // no retry: no retry_at
	} else {
		attrs = append(attrs, "retry_at", rf.RetryAt)
	}
	s.log.Warn("refresh failed", attrs...)
	if !rf.Terminal {
		return f
	}
	s.log.Error("token expiry or revocation detected", "connection_id", id, "reason", string(rf.Reason), "source", "refresh", "error_code", rf.ErrorCode)
	if err := s.invalidate(ctx, r.c); err != nil {
		s.log.Error("token invalidation failed", "connection_id", id, "error", err.Error())
	}
	return &TerminalError{ConnectionID: id, Reason: rf.Reason, Failure: f}
}

// outcome appends the outcome of the refresh while the lease is this
// refresher's (appendOurs), through failed appends: each try has its own
// StoreTimeout, the lease is extended as needed between tries, and it
// gives up only when the lease is lost or the shutdown budget is spent.
func (r *refreshRun) outcome(ctx context.Context, cmd domain.Command) (domain.Payload, error) {
	var pending pendingAppend
	for attempt := 1; ; attempt++ {
		// An outcome that may have landed is sent again even when the lease
		// looks lost: it may be this outcome that ended the lease.
		if err := r.keepAlive(ctx); err != nil && pending.ev.Payload == nil {
			return nil, err
		}
		p, retry, err := r.appendOurs(ctx, cmd, &pending)
		if err == nil || !retry || r.stopping() {
			return p, err
		}
		r.s.log.Warn("recording the refresh outcome failed; retrying", "connection_id", r.c.ID, "attempt", attempt, "error", err.Error())
		r.s.sleep(ctx, retryDelay(attempt))
	}
}

// recoverLease is the scheduler's job for a refresh whose lease ended
// LeaseGrace ago without an extension: its refresher is taken for dead.
// It appended refresh.started immediately before sending the token
// request, so the request may have been sent and the provider may have
// replaced the refresh token; what the vault holds decides:
//
//   - tokens the events do not describe (another fingerprint): the dead
//     refresher stored them and died before its event; they are adopted
//     (refresh.succeeded, rotated).
//   - the tokens the events describe: the new ones, if any, died with the
//     refresher. RecoverLease decides: terminal rotated_tokens_lost, or a
//     transient lease_expired when the provider kept the refresh token on
//     the last refresh (it does not rotate). The old refresh token is
//     never presented again, not even to the revocation endpoint
//     (invalidate).
//   - the vault cannot be read: nothing is decided; the job runs again.
func (s *Service) recoverLease(ctx context.Context, id string) error {
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil {
		return err
	}
	lease := c.LeaseUntil
	now := s.clock.Now()
	if c.State != domain.StateRefreshing || now.Before(lease.Add(s.cfg.LeaseGrace)) {
		return ErrNotDue
	}
	toks, err := s.cfg.Vault.Get(ctx, id)
	if err != nil && !errors.Is(err, domain.ErrNoTokens) {
		return err
	}
	var cmd domain.Command = domain.RecoverLease{Now: now}
	adopt := err == nil && c.Tokens.RefreshTokenFP != "" && domain.Fingerprint(toks.RefreshToken) != c.Tokens.RefreshTokenFP
	if adopt {
		cmd = domain.SucceedRefresh{Tokens: toks.Info(), Rotated: true}
	}
	_, e, err := s.transact(ctx, id, &c, func(cur *domain.Connection) (domain.Command, error) {
		if cur.State != domain.StateRefreshing || !cur.LeaseUntil.Equal(lease) {
			return nil, ErrNotDue // extended, finished or recovered meanwhile
		}
		return cmd, nil
	}, true)
	if err != nil {
		return err
	}
	if adopt {
		info := toks.Info()
		_ = s.cfg.Gate.SetToken(id, info.AccessTokenFP, toks.AccessToken)
		s.log.Warn("refresh lease expired; adopted the tokens its refresher stored", "connection_id", id, "lease_until", lease, "refresh_token_fp", info.RefreshTokenFP)
		return nil
	}
	rf, _ := e.Payload.(domain.RefreshFailed)
	if !rf.Terminal {
		s.log.Warn("refresh lease expired; recovered (the provider keeps refresh tokens)", "connection_id", id, "lease_until", lease)
		return nil
	}
	s.log.Error("refresh lease expired: its refresher may have sent the refresh token and died with the new tokens", "connection_id", id, "lease_until", lease, "reason", string(rf.Reason))
	return s.invalidate(ctx, &c)
}

// abandonTokens handles tokens this instance stored but could not record:
// if the connection is gone or unauthenticated they must not linger in the
// vault, so they are revoked (best effort) and deleted, unless whoever
// made it so destroyed them already (the vault no longer holds them).
func (s *Service) abandonTokens(ctx context.Context, id string, toks domain.Tokens) {
	defer s.lockTokens(id)()
	c, err := s.cfg.Store.Load(ctx, id)
	if err != nil || (!c.Deleted && c.State != domain.StateUnauthenticated) {
		return // still usable: a later refresh adopts them
	}
	held, err := s.cfg.Vault.Get(ctx, id)
	if err != nil || domain.Fingerprint(held.RefreshToken) != domain.Fingerprint(toks.RefreshToken) {
		return // destroyed already, or replaced by a reauthorisation
	}
	taken, err := s.cfg.Vault.Take(ctx, id)
	if err != nil {
		return // taken (and revoked) by whoever destroyed them meanwhile
	}
	if domain.Fingerprint(taken.RefreshToken) != domain.Fingerprint(toks.RefreshToken) {
		// A reauthorisation stored its tokens in between: put them back.
		if err := s.cfg.Vault.Put(ctx, id, taken); err != nil {
			s.log.Error("restoring tokens taken by mistake failed", "connection_id", id, "error", err.Error())
		}
		return
	}
	if p, err := s.provider(c.Provider); err == nil {
		_ = p.Revoke(ctx, toks.RefreshToken, "refresh_token")
	}
}

// TerminalError reports that a connection became unauthenticated.
type TerminalError struct {
	ConnectionID string
	Reason       domain.Reason
	Failure      *domain.Failure
}

func (e *TerminalError) Error() string {
	return fmt.Sprintf("lifecycle: connection %s is unauthenticated (%s)", e.ConnectionID, e.Reason)
}

// Unwrap makes errors.Is(err, domain.ErrUnauthenticated) true.
func (e *TerminalError) Unwrap() error { return domain.ErrUnauthenticated }

// invalidate destroys the stored tokens of a connection the caller holds
// (c, updated on success): take them out of the vault, revoke them at the
// provider (RFC 7009, best effort), append tokens.invalidated. Only an
// unauthenticated (or deleted) connection's tokens are destroyed: once a
// reauthorisation has started, the vault is about to hold (or holds) the
// new grant, which replaces the old tokens there anyway.
//
// The use cases that may destroy the same tokens at once on this instance
// (a terminal failure, the scheduler, Delete, abandoned tokens) do it under
// lockTokens, and the tokens leave the vault before they are revoked: the
// first revokes them, the others find the vault empty and only record
// tokens.invalidated if nobody did (their append conflicts otherwise).
func (s *Service) invalidate(ctx context.Context, c *domain.Connection) error {
	defer s.lockTokens(c.ID)()
	return s.invalidateLocked(ctx, c, "", nil)
}

// destroyed is what an invalidation took out of the vault (fingerprints)
// and whether it revoked it, kept by Delete across its tries so that
// tokens it destroyed are recorded as revoked on a later try.
type destroyed struct {
	accessFP, refreshFP string
	revoked             bool
}

// invalidateLocked is invalidate with lockTokens held. With a reason
// (connection_deleted) the tokens are destroyed whatever the state.
func (s *Service) invalidateLocked(ctx context.Context, c *domain.Connection, reason domain.Reason, prior *destroyed) error {
	if !c.TokensHeld || (reason == "" && c.State != domain.StateUnauthenticated) {
		return nil
	}
	id := c.ID
	revoked := false
	held := c.Tokens
	// Take: the tokens leave the vault once, whoever else (this instance
	// or another) is destroying them at the same time; the taker revokes.
	toks, gerr := s.cfg.Vault.Take(ctx, id)
	if gerr != nil && !errors.Is(gerr, domain.ErrNoTokens) {
		return gerr
	}
	if gerr != nil && prior != nil && prior.accessFP == held.AccessTokenFP && prior.refreshFP == held.RefreshTokenFP {
		revoked = prior.revoked // destroyed by an earlier try of this delete
	}
	if gerr == nil {
		if p, err := s.provider(c.Provider); err == nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var rerr error
			if replacedMaybe(c, toks) {
				// rotated_tokens_lost: the provider may have replaced this
				// refresh token. Presenting it, to the revocation endpoint
				// too, is a reuse that a provider with reuse detection
				// answers by revoking the grant, and it gives a server that
				// logs presented tokens a replaced one: it is never sent.
				// The access token is revoked (its remaining lifetime is
				// cut); the grant is not (ProviderRevoked false).
				_ = p.Revoke(rctx, toks.AccessToken, "access_token")
				rerr = errNotRevoked
			} else if rerr = p.Revoke(rctx, toks.RefreshToken, "refresh_token"); rerr == nil {
				rerr = p.Revoke(rctx, toks.AccessToken, "access_token")
			}
			cancel()
			revoked = rerr == nil
			if rerr != nil && !errors.Is(rerr, domain.ErrNoRevocation) && !errors.Is(rerr, errNotRevoked) {
				s.log.Warn("revocation at provider failed (best effort)", "connection_id", id, "error", rerr.Error())
			}
		}
		if prior != nil {
			info := toks.Info()
			*prior = destroyed{accessFP: info.AccessTokenFP, refreshFP: info.RefreshTokenFP, revoked: revoked}
		}
	}
	_, _, err := s.transact(ctx, id, c, func(c *domain.Connection) (domain.Command, error) {
		if !c.TokensHeld || (reason == "" && c.State != domain.StateUnauthenticated) {
			return nil, errAlreadyInvalidated
		}
		if c.Tokens.AccessTokenFP != held.AccessTokenFP || c.Tokens.RefreshTokenFP != held.RefreshTokenFP {
			return nil, errTokensChanged // stored meanwhile (a refresh, a reauthorisation): not the ones destroyed
		}
		return domain.InvalidateTokens{ProviderRevoked: revoked, Reason: reason}, nil
	}, false)
	if errors.Is(err, errAlreadyInvalidated) {
		return nil
	}
	if err == nil {
		s.log.Info("tokens invalidated", "connection_id", id, "provider_revoked", revoked)
	}
	return err
}

var errAlreadyInvalidated = errors.New("lifecycle: tokens already invalidated")

// errTokensChanged: other tokens were recorded while the ones invalidate
// took were destroyed; they are not recorded as invalidated.
var errTokensChanged = fmt.Errorf("%w: the connection's tokens changed", domain.ErrConflict)

// errNotRevoked: the grant was deliberately not revoked (replacedMaybe).
var errNotRevoked = errors.New("lifecycle: refresh token not presented")

// replacedMaybe reports whether the vault's refresh token may have been
// replaced by the provider: the connection lost rotated tokens and the
// vault still holds the refresh token the events name (the one the dead
// refresher presented).
func replacedMaybe(c *domain.Connection, toks domain.Tokens) bool {
	return c.Reason == domain.ReasonRotatedTokensLost && (c.Tokens.RefreshTokenFP == "" || domain.Fingerprint(toks.RefreshToken) == c.Tokens.RefreshTokenFP)
}
