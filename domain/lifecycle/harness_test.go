package lifecycle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
	"github.com/tokenline/tokenline/projections"
)

// provider is the name the token endpoint is configured under.
const provider = "memory"

// instance is one tokenline process: its status projection, the gate that
// follows it and the lifecycle service, wired as cmd/tokenline/app does.
type instance struct {
	status *projections.Status
	gate   *projections.Gate
	svc    *lifecycle.Service
}

// env is the in-memory world of one test: every port of adapters/memory on
// one fake clock, and one instance (more with newInstance) whose status
// projection is fed by the store's OnAppend hook, as in production.
type env struct {
	t        *testing.T
	ctx      context.Context
	clock    *memory.Clock
	store    *memory.EventStore
	vault    *memory.Vault
	attempts *memory.Attempts
	tep      *memory.TokenEndpoint
	instance
}

type envOption func(*lifecycle.Config, *memory.TokenEndpointConfig)

func withConfig(f func(*lifecycle.Config)) envOption {
	return func(c *lifecycle.Config, _ *memory.TokenEndpointConfig) { f(c) }
}

func noRevocation() envOption {
	return func(_ *lifecycle.Config, tc *memory.TokenEndpointConfig) { tc.NoRevocation = true }
}

// newEnv builds the world. The fake clock starts at the real time: the
// use cases put deadlines taken from their Clock (the refresh lease) on
// contexts, which the runtime measures in real time.
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	clock := memory.NewClock(time.Now().UTC().Truncate(time.Millisecond))
	e := &env{
		t: t, ctx: ctx, clock: clock,
		store:    memory.NewEventStore(memory.EventStoreConfig{Clock: clock}),
		vault:    memory.NewVault(),
		attempts: memory.NewAttempts(),
	}
	tc := memory.TokenEndpointConfig{Clock: clock}
	cfg := e.config()
	for _, o := range opts {
		o(&cfg, &tc)
	}
	e.tep = memory.NewTokenEndpoint(tc)
	cfg.Providers = map[string]domain.TokenEndpoint{provider: e.tep}
	e.instance = e.newInstance(cfg)
	return e
}

func (e *env) config() lifecycle.Config {
	return lifecycle.Config{
		Store: e.store, Vault: e.vault, Attempts: e.attempts, Clock: e.clock,
		Instance: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: time.Second, BackoffMax: time.Minute,
	}
}

// newInstance wires another process on the same store, vault, attempts
// and provider (cfg.Providers defaults to the env's token endpoint).
func (e *env) newInstance(cfg lifecycle.Config) instance {
	e.t.Helper()
	if cfg.Providers == nil {
		cfg.Providers = map[string]domain.TokenEndpoint{provider: e.tep}
	}
	in := instance{status: projections.NewStatus(), gate: projections.NewGate(projections.GateOptions{Now: e.clock.Now})}
	cfg.Gate = in.gate
	svc, err := lifecycle.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	in.svc = svc
	in.status.OnChange(in.gate.Observe)
	in.status.OnChange(svc.Observe)
	e.store.OnAppend(func(ev domain.Event) { _, _ = in.status.Apply(ev) })
	return in
}

// activeEnv builds the world (newEnv) with one active connection, and
// returns the connection and how many events it has so far.
func activeEnv(t *testing.T, opts ...envOption) (e *env, id string, n int) {
	t.Helper()
	e = newEnv(t, opts...)
	id = e.active()
	return e, id, e.events(id)
}

