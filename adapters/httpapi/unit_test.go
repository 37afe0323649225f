package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

func TestStatusNeverHoldsTokens(t *testing.T) {
	secret := domain.Tokens{AccessToken: "at-secret-value", RefreshToken: "rt-secret-value", Expiry: time.Now().Add(time.Hour), Scopes: []string{"users:read"}}
	c := domain.Connection{ID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Provider: "sandbox", State: domain.StateActive,
		Tokens: secret.Info(), TokensHeld: true, Since: time.Now(), Created: time.Now()}
	b, _ := json.Marshal(apitypes.StatusOf(&c))
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
