package domain_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Short names for the four states.
const (
	A = domain.StateActive
	F = domain.StateRefreshing
	U = domain.StateUnauthenticated
	R = domain.StateReauthorising
)

// documented is the transition table as docs/transitions.md and the package
// documentation describe it, written out by hand so that a change to
// domain.Transitions that is not also made here fails the tests.
var documented = map[string]map[domain.State]domain.State{
	domain.TransAuthorisationStarted:   {U: R, R: R},
	domain.TransAuthorisationCompleted: {R: A},
	domain.TransAuthorisationFailed:    {R: U},
	domain.TransRefreshStarted:         {A: F},
	domain.TransRefreshSucceeded:       {F: A},
	domain.TransRefreshFailedTransient: {F: A},
	domain.TransRefreshFailedTerminal:  {F: U},
	domain.TransRefreshNotGranted:      {A: U},
	domain.TransRefreshLeaseExtended:   {F: F},
	domain.TransAccessRejected:         {A: A, F: F},
	domain.TransAccessRejectedTerminal: {A: U},
	domain.TransTokensInvalidated:      {A: U, F: U, U: U, R: R},
	domain.TransConnectionUpdated:      {A: A, F: F, U: U, R: R},
	domain.TransConnectionDeleted:      {A: U, F: U, U: U, R: U},
}

// t0 is the start of every test history: UTC, no monotonic reading, so that
// reflect.DeepEqual on aggregates is meaningful.
var t0 = time.Unix(1_750_000_000, 0).UTC()

const connID = "conn-1"

// tokenInfo returns distinct, realistic token descriptions for generation n.
func tokenInfo(n int, at time.Time) domain.TokenInfo {
	return domain.Tokens{
		AccessToken:  fmt.Sprintf("access-%d", n),
		RefreshToken: fmt.Sprintf("refresh-%d", n),
		Expiry:       at.Add(time.Hour),
		Scopes:       []string{"expenses:read", "users:read"},
	}.Info()
}

// hist is a connection together with the events that built it.
type hist struct {
	c      domain.Connection
	events []domain.Event
	now    time.Time
	gen    int // token generation
}

func newHist() *hist { return &hist{now: t0} }

// event wraps p as the next event of the stream, one second after the last.
func (h *hist) event(p domain.Payload) domain.Event {
	n := len(h.events) + 1
	return domain.Event{
		ID:           fmt.Sprintf("ev-%03d", n),
		ConnectionID: connID,
		Time:         h.now.Add(time.Second),
		Actor:        "test",
		Seq:          uint64(n) + 100, // stream sequences are shared with other connections
		Payload:      p,
	}
}

// apply appends p if the aggregate accepts it.
func (h *hist) apply(p domain.Payload) error {
	e := h.event(p)
	if err := h.c.Apply(e); err != nil {
		return err
	}
	h.events = append(h.events, e)
	h.now = e.Time
	return nil
}

func (h *hist) must(tb testing.TB, p domain.Payload) {
	tb.Helper()
	if err := h.apply(p); err != nil {
		tb.Fatalf("apply %T: %v", p, err)
	}
}

// exec decides cmd against the aggregate and applies the resulting event. It
// fails the test if Decide changes the aggregate, or if Apply refuses an
// event that Decide produced.
func (h *hist) exec(tb testing.TB, cmd domain.Command) (domain.Payload, error) {
	tb.Helper()
	before := h.c.Clone()
	p, err := domain.Decide(&h.c, cmd)
	if !reflect.DeepEqual(before, h.c) {
		tb.Fatalf("Decide(%T) changed the aggregate:\nbefore %+v\nafter  %+v", cmd, before, h.c)
	}
	if err != nil {
		if p != nil {
			tb.Fatalf("Decide(%T) returned payload %T with error %v", cmd, p, err)
		}
		return nil, err
	}
	if aerr := h.apply(p); aerr != nil {
		tb.Fatalf("Apply refused the event Decide produced for %T (%T): %v", cmd, p, aerr)
	}
	return p, nil
}

func (h *hist) mustExec(tb testing.TB, cmd domain.Command) domain.Payload {
	tb.Helper()
	p, err := h.exec(tb, cmd)
	if err != nil {
		tb.Fatalf("Decide(%#v): %v", cmd, err)
	}
	return p
}