// create makes a connection (unauthenticated, never_authorised).
func (e *env) create(scopes ...string) string {
	e.t.Helper()
	c, err := e.svc.Create(e.ctx, provider, scopes, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.ID
}

// start opens an authorisation attempt and returns the state and the
// authorisation code the user's consent gives.
func (e *env) start(id string) (state, code string) {
	e.t.Helper()
	authURL, err := e.svc.StartAuthorisation(e.ctx, id)
	if err != nil {
		e.t.Fatalf("StartAuthorisation: %v", err)
	}
	u, err := url.Parse(authURL)
	if err != nil {
		e.t.Fatal(err)
	}
	code, err = e.tep.Approve(authURL)
	if err != nil {
		e.t.Fatalf("Approve: %v", err)
	}
	return u.Query().Get("state"), code
}

// active makes an active connection through the callback.
func (e *env) active() string {
	e.t.Helper()
	id := e.create("read")
	state, code := e.start(id)
	res, err := e.svc.HandleCallback(e.ctx, state, code, "", "")
	if err != nil || res.State != domain.StateActive {
		e.t.Fatalf("HandleCallback: %v %v", res, err)
	}
	return id
}

// callbackFails delivers the OAuth callback (state and code) and expects
// it to fail with want.
func (e *env) callbackFails(what, state, code string, want error) {
	e.t.Helper()
	if _, err := e.svc.HandleCallback(e.ctx, state, code, "", ""); !errors.Is(err, want) {
		e.t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func (e *env) load(id string) domain.Connection {
	e.t.Helper()
	c, err := e.store.Load(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) history(id string) []domain.Event {
	e.t.Helper()
	h, err := e.store.History(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// typesSince returns the types of the connection's events after the first
// skip ones.
func (e *env) typesSince(id string, skip int) []domain.EventType {
	e.t.Helper()
	var out []domain.EventType
	for _, ev := range e.history(id)[skip:] {
		out = append(out, ev.Type())
	}
	return out
}

func (e *env) events(id string) int { e.t.Helper(); return len(e.history(id)) }

// expectTypes checks the connection's events after the first skip.
func (e *env) expectTypes(id string, skip int, want ...domain.EventType) {
	e.t.Helper()
	if got := e.typesSince(id, skip); !slices.Equal(got, want) {
		e.t.Fatalf("events after #%d: %v, want %v", skip, got, want)
	}
}

// last returns the connection's last event's payload.
func last[P domain.Payload](e *env, id string) P {
	e.t.Helper()
	h := e.history(id)
	p, ok := h[len(h)-1].Payload.(P)
	if !ok {
		e.t.Fatalf("last event is %s (%T)", h[len(h)-1].Type(), h[len(h)-1].Payload)
	}
	return p
}

// find returns the payload of the connection's last event of type P.
func find[P domain.Payload](e *env, id string) P {
	e.t.Helper()
	h := e.history(id)
	for i := len(h) - 1; i >= 0; i-- {
		if p, ok := h[i].Payload.(P); ok {
			return p
		}
	}
	var zero P
	e.t.Fatalf("no %T event", zero)
	return zero
}

// expectClosed checks that the gate of in refuses the connection as
// unauthenticated with reason.
func expectClosed(t *testing.T, in instance, id string, reason domain.Reason) {
	t.Helper()
	tok, err := in.svc.Check(context.Background(), id)
	var ge *domain.GateError
	if !errors.As(err, &ge) || tok != "" {
		t.Fatalf("gate: token %q, error %v; want a *domain.GateError", tok, err)
	}
	if ge.Reason != reason || ge.Detail != domain.DetailUnauthenticated || !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("gate: %+v, want unauthenticated (%s)", ge, reason)
	}
}

// expectOpen checks that the gate of in hands out the access token the
// vault holds.
func (e *env) expectOpen(in instance, id string) string {
	e.t.Helper()
	toks, err := e.vault.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("vault: %v", err)
	}
	tok, err := in.svc.Check(e.ctx, id)
	if err != nil || tok != toks.AccessToken {
		e.t.Fatalf("gate: %q %v, want the vault's access token", tok, err)
	}
	return tok
}

// drive runs f while moving the fake clock to every deadline something
// waits on, until f returns; no real time passes on the clock's account.
func drive[T any](e *env, f func() T) T {
	e.t.Helper()
	done := make(chan T, 1)
	dctx, cancel := context.WithCancel(e.ctx)
	go func() { done <- f(); cancel() }()
	for e.clock.BlockUntil(dctx, 1) == nil {
		e.clock.AdvanceToNext()
	}
	select {
	case v := <-done:
		return v
	case <-e.ctx.Done():
		e.t.Fatal("timed out")
		panic("unreachable")
	}
}

// stateKey is the attempts store's key of a state value.
func stateKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// appendRaw appends a payload as another writer would.
func (e *env) appendRaw(id string, p domain.Payload) domain.Event {
	e.t.Helper()
	var last uint64
	if h := e.history(id); len(h) > 0 {
		last = h[len(h)-1].Seq
	}
	ev, err := e.store.Append(e.ctx, id, last, domain.Event{ConnectionID: id, Time: e.clock.Now(), Actor: "instance/other", Payload: p})
	if err != nil {
		e.t.Fatalf("append %s: %v", p.EventType(), err)
	}
	return ev
}

// waitFor waits until the connection's history satisfies ok.
func (e *env) waitFor(id string, what string, ok func(h []domain.Event) bool) {
	e.t.Helper()
	ch := make(chan struct{}, 1)
	e.store.OnAppend(func(domain.Event) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	for !ok(e.history(id)) {
		select {
		case <-ch:
		case <-e.ctx.Done():
			e.t.Fatalf("timed out waiting for %s; events %v", what, e.typesSince(id, 0))
		}
	}
}

// refusedWhileAppending reports whether the gate refused the connection
// with reason while an event of type P was being appended (the last such
// append decides).
func refusedWhileAppending[P domain.Payload](e *env, id string, reason domain.Reason) *atomic.Bool {
	var refused atomic.Bool
	e.store.BeforeAppend(func(_ string, _ uint64, ev domain.Event) {
		if _, ok := ev.Payload.(P); ok {
			_, err := e.gate.Check(id)
			var ge *domain.GateError
			refused.Store(errors.As(err, &ge) && ge.Reason == reason)
		}
	})
	return &refused
}

func hasType(t domain.EventType) func(h []domain.Event) bool {
	return func(h []domain.Event) bool {
		return slices.ContainsFunc(h, func(e domain.Event) bool { return e.Type() == t })
	}
}
