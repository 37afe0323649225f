// Package roundtrip is the http.RoundTripper Go integrations wrap their
// http.Client with to call a provider's API through tokenline: a drop-in
// replacement for golang.org/x/oauth2's Transport whose token source is the
// gate (projections.Gate).
//
// For every request the Transport asks the gate whether the connection may be
// used now. While a refresh is due or in flight it waits for it (Wait,
// default DefaultWait). If the connection still may not be used, it fails
// without touching the network with a *RefusedError that says which kind of
// refusal it is: errors.Is(err, ErrRetryLater) (nobody needs to act: retry
// shortly) or errors.Is(err, ErrActionRequired) (a person must act; ActionBy
// says who: the user must reconnect, or the operator must fix the client
// secret or registration). A connection whose access token nothing will
// renew (its grant has no refresh token) is refused once the token is
// within min(gate margin, 1 s) of its expiry, at once and as
// ErrActionRequired (refresh_not_granted): no refresh will come to wait
// for. It also wraps the gate's *domain.GateError
// (errors.Is(err, domain.ErrUnauthenticated)).
// Otherwise it sends a clone of the request with "Authorization: Bearer
// <token>" (the caller's request is not modified). When the API rejects the
// token, the Transport reports the rejection to tokenline synchronously,
// before the response goes back to the caller, with the fingerprint of the
// token it used, so that tokenline can refresh or close the connection.
// The connection's detection rules (domain.DetectionRules, see judge.go)
// decide what is reported:
//
//   - a dead token: a 401 whose WWW-Authenticate Bearer challenge has
//     error="invalid_token" or no error parameter at all (including a 401
//     without the header), any status with Bearer error="invalid_token",
//     and what the provider's rules add (a 403, or a 200 or 400 whose JSON
//     body matches);
//   - any answer whose Bearer challenge has error="insufficient_scope"
//     (reported, but never terminal: the token is valid, the grant is too
//     narrow).
//
// The response itself is returned to the caller unchanged in every case
// (a body a rule had to read is put back intact).
package roundtrip

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Reporter receives rejections of access tokens by a provider's API.
type Reporter interface {
	ReportRejection(ctx context.Context, connectionID string, status int, wwwAuthenticate string, accessTokenFP string) error
}

// TokenSource says whether a connection may be used and with which token.
// *lifecycle.Service satisfies it (the gate, and the vault for a token
// another instance refreshed); FromGate adapts a bare gate.
type TokenSource interface {
	// Check returns the access token to call the API with, or an error
	// wrapping domain.ErrUnauthenticated (a *domain.GateError) when the
	// connection may not be used now. ctx is the request's context.
	Check(ctx context.Context, connectionID string) (string, error)
}

// Awaiter is a TokenSource that can wait for a refresh due or in flight:
// Await is Check that waits while ctx lasts when the refusal is one time
// cures ((*domain.GateError).RetryLater). *lifecycle.Service implements
// it, and so does FromGate of a *projections.Gate.
type Awaiter interface {
	Await(ctx context.Context, connectionID string) (string, error)
}

// FromGate adapts a gate whose check needs no context (a
// *projections.Gate: in memory, no I/O) to a TokenSource.
func FromGate(g interface {
	Check(connectionID string) (string, error)
}) TokenSource {
	return gateSource{g}
}

type gateSource struct {
	g interface {
		Check(connectionID string) (string, error)
	}
}

func (s gateSource) Check(_ context.Context, id string) (string, error) { return s.g.Check(id) }

// Await waits with the gate's Await when it has one.
func (s gateSource) Await(ctx context.Context, id string) (string, error) {
	if a, ok := s.g.(Awaiter); ok {
		return a.Await(ctx, id)
	}
	return s.g.Check(id)
}

// DefaultWait is how long RoundTrip waits for a refresh that is due or in
// flight before it fails with ErrRetryLater.
const DefaultWait = 2 * time.Second

// The kinds of refusal a *RefusedError is (errors.Is).
var (
	// ErrRetryLater: a refresh is due or in flight and did not land within
	// the wait; nobody needs to act: retry shortly.
	ErrRetryLater = errors.New("roundtrip: a refresh of the access token is due or in flight; retry later")
	// ErrActionRequired: a person must act before the connection can be
	// used again (RefusedError.ActionBy says who).
	ErrActionRequired = errors.New("roundtrip: a person must act before the connection can be used")
)

// RefusedError is RoundTrip's error when the gate refuses the connection.
type RefusedError struct {
	ConnectionID string
	// RetryLater: waiting cures it (errors.Is(err, ErrRetryLater)).
	RetryLater bool
	// ActionBy is who must act when RetryLater is false: domain.ActorUser
	// (reconnect) or domain.ActorOperator (client secret or registration);
	// domain.ActorNone for a connection the gate does not know.
	ActionBy domain.Actor
	// Gate is the gate's refusal.
	Gate *domain.GateError
}

func (e *RefusedError) Error() string {
	switch {
	case e.RetryLater:
		return "roundtrip: refresh in progress, retry later: " + e.Gate.Error()
	case e.ActionBy == domain.ActorOperator:
		return "roundtrip: operator action required (client secret or registration): " + e.Gate.Error()
	case e.ActionBy == domain.ActorUser:
		return "roundtrip: reauthorisation required (the user must reconnect): " + e.Gate.Error()
	}
	return "roundtrip: " + e.Gate.Error()
}

