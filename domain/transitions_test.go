package domain_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

func TestTransitionNamesAreTheDocumentedOnes(t *testing.T) {
	var want []string
	for name := range documented {
		want = append(want, name)
	}
	slices.Sort(want)
	if got := domain.TransitionNames(); !slices.Equal(got, want) {
		t.Fatalf("TransitionNames() = %v\nwant               %v", got, want)
	}
}

func TestScenariosReachTheirState(t *testing.T) {
	seen := map[domain.State]bool{}
	for _, sc := range scenarios {
		h := sc.build(t)
		if h.c.State != sc.state {
			t.Errorf("%s: state %q, want %q", sc.name, h.c.State, sc.state)
		}
		seen[h.c.State] = true
	}
	for _, st := range domain.States {
		if !seen[st] {
			t.Errorf("no scenario reaches %q", st)
		}
	}
}

// TestEveryStateTransitionPair applies an event of every transition to a
// connection in every state (reached by several realistic histories).
func TestEveryStateTransitionPair(t *testing.T) {
	for _, sc := range scenarios {
		for _, trans := range domain.TransitionNames() {
			t.Run(string(sc.state)+"/"+sc.name+"/"+trans, func(t *testing.T) {
				h := sc.build(t)
				before := h.c.Clone()
				p := h.payloadFor(trans)
				if got := domain.TransitionName(p); got != trans {
					t.Fatalf("TransitionName(%T) = %q, want %q", p, got, trans)
				}
				e := h.event(p)
				err := h.c.Apply(e)

				want, allowed := documented[trans][sc.state]
				next, nextErr := domain.Next(sc.state, trans)
				if allowed != (nextErr == nil) || (allowed && next != want) {
					t.Errorf("Next(%s, %s) = %s, %v; documented: allowed %v to %s", sc.state, trans, next, nextErr, allowed, want)
				}

				if !allowed {
					if !errors.Is(err, domain.ErrInvalidTransition) {
						t.Fatalf("Apply: err = %v, want ErrInvalidTransition", err)
					}
					var te *domain.TransitionError
					if !errors.As(err, &te) || te.From != sc.state || te.Event != trans {
						t.Fatalf("Apply: err = %#v, want *TransitionError{From: %s, Event: %s}", err, sc.state, trans)
					}
					if !reflect.DeepEqual(h.c, before) {
						t.Fatalf("refused event changed the aggregate:\nbefore %+v\nafter  %+v", before, h.c)
					}
					return
				}
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				if h.c.State != want {
					t.Fatalf("state %s, want %s", h.c.State, want)
				}
				if h.c.Version != e.Seq || h.c.Events != before.Events+1 {
					t.Errorf("Version %d Events %d, want %d and %d", h.c.Version, h.c.Events, e.Seq, before.Events+1)
				}
				wantSince := before.Since
				if want != sc.state {
					wantSince = e.Time
				}
				if !h.c.Since.Equal(wantSince) {
					t.Errorf("Since %v, want %v", h.c.Since, wantSince)
				}
				switch {
				case trans == domain.TransConnectionDeleted:
					if !h.c.Deleted || h.c.Reason != domain.ReasonConnectionDeleted || !h.c.LeaseUntil.IsZero() || h.c.AttemptID != "" {
						t.Errorf("after delete: %+v", h.c)
					}
				case want == U:
					if !h.c.Reason.Valid() {
						t.Errorf("unauthenticated with reason %q", h.c.Reason)
					}
				case want == A || want == F:
					if h.c.Reason != domain.ReasonNone {
						t.Errorf("%s with reason %q", want, h.c.Reason)
					}
				}
				if (h.c.State == F) != !h.c.LeaseUntil.IsZero() {
					t.Errorf("state %s with lease %v", h.c.State, h.c.LeaseUntil)
				}
				// Replaying the history gives the same aggregate.
				r, err := domain.Replay(append(h.events, e))
				if err != nil || !reflect.DeepEqual(r, h.c) {
					t.Errorf("Replay = %+v, %v\nlive     %+v", r, err, h.c)
				}
			})
		}
	}
}