// Building blocks of realistic histories, as payloads.

func created() domain.Payload {
	return domain.ConnectionCreated{
		Provider: "pleo",
		Scopes:   []string{"expenses:read", "users:read"},
		Config:   map[string]string{"company": "acme"},
	}
}

func (h *hist) startAuth(id string) domain.Payload {
	return domain.AuthorisationStarted{AttemptID: id, Scopes: h.c.Scopes, ExpiresAt: h.now.Add(10 * time.Minute)}
}

func (h *hist) completeAuth() domain.Payload {
	h.gen++
	return domain.AuthorisationCompleted{AttemptID: h.c.AttemptID, Tokens: tokenInfo(h.gen, h.now)}
}

func (h *hist) startRefresh(trigger string) domain.Payload {
	return domain.RefreshStarted{Attempt: h.c.TransientFailures + 1, LeaseUntil: h.now.Add(30 * time.Second), Trigger: trigger, RefreshTokenFP: h.c.Tokens.RefreshTokenFP}
}

func (h *hist) refreshOK() domain.Payload {
	h.gen++
	return domain.RefreshSucceeded{Attempt: h.c.TransientFailures + 1, Tokens: tokenInfo(h.gen, h.now), Rotated: true}
}

func (h *hist) refreshTransient() domain.Payload {
	return domain.RefreshFailed{Class: "transient", ErrorCode: "server_error", HTTPStatus: 503, Attempt: h.c.TransientFailures + 1, RetryAt: h.now.Add(time.Minute)}
}

func (h *hist) refreshTerminal() domain.Payload {
	return domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", HTTPStatus: 400, Attempt: h.c.TransientFailures + 1, Reason: domain.ReasonInvalidGrant}
}

func (h *hist) rejected() domain.Payload {
	return domain.AccessRejected{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP}
}

func (h *hist) rejectedTerminal() domain.Payload {
	return domain.AccessRejected{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP, Terminal: true, Reason: domain.ReasonAccessTokenRejected}
}

func (h *hist) invalidated() domain.Payload {
	return domain.TokensInvalidated{Reason: h.c.Reason, AccessTokenFP: h.c.Tokens.AccessTokenFP, RefreshTokenFP: h.c.Tokens.RefreshTokenFP}
}

func updated() domain.Payload {
	return domain.ConnectionUpdated{Config: map[string]string{"company": "acme", "region": "eu"}}
}

// payloadFor returns a realistic event payload of transition trans for the
// aggregate as it is now.
func (h *hist) payloadFor(trans string) domain.Payload {
	switch trans {
	case domain.TransAuthorisationStarted:
		return h.startAuth("att-next")
	case domain.TransAuthorisationCompleted:
		return h.completeAuth()
	case domain.TransAuthorisationFailed:
		return domain.AuthorisationFailed{AttemptID: h.c.AttemptID, Reason: domain.ReasonAuthorisationDenied, ErrorCode: "access_denied"}
	case domain.TransRefreshStarted:
		return h.startRefresh(domain.TriggerSchedule)
	case domain.TransRefreshSucceeded:
		return h.refreshOK()
	case domain.TransRefreshFailedTransient:
		return h.refreshTransient()
	case domain.TransRefreshFailedTerminal:
		return h.refreshTerminal()
	case domain.TransRefreshNotGranted:
		return domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: domain.ErrorCodeNoRefreshToken, Attempt: 1, Reason: domain.ReasonRefreshNotGranted}
	case domain.TransRefreshLeaseExtended:
		return domain.RefreshLeaseExtended{LeaseUntil: h.now.Add(45 * time.Second)}
	case domain.TransAccessRejected:
		return h.rejected()
	case domain.TransAccessRejectedTerminal:
		return h.rejectedTerminal()
	case domain.TransTokensInvalidated:
		return h.invalidated()
	case domain.TransConnectionUpdated:
		return updated()
	case domain.TransConnectionDeleted:
		return domain.ConnectionDeleted{}
	}
	panic("no payload for transition " + trans)
}