// Unwrap gives the kind (ErrRetryLater or ErrActionRequired) and the gate's
// *domain.GateError.
func (e *RefusedError) Unwrap() []error {
	switch {
	case e.RetryLater:
		return []error{ErrRetryLater, e.Gate}
	case e.ActionBy != domain.ActorNone:
		return []error{ErrActionRequired, e.Gate}
	}
	return []error{e.Gate}
}

// refused types a gate refusal (other errors pass unchanged).
func refused(id string, err error) error {
	var ge *domain.GateError
	if !errors.As(err, &ge) {
		return err
	}
	return &RefusedError{ConnectionID: id, RetryLater: ge.RetryLater(), ActionBy: ge.ActionBy(), Gate: ge}
}

// ReportTimeout bounds a synchronous report. The report runs detached from
// the request's cancellation (a caller that gave up must not stop tokenline
// from learning that the token was rejected).
const ReportTimeout = 10 * time.Second

// Transport is an http.RoundTripper that authorises requests for one
// connection through the gate.
type Transport struct {
	// Base is the underlying transport (default http.DefaultTransport).
	Base http.RoundTripper
	// Gate decides and supplies the access token (required).
	Gate TokenSource
	// Reporter receives rejections; nil: rejections are not reported.
	Reporter Reporter
	// ConnectionID is the connection whose token authorises the requests.
	ConnectionID string
	// Logger receives report failures (default slog.Default()); no token is
	// ever logged.
	Logger *slog.Logger
	// Wait bounds how long a request waits for a refresh that is due or in
	// flight (with a TokenSource that is an Awaiter); 0: DefaultWait;
	// negative: do not wait. The request's context bounds it too.
	Wait time.Duration
	// Hosts are the hosts (host or host:port, as in URL.Host) that receive
	// the token. When empty, the host of the first request is pinned. A
	// request to any other host (a cross-host redirect, a presigned URL) is
	// sent without the token, and its 401s are not reported: the token is
	// never leaked, and a foreign host cannot condemn the connection.
	Hosts []string

	pinned atomic.Pointer[string]
}

// ourHost reports whether host may receive the token.
func (t *Transport) ourHost(host string) bool {
	if len(t.Hosts) > 0 {
		return slices.Contains(t.Hosts, host)
	}
	if p := t.pinned.Load(); p != nil {
		return *p == host
	}
	t.pinned.CompareAndSwap(nil, &host)
	return *t.pinned.Load() == host
}

var _ http.RoundTripper = (*Transport)(nil)

// ErrNoGate is returned when the Transport has no Gate.
var ErrNoGate = errors.New("roundtrip: transport has no gate")

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if t.Gate == nil {
		closeBody()
		return nil, ErrNoGate
	}
	if !t.ourHost(req.URL.Host) {
		r2 := req.Clone(req.Context())
		r2.Header.Del("Authorization")
		return t.base().RoundTrip(r2)
	}
	token, err := t.Gate.Check(req.Context(), t.ConnectionID)
	if err != nil {
		token, err = t.await(req.Context(), err)
	}
	if err != nil {
		closeBody() // a RoundTripper closes the body even when it fails
		return nil, refused(t.ConnectionID, err)
	}
	r2 := req.Clone(req.Context())
	r2.Header.Set("Authorization", "Bearer "+token)
	resp, err := t.base().RoundTrip(r2)
	if err != nil {
		return nil, err
	}
	t.judge(req, resp, token, strings.Join(resp.Header.Values("WWW-Authenticate"), ", ")) // judge.go: the connection's detection rules
	return resp, nil
}

// await waits, after Check refused with err, for a refresh due or in flight.
func (t *Transport) await(ctx context.Context, err error) (string, error) {
	var ge *domain.GateError
	a, ok := t.Gate.(Awaiter)
	if !ok || t.Wait < 0 || !errors.As(err, &ge) || !ge.RetryLater() {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(t.Wait, DefaultWait))
	defer cancel()
	return a.Await(ctx, t.ConnectionID)
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) logger() *slog.Logger {
	if t.Logger != nil {
		return t.Logger
	}
	return slog.Default()
}

// Client returns an *http.Client using the Transport.
func (t *Transport) Client() *http.Client { return &http.Client{Transport: t} }

// ForConnection returns a Transport for another connection (same base,
// gate, reporter, logger and hosts; a pinned host is not carried over).
func (t *Transport) ForConnection(connectionID string) *Transport {
	return &Transport{Base: t.Base, Gate: t.Gate, Reporter: t.Reporter, ConnectionID: connectionID, Logger: t.Logger, Hosts: t.Hosts, Wait: t.Wait}
}

// ShouldReport says whether a response with this status and these
// WWW-Authenticate values rejects the access token (see the package
// documentation). The header is parsed by domain.ParseChallenges.
func ShouldReport(status int, wwwAuthenticate []string) bool {
	// The default detection rules: a dead token, or insufficient_scope.
	v, _ := domain.DetectionRules{}.Judge(status, wwwAuthenticate, nil)
	return v != domain.VerdictNone
}
