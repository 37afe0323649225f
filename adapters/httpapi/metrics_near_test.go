package httpapi_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// tokenline_tokens_near_expiry counts active tokens whose refresh is late
// for their lifetime, not every token with less than a fixed two minutes
// left: with 30 s tokens, healthy connections count 0.
func TestNearExpiryIsRelativeToLifetime(t *testing.T) {
	now := time.Now()
	st := projections.NewStatus()
	connect := func(issued time.Time, life time.Duration) {
		id := uuid.NewString()
		at := issued.Add(-2 * time.Second)
		for i, p := range []domain.Payload{
			domain.ConnectionCreated{Provider: "sandbox"},
			domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: at.Add(time.Hour)},
			domain.AuthorisationCompleted{AttemptID: "a", Tokens: domain.TokenInfo{AccessTokenFP: "fp", AccessTokenExpiresAt: issued.Add(life)}},
		} {
			if i == 2 {
				at = issued
			}
			if _, err := st.Apply(domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: at, Seq: uint64(i + 1), Payload: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Healthy: 30 s tokens at every age before their refresh (lead 6 s).
	for age := time.Duration(0); age < 24*time.Second; age += 3 * time.Second {
		connect(now.Add(-age), 30*time.Second)
	}
	connect(now.Add(-13*time.Minute), 15*time.Minute)  // 2 min left: its refresh starts at about 3 min
	connect(now.Add(-28*time.Second), 30*time.Second)  // late: 2 s left, 3.25 s needed
	connect(now.Add(-890*time.Second), 15*time.Minute) // late: 10 s left, 10.75 s needed
	connect(now.Add(-time.Hour), 15*time.Minute)       // expired
	reg := prometheus.NewRegistry()
	if _, err := httpapi.NewMetrics(reg, httpapi.MetricsConfig{Status: httpapi.StatusFromProjection{Status: st}, Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range out {
		if mf.GetName() == httpapi.MetricNearExpiry {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != 3 {
				t.Fatalf("%s = %v, want 3 (the two late refreshes and the expired token)", httpapi.MetricNearExpiry, got)
			}
			return
		}
	}
	t.Fatalf("no %s", httpapi.MetricNearExpiry)
}