// scenario is a named way of reaching a state through legal events.
type scenario struct {
	name  string
	state domain.State
	build func(tb testing.TB) *hist
}

// scenarios drive a connection to each of the four states, by more than one
// path where the paths leave different bookkeeping behind.
var scenarios = []scenario{
	{"new", U, func(tb testing.TB) *hist {
		h := newHist()
		h.must(tb, created())
		return h
	}},
	{"refresh-token-revoked", U, func(tb testing.TB) *hist {
		h := toActive(tb)
		h.must(tb, h.startRefresh(domain.TriggerSchedule))
		h.must(tb, h.refreshTerminal())
		h.must(tb, h.invalidated())
		return h
	}},
	{"authorisation-denied", U, func(tb testing.TB) *hist {
		h := newHist()
		h.must(tb, created())
		h.must(tb, h.startAuth("att-1"))
		h.must(tb, domain.AuthorisationFailed{AttemptID: "att-1", Reason: domain.ReasonAuthorisationDenied, ErrorCode: "access_denied"})
		return h
	}},
	{"first-authorisation", R, func(tb testing.TB) *hist {
		h := newHist()
		h.must(tb, created())
		h.must(tb, h.startAuth("att-1"))
		return h
	}},
	{"reauthorisation", R, func(tb testing.TB) *hist {
		h := toActive(tb)
		h.must(tb, h.rejected())
		h.must(tb, h.startRefresh(domain.TriggerAccessRejected))
		h.must(tb, h.refreshOK())
		h.must(tb, h.rejectedTerminal())
		h.must(tb, h.invalidated())
		h.must(tb, h.startAuth("att-2"))
		return h
	}},
	{"authorised", A, toActive},
	{"authorised-without-refresh-token", A, func(tb testing.TB) *hist {
		h := newHist()
		h.must(tb, created())
		h.must(tb, h.startAuth("att-1"))
		h.must(tb, domain.AuthorisationCompleted{AttemptID: "att-1", Tokens: domain.Tokens{AccessToken: "at-0", Expiry: h.now.Add(time.Hour)}.Info()})
		return h
	}},
	{"after-refreshes", A, func(tb testing.TB) *hist {
		h := toActive(tb)
		h.must(tb, h.startRefresh(domain.TriggerSchedule))
		h.must(tb, h.refreshOK())
		h.must(tb, updated())
		h.must(tb, h.startRefresh(domain.TriggerManual))
		h.must(tb, h.refreshTransient())
		return h
	}},
	{"scheduled", F, func(tb testing.TB) *hist {
		h := toActive(tb)
		h.must(tb, h.startRefresh(domain.TriggerSchedule))
		return h
	}},
	{"after-rejection", F, func(tb testing.TB) *hist {
		h := toActive(tb)
		h.must(tb, h.rejected())
		h.must(tb, h.startRefresh(domain.TriggerAccessRejected))
		h.must(tb, h.rejected())
		return h
	}},
}

func toActive(tb testing.TB) *hist {
	h := newHist()
	h.must(tb, created())
	h.must(tb, h.startAuth("att-1"))
	h.must(tb, h.completeAuth())
	return h
}

// allCommands returns one well-formed command of every kind except Create
// (FailRefresh twice: transient and terminal).
func allCommands(now time.Time) []domain.Command {
	return []domain.Command{
		domain.StartAuthorisation{AttemptID: "att-x", ExpiresAt: now.Add(time.Minute)},
		domain.CompleteAuthorisation{AttemptID: "att-x", Tokens: tokenInfo(99, now)},
		domain.FailAuthorisation{AttemptID: "att-x"},
		domain.StartRefresh{LeaseUntil: now.Add(time.Minute)},
		domain.SucceedRefresh{Tokens: tokenInfo(99, now)},
		domain.FailRefresh{ErrorCode: "server_error", HTTPStatus: 503, RetryAt: now.Add(time.Minute)},
		domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant", HTTPStatus: 400},
		domain.RecoverLease{Now: now.Add(time.Hour)},
		domain.ExtendLease{LeaseUntil: now.Add(time.Hour)},
		domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token"},
		domain.InvalidateTokens{},
		domain.Update{Config: map[string]string{"k": "v"}},
		domain.Delete{},
	}
}
