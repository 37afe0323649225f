package webhook

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the webhooks' Prometheus metrics. A nil *Metrics counts
// nothing.
type Metrics struct {
	deliveries *prometheus.CounterVec
	deadLetter *prometheus.CounterVec
	seconds    prometheus.Histogram
	logSkip    *prometheus.CounterVec
	lag        *lagCollector
}

// NewMetrics registers:
//
//   - tokenline_webhook_deliveries_total{webhook,outcome}: attempts by
//     outcome (delivered, failed, dead_letter, gone, filtered, replayed,
//     replay_failed);
//   - tokenline_webhook_dead_letters_total{webhook};
//   - tokenline_webhook_attempt_seconds: the time of one HTTP attempt;
//   - tokenline_webhook_log_skipped_total{reason}: attempts not written to
//     the delivery log: full (its queue was full), error (the publish of
//     their batch failed);
//   - tokenline_webhook_lag{webhook}: events of the connections' stream the
//     subscription has not yet acknowledged (read from its consumer at
//     scrape time), for active subscriptions.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenline_webhook_deliveries_total",
			Help: "Webhook delivery attempts by subscription and outcome."}, []string{"webhook", "outcome"}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenline_webhook_dead_letters_total",
			Help: "Events given up on after the bounded attempts, by subscription."}, []string{"webhook"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenline_webhook_attempt_seconds",
			Help: "Duration of one webhook HTTP attempt.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
		logSkip: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenline_webhook_log_skipped_total",
			Help: "Delivery attempts not written to the delivery log (a full queue, errors)."}, []string{"reason"}),
		lag: &lagCollector{desc: prometheus.NewDesc("tokenline_webhook_lag",
			"Events not yet acknowledged by the subscription's consumer (pending plus in flight).", []string{"webhook"}, nil)},
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.deadLetter, m.seconds, m.logSkip, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Watch makes the lag gauge read mgr's subscriptions.
func (m *Metrics) Watch(mgr *Manager) {
	if m != nil {
		m.lag.mgr.Store(mgr)
	}
}

func (m *Metrics) outcome(webhook, outcome string) {
	if m != nil {
		m.deliveries.WithLabelValues(webhook, outcome).Inc()
	}
}

// deliveredCounter is the counter of webhook's deliveries, looked up once
// per deliverer (nil: no metrics).
func (m *Metrics) deliveredCounter(webhook string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.deliveries.WithLabelValues(webhook, "delivered")
}

func (m *Metrics) dead(webhook string) {
	if m != nil {
		m.deadLetter.WithLabelValues(webhook).Inc()
	}
}

func (m *Metrics) logSkipped(reason string) { m.logSkippedN(reason, 1) }

func (m *Metrics) logSkippedN(reason string, n int) {
	if m != nil {
		m.logSkip.WithLabelValues(reason).Add(float64(n))
	}
}

func (m *Metrics) latency(d time.Duration) {
	if m != nil && d > 0 {
		m.seconds.Observe(d.Seconds())
	}
}

type lagCollector struct {
	desc *prometheus.Desc
	mgr  atomicManager
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	mgr := c.mgr.Load()
	if mgr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, w := range mgr.List() {
		if w.State != "active" {
			continue
		}
		if n, err := mgr.Lag(ctx, w.ID); err == nil {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), w.ID)
		}
	}
}

type atomicManager struct{ p atomic.Pointer[Manager] }

func (a *atomicManager) Load() *Manager   { return a.p.Load() }
func (a *atomicManager) Store(m *Manager) { a.p.Store(m) }
