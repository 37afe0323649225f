package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

func TestTransitionTo(t *testing.T) {
	cases := []struct {
		p    domain.Payload
		to   domain.State
		move bool
	}{
		{domain.ConnectionCreated{Provider: "x"}, domain.StateUnauthenticated, true},
		{domain.AuthorisationStarted{}, domain.StateReauthorising, true},
		{domain.AuthorisationCompleted{}, domain.StateActive, true},
		{domain.AuthorisationFailed{Reason: domain.ReasonAuthorisationDenied}, domain.StateUnauthenticated, true},
		{domain.RefreshStarted{}, domain.StateRefreshing, true},
		{domain.RefreshSucceeded{}, domain.StateActive, true},
		{domain.RefreshFailed{Terminal: false}, domain.StateActive, true},
		{domain.RefreshFailed{Terminal: true, Reason: domain.ReasonInvalidGrant}, domain.StateUnauthenticated, true},
		{domain.AccessRejected{Terminal: true, Reason: domain.ReasonAccessTokenRejected}, domain.StateUnauthenticated, true},
		{domain.AccessRejected{}, "", false},
		{domain.TokensInvalidated{}, "", false},
		{domain.ConnectionUpdated{}, "", false},
		{domain.ConnectionDeleted{}, domain.StateUnauthenticated, true},
	}
	seen := map[domain.EventType]bool{}
	for _, tc := range cases {
		to, move := httpapi.TransitionTo(domain.Event{Payload: tc.p})
		if to != tc.to || move != tc.move {
			t.Errorf("%T: (%q, %v), want (%q, %v)", tc.p, to, move, tc.to, tc.move)
		}
		seen[tc.p.EventType()] = true
	}
	for _, et := range domain.EventTypes {
		if !seen[et] {
			t.Errorf("event type %s not covered", et)
		}
	}
}

func TestStateAtPrefix(t *testing.T) {
	id := "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d"
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	hist := []domain.Event{
		{ID: "1", ConnectionID: id, Time: t0, Seq: 1, Payload: domain.ConnectionCreated{Provider: "sandbox"}},
		{ID: "2", ConnectionID: id, Time: t0.Add(time.Minute), Seq: 2, Payload: domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: t0.Add(11 * time.Minute)}},
		{ID: "3", ConnectionID: id, Time: t0.Add(2 * time.Minute), Seq: 3, Payload: domain.AuthorisationCompleted{AttemptID: "a", Tokens: domain.TokenInfo{AccessTokenFP: "sha256:1", AccessTokenExpiresAt: t0.Add(17 * time.Minute)}}},
	}
	for _, tc := range []struct {
		at    time.Time
		n     int
		state domain.State
	}{
		{t0.Add(-time.Second), 0, ""},
		{t0, 1, domain.StateUnauthenticated},
		{t0.Add(90 * time.Second), 2, domain.StateReauthorising},
		{t0.Add(time.Hour), 3, domain.StateActive},
	} {
		c, n, err := httpapi.StateAt(hist, tc.at)
		if err != nil || n != tc.n || c.State != tc.state {
			t.Errorf("at %s: n=%d state=%q err=%v, want n=%d state=%q", tc.at, n, c.State, err, tc.n, tc.state)
		}
	}
}

func TestStatusNeverHoldsTokens(t *testing.T) {
	secret := domain.Tokens{AccessToken: "at-secret-value", RefreshToken: "rt-secret-value", Expiry: time.Now().Add(time.Hour), Scopes: []string{"users:read"}}
	c := domain.Connection{ID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Provider: "sandbox", State: domain.StateActive,
		Tokens: secret.Info(), TokensHeld: true, Since: time.Now(), Created: time.Now()}
	b, _ := json.Marshal(projections.StatusOf(&c))
	for _, s := range []string{"at-secret-value", "rt-secret-value", "access_token\"", "refresh_token"} {
		if strings.Contains(string(b), s) {
			t.Errorf("status JSON contains %q: %s", s, b)
		}
	}
}

func TestMetricsObserveEvent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg, httpapi.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	id := "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d"
	t0 := time.Now()
	evs := []domain.Event{
		{ConnectionID: id, Seq: 5, Time: t0, Payload: domain.RefreshStarted{}},
		{ConnectionID: id, Seq: 6, Time: t0.Add(300 * time.Millisecond), Payload: domain.RefreshFailed{Terminal: false, Class: "transient"}},
		{ConnectionID: id, Seq: 7, Time: t0.Add(time.Second), Payload: domain.RefreshStarted{}},
		{ConnectionID: id, Seq: 8, Time: t0.Add(2 * time.Second), Payload: domain.RefreshFailed{Terminal: true, Reason: domain.ReasonInvalidGrant}},
	}
	for _, e := range evs {
		m.ObserveEvent(e)
		m.ObserveEvent(e) // a second hook delivering the same event counts once
	}
	m.ObserveGateDenial("unauthenticated")
	m.ObserveGateDenial(id) // never becomes a label
	counts := map[string]float64{}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range out {
		if mf.GetName() != httpapi.MetricRefreshes {
			continue
		}
		for _, metric := range mf.GetMetric() {
			var key []string
			for _, l := range metric.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			counts[strings.Join(key, ",")] = metric.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"class=none,outcome=success": 0, "class=transient,outcome=failure": 1, "class=terminal,outcome=failure": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s %s = %v, want %v", httpapi.MetricRefreshes, k, counts[k], v)
		}
	}
	for _, mf := range out {
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetValue() == id {
					t.Errorf("%s has a connection id label", mf.GetName())
				}
			}
			if mf.GetName() == httpapi.MetricRefreshDuration && metric.GetHistogram().GetSampleCount() != 2 {
				t.Errorf("refresh durations observed %d, want 2", metric.GetHistogram().GetSampleCount())
			}
			if mf.GetName() == httpapi.MetricGateDenials {
				for _, l := range metric.GetLabel() {
					if l.GetValue() == "other" && metric.GetCounter().GetValue() != 1 {
						t.Errorf("unknown detail not counted as other")
					}
				}
			}
		}
	}
}