func TestCreatedOnExistingConnection(t *testing.T) {
	for _, sc := range scenarios {
		h := sc.build(t)
		before := h.c.Clone()
		if err := h.apply(created()); !errors.Is(err, domain.ErrExists) {
			t.Errorf("%s/%s: Apply(created) = %v, want ErrExists", sc.state, sc.name, err)
		}
		if !reflect.DeepEqual(h.c, before) {
			t.Errorf("%s/%s: refused created changed the aggregate", sc.state, sc.name)
		}
		if _, err := domain.Decide(&h.c, domain.Create{Provider: "pleo"}); !errors.Is(err, domain.ErrExists) {
			t.Errorf("%s/%s: Decide(Create) = %v, want ErrExists", sc.state, sc.name, err)
		}
	}
}

// An event stamped before it is stored (Seq 0) and without a time still
// brings the connection into existence.
func TestCreatedWithoutSeqOrTimeStillExists(t *testing.T) {
	var c domain.Connection
	if err := c.Apply(domain.Event{ConnectionID: connID, Payload: created()}); err != nil {
		t.Fatal(err)
	}
	if !c.Exists() {
		t.Fatal("connection does not exist after connection.created")
	}
	if err := c.Apply(domain.Event{ConnectionID: connID, Payload: created()}); !errors.Is(err, domain.ErrExists) {
		t.Fatalf("second connection.created: %v, want ErrExists", err)
	}
	if err := c.Apply(domain.Event{ConnectionID: connID, Payload: domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: t0}}); err != nil {
		t.Fatalf("authorisation.started after created: %v", err)
	}
}

func TestEventsBeforeCreated(t *testing.T) {
	h := newHist() // no event applied: the zero connection
	for _, trans := range domain.TransitionNames() {
		var c domain.Connection
		err := c.Apply(h.event(h.payloadFor(trans)))
		if !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("%s before created: %v, want ErrNotFound", trans, err)
		}
		if !reflect.DeepEqual(c, domain.Connection{}) {
			t.Errorf("%s before created changed the aggregate: %+v", trans, c)
		}
	}
	for _, cmd := range allCommands(t0) {
		var c domain.Connection
		if p, err := domain.Decide(&c, cmd); !errors.Is(err, domain.ErrNotFound) || p != nil {
			t.Errorf("Decide(%T) before created = %v, %v; want ErrNotFound", cmd, p, err)
		}
	}
	if _, err := domain.Replay([]domain.Event{h.event(domain.ConnectionDeleted{})}); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Replay without created: %v, want ErrNotFound", err)
	}
}

func TestEventsAfterDeleted(t *testing.T) {
	for _, sc := range scenarios {
		h := sc.build(t)
		h.must(t, domain.ConnectionDeleted{})
		deleted := h.c.Clone()
		for _, trans := range domain.TransitionNames() {
			if trans == domain.TransTokensInvalidated && deleted.TokensHeld {
				continue // the one event a deleted connection with tokens accepts: TestTokensInvalidatedAfterDelete
			}
			err := h.apply(h.payloadFor(trans))
			if !errors.Is(err, domain.ErrDeleted) {
				t.Errorf("%s/%s: %s after deleted: %v, want ErrDeleted", sc.state, sc.name, trans, err)
			}
			if !reflect.DeepEqual(h.c, deleted) {
				t.Fatalf("%s/%s: %s after deleted changed the aggregate", sc.state, sc.name, trans)
			}
		}
		// A deleted connection still exists: its id is not reusable.
		if err := h.apply(created()); !errors.Is(err, domain.ErrExists) {
			t.Errorf("%s/%s: created after deleted: %v, want ErrExists", sc.state, sc.name, err)
		}
		for _, cmd := range allCommands(h.now) {
			if _, inv := cmd.(domain.InvalidateTokens); inv && deleted.TokensHeld {
				continue
			}
			if p, err := domain.Decide(&h.c, cmd); !errors.Is(err, domain.ErrDeleted) || p != nil {
				t.Errorf("%s/%s: Decide(%T) after deleted = %v, %v; want ErrDeleted", sc.state, sc.name, cmd, p, err)
			}
		}
		if _, err := domain.Decide(&h.c, domain.Create{Provider: "pleo"}); !errors.Is(err, domain.ErrExists) {
			t.Errorf("%s/%s: Decide(Create) after deleted: %v, want ErrExists", sc.state, sc.name, err)
		}
		if !reflect.DeepEqual(h.c, deleted) {
			t.Fatalf("%s/%s: refused commands changed the aggregate", sc.state, sc.name)
		}
	}
}

