package httpapi_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/domain"
)

// tokenline_refreshes_total{class} is the refresh.failed event's class: a
// transient failure that exhausted the retry bound (terminal, reason
// refresh_retries_exhausted, class transient) counts as transient, as the
// event says; a terminal failure as terminal.
func TestRefreshesTotalClassIsTheEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg, httpapi.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	id := "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d"
	t0 := time.Now()
	for i, p := range []domain.Payload{
		domain.RefreshFailed{Terminal: true, Class: "transient", ErrorCode: "server_error_status", Attempt: 5, Reason: domain.ReasonRefreshRetriesExhausted},
		domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", Reason: domain.ReasonInvalidGrant},
		domain.RefreshFailed{Terminal: true, Reason: domain.ReasonInvalidGrant}, // no class (older events): terminal
	} {
		m.ObserveEvent(domain.Event{ConnectionID: id, Seq: uint64(i + 1), Time: t0, Payload: p})
	}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range out {
		if mf.GetName() != httpapi.MetricRefreshes {
			continue
		}
		for _, metric := range mf.GetMetric() {
			class, outcome := "", ""
			for _, l := range metric.GetLabel() {
				switch l.GetName() {
				case "class":
					class = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if outcome != "not_granted" {
				got[class] = metric.GetCounter().GetValue()
			}
		}
	}
	if got["transient"] != 1 || got["terminal"] != 2 {
		t.Fatalf("%s by class %v, want transient 1 (retries exhausted), terminal 2", httpapi.MetricRefreshes, got)
	}
}
