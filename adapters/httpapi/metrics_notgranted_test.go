package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/domain"
)

// The end of a grant without a refresh token at its access token's expiry
// (refresh.failed, refresh_not_granted, as domain.Decide gives it) is not
// a refresh attempt: tokenline_refreshes_total counts it under outcome
// not_granted, not as a failed refresh.
func TestMetricsRefreshNotGranted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg, httpapi.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	id := "7d3f0c1e-2b4a-4f6e-9c8d-1a2b3c4d5e6f"
	t0 := time.Now().Add(-time.Hour)
	var c domain.Connection
	tok := domain.Tokens{AccessToken: "at", Expiry: t0.Add(time.Minute)} // no refresh token
	for i, cmd := range []domain.Command{
		domain.Create{Provider: "p"},
		domain.StartAuthorisation{AttemptID: "a", ExpiresAt: t0.Add(time.Hour)},
		domain.CompleteAuthorisation{AttemptID: "a", Tokens: tok.Info()},
		domain.ExpireWithoutRefresh{Now: t0.Add(2 * time.Minute)},
	} {
		p, err := domain.Decide(&c, cmd)
		if err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
		e := domain.Event{ID: "e", ConnectionID: id, Seq: uint64(i + 1), Time: t0.Add(time.Duration(i) * time.Second), Payload: p}
		if err := c.Apply(e); err != nil {
			t.Fatal(err)
		}
		m.ObserveEvent(e)
	}
	if c.Reason != domain.ReasonRefreshNotGranted {
		t.Fatalf("setup: %+v", c)
	}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
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
	want := map[string]float64{"class=terminal,outcome=not_granted": 1, "class=terminal,outcome=failure": 0,
		"class=transient,outcome=failure": 0, "class=none,outcome=success": 0}
	if len(counts) != len(want) {
		t.Errorf("series %v, want %v", counts, want)
	}
	for k, v := range want {
		if got, ok := counts[k]; !ok || got != v {
			t.Errorf("%s{%s} = %v (exported %v), want %v", httpapi.MetricRefreshes, k, got, ok, v)
		}
	}
}
