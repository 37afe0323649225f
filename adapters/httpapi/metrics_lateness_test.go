package httpapi_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
)

// The scheduler's lateness is a histogram per job kind; unknown job names
// never become labels.
func TestSchedulerLatenessHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg, httpapi.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveLateness("refresh", 30*time.Millisecond)
	m.ObserveLateness("refresh", 3*time.Second)
	m.ObserveLateness("expire", 0)
	m.ObserveLateness("conn-1234", time.Second)
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range out {
		if mf.GetName() != httpapi.MetricLateness {
			continue
		}
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				got[l.GetValue()] = metric.GetHistogram().GetSampleCount()
			}
		}
	}
	want := map[string]uint64{"refresh": 2, "recover": 0, "expire": 1, "invalidate": 0, "lapse": 0}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s{job=%q} count %d, want %d", httpapi.MetricLateness, k, got[k], v)
		}
	}
}