// Decide refuses exactly the commands whose event the table refuses, with the
// same error.
func TestDecideRefusesWhatTheTableRefuses(t *testing.T) {
	for _, sc := range scenarios {
		for i := range allCommands(t0) {
			h := sc.build(t)
			cmd := allCommands(h.now)[i]
			if _, ok := cmd.(domain.CompleteAuthorisation); ok && h.c.AttemptID != "" {
				cmd = domain.CompleteAuthorisation{AttemptID: h.c.AttemptID, Tokens: tokenInfo(7, h.now)}
			}
			if _, ok := cmd.(domain.FailAuthorisation); ok && h.c.AttemptID != "" {
				cmd = domain.FailAuthorisation{AttemptID: h.c.AttemptID}
			}
			p, err := h.exec(t, cmd)
			if err == nil {
				trans := domain.TransitionName(p)
				if _, ok := documented[trans][sc.state]; !ok {
					t.Errorf("%s/%s: Decide(%T) produced %s, which the table forbids", sc.state, sc.name, cmd, trans)
				}
				continue
			}
			if errors.Is(err, domain.ErrInvalidTransition) {
				var te *domain.TransitionError
				if !errors.As(err, &te) || te.From != sc.state {
					t.Errorf("%s/%s: Decide(%T): %#v", sc.state, sc.name, cmd, err)
				} else if _, ok := documented[te.Event][sc.state]; ok {
					t.Errorf("%s/%s: Decide(%T) refused %s, which the table allows", sc.state, sc.name, cmd, te.Event)
				}
				continue
			}
			t.Errorf("%s/%s: Decide(%T) = %v, want success or ErrInvalidTransition", sc.state, sc.name, cmd, err)
		}
	}
}

// A payload the aggregate does not know (here a pointer to a known payload,
// which also satisfies Payload) is refused without touching the aggregate.
func TestApplyUnknownPayloadLeavesAggregateUnchanged(t *testing.T) {
	h := toActive(t)
	before := h.c.Clone()
	rs := h.startRefresh(domain.TriggerSchedule).(domain.RefreshStarted)
	for _, p := range []domain.Payload{&rs, &domain.ConnectionDeleted{}, &domain.ConnectionUpdated{Config: map[string]string{"a": "b"}}, nil} {
		if err := h.c.Apply(h.event(p)); err == nil {
			t.Errorf("Apply(%T) accepted", p)
		}
		if !reflect.DeepEqual(h.c, before) {
			t.Fatalf("Apply(%T) refused but changed the aggregate:\nbefore %+v\nafter  %+v", p, before, h.c)
		}
	}
}

// A connection deleted while it held tokens records their destruction once,
// and then accepts nothing more.
func TestTokensInvalidatedAfterDelete(t *testing.T) {
	for _, sc := range scenarios {
		h := sc.build(t)
		h.must(t, domain.ConnectionDeleted{})
		if !h.c.TokensHeld {
			continue
		}
		p, err := domain.Decide(&h.c, domain.InvalidateTokens{ProviderRevoked: true})
		if err != nil {
			t.Fatalf("%s/%s: Decide(InvalidateTokens) after delete: %v", sc.state, sc.name, err)
		}
		h.must(t, p)
		if h.c.TokensHeld || h.c.Tokens.AccessTokenFP != "" || h.c.State != domain.StateUnauthenticated || !h.c.Deleted {
			t.Fatalf("%s/%s: after invalidation: %+v", sc.state, sc.name, h.c)
		}
		if _, err := domain.Decide(&h.c, domain.InvalidateTokens{}); !errors.Is(err, domain.ErrDeleted) {
			t.Fatalf("%s/%s: second invalidation: %v, want ErrDeleted", sc.state, sc.name, err)
		}
	}
}
