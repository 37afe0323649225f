package httpapi

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/domain"
)

// Metric names. Labels carry closed sets of words (event types, states,
// outcomes, gate details), never a connection id, token or error text.
const (
	MetricTransitions     = "tokenline_transitions_total"
	MetricRefreshes       = "tokenline_refreshes_total"
	MetricRefreshDuration = "tokenline_refresh_duration_seconds"
	MetricGateDenials     = "tokenline_gate_denials_total"
	MetricProjectionLag   = "tokenline_projection_lag"
	MetricNearExpiry      = "tokenline_tokens_near_expiry"
	MetricConnections     = "tokenline_connections"
	MetricLateness        = "tokenline_scheduler_lateness_seconds"
)

// schedulerJobs are the scheduler's job kinds (lifecycle.Config.ObserveLateness).
var schedulerJobs = []string{"refresh", "recover", "expire", "invalidate", "lapse"}

// DefaultNearExpiry is kept for callers that set MetricsConfig.NearExpiry
// to the old fixed window; the window is relative to each token's lifetime
// now (see MetricsConfig.Timing).
const DefaultNearExpiry = 2 * time.Minute

// gateDetails are the GateError.Detail words; anything else is "other".
var gateDetails = append(slices.Clone(domain.GateDetails), "other")

// MetricsConfig configures NewMetrics.
type MetricsConfig struct {
	// Status feeds tokenline_connections{state} and
	// tokenline_tokens_near_expiry at scrape time; nil: not exported.
	Status StatusReader
	// ProjectionLag returns how many stream messages the projections are
	// behind (projections.Runner.Lag); nil: tokenline_projection_lag is not
	// exported.
	ProjectionLag func(ctx context.Context) (uint64, error)
	// Timing is the token-timing rule the lifecycle and the gate follow
	// (domain.TokenTiming; the zero value is its defaults). An active
	// connection counts in tokenline_tokens_near_expiry when its access
	// token, of lifetime L (from when it was stored to its expiry), has less
	// than Timing.Need(L) left (gate margin + 1.5 × refresh latency: 2 s
	// for 5 s tokens, 3.25 s for 30 s, 10.75 s for 15 min and longer), or
	// has expired: every refresh is planned to start earlier than that, so
	// an active token inside the window is one whose refresh is late (not
	// started, or failed transiently), and the gate is about to refuse it.
	// A healthy connection is never counted, whatever its lifetime.
	Timing domain.TokenTiming
	// NearExpiry, if set, replaces that window with a fixed one.
	NearExpiry time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Metrics holds tokenline's Prometheus metrics. Counters are fed by
// ObserveEvent (call it once per stored event, e.g. from the projection
// runner's event hook or jsstore.Store.OnAppend) and ObserveGateDenial (the
// API calls it on every refused token request); gauges are read from the
// StatusReader at scrape time. All methods are safe for concurrent use.
type Metrics struct {
	transitions *prometheus.CounterVec
	refreshes   *prometheus.CounterVec
	duration    prometheus.Histogram
	denials     *prometheus.CounterVec
	lateness    *prometheus.HistogramVec

	mu sync.Mutex
	// lastSeq is the last sequence observed of each connection
	// (de-duplication), by the 64-bit hash of its id (seed): a map that
	// holds no id string, 16 bytes a connection (kept, as the status
	// projection keeps deleted connections, so that a copy of an event
	// fed again is never counted twice). Two ids with the same hash (odds
	// about 3 in 10^10 at 100,000 connections) would share an entry.
	lastSeq map[uint64]uint64
	seed    maphash.Seed
	started map[string]time.Time // connection -> time of its refresh.started
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer, cfg MetricsConfig) (*Metrics, error) {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricTransitions,
			Help: "Connection events observed, by event type (every event is a transition of the connection state machine, self-loops included).",
		}, []string{"type"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRefreshes,
			Help: "Refresh attempts that ended, by outcome (success, failure) and the refresh.failed event's class (none, transient, terminal; a transient failure that exhausted the retry bound is transient).",
		}, []string{"outcome", "class"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricRefreshDuration,
			Help:    "Time from refresh.started to refresh.succeeded or refresh.failed, in seconds (event times).",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricGateDenials,
			Help: "Token requests refused because the connection was not usable, by gate detail.",
		}, []string{"detail"}),
		lateness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricLateness,
			Help:    "How long after its planned time the scheduler started a job, in seconds, by job (refresh, recover, expire, invalidate).",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"job"}),
		lastSeq: map[uint64]uint64{},
		seed:    maphash.MakeSeed(),
		started: map[string]time.Time{},
	}
	// Pre-create every series so that they are exported from the start.
	for _, t := range domain.EventTypes {
		m.transitions.WithLabelValues(string(t))
	}
	m.refreshes.WithLabelValues("success", "none")
	m.refreshes.WithLabelValues("failure", "transient")
	m.refreshes.WithLabelValues("failure", "terminal")
	m.refreshes.WithLabelValues("not_granted", "terminal")
	for _, d := range gateDetails {
		m.denials.WithLabelValues(d)
	}
	for _, j := range schedulerJobs {
		m.lateness.WithLabelValues(j)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cs := []prometheus.Collector{m.transitions, m.refreshes, m.duration, m.denials, m.lateness}
	if cfg.Status != nil || cfg.ProjectionLag != nil {
		cs = append(cs, newGauges(cfg))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveEvent counts one stored event. Events of a connection with a
// sequence not above the last one observed are ignored, so feeding the same
// event from two hooks counts it once.
func (m *Metrics) ObserveEvent(e domain.Event) {
	if m == nil || e.Payload == nil {
		return
	}
	m.mu.Lock()
	if e.Seq > 0 {
		key := maphash.String(m.seed, e.ConnectionID)
		if e.Seq <= m.lastSeq[key] {
			m.mu.Unlock()
			return
		}
		m.lastSeq[key] = e.Seq
	}
	var took time.Duration
	var timed bool
	switch e.Payload.(type) {
	case domain.RefreshStarted:
		m.started[e.ConnectionID] = e.Time
	case domain.RefreshSucceeded, domain.RefreshFailed:
		if t0, ok := m.started[e.ConnectionID]; ok {
			took, timed = e.Time.Sub(t0), true
			delete(m.started, e.ConnectionID)
		}
	case domain.ConnectionDeleted:
		delete(m.started, e.ConnectionID)
	}
	m.mu.Unlock()

	m.transitions.WithLabelValues(string(e.Type())).Inc()
	if rf, ok := e.Payload.(domain.RefreshFailed); ok && rf.Reason == domain.ReasonRefreshNotGranted {
		// Not a refresh attempt: no token request was sent (the grant has
		// no refresh token; it ended at its access token's expiry).
		// Counted apart (outcome not_granted), so that refresh failure
		// rates do not count the planned end of such grants.
		m.refreshes.WithLabelValues("not_granted", "terminal").Inc()
		return
	}

	switch d := e.Payload.(type) {
	case domain.RefreshSucceeded:
		m.refreshes.WithLabelValues("success", "none").Inc()
	case domain.RefreshFailed:
		// The event's class: the failure's own, so a transient failure
		// that exhausted the retry bound (terminal true) counts as
		// transient, as the event says. Events without a class (older
		// ones) fall back to terminal.
		class := d.Class
		if class != "transient" && class != "terminal" {
			class = "transient"
			if d.Terminal {
				class = "terminal"
			}
		}
		m.refreshes.WithLabelValues("failure", class).Inc()
	}
	if timed && took >= 0 {
		m.duration.Observe(took.Seconds())
	}
}

// ObserveGateDenial counts a refused token request. detail is a
// domain.GateError Detail word; unknown words count as "other".
func (m *Metrics) ObserveGateDenial(detail string) {
	if m == nil {
		return
	}
	if !slices.Contains(gateDetails, detail) {
		detail = "other"
	}
	m.denials.WithLabelValues(detail).Inc()
}

// ObserveLateness records how late the scheduler started a job
// (lifecycle.Config.ObserveLateness); other job names are ignored.
func (m *Metrics) ObserveLateness(job string, late time.Duration) {
	if m == nil || !slices.Contains(schedulerJobs, job) {
		return
	}
	m.lateness.WithLabelValues(job).Observe(max(late, 0).Seconds())
}

// gauges reads the current state at scrape time.
type gauges struct {
	cfg                    MetricsConfig
	connections, near, lag *prometheus.Desc
}

func newGauges(cfg MetricsConfig) *gauges {
	return &gauges{
		cfg:         cfg,
		connections: prometheus.NewDesc(MetricConnections, "Connections that are not deleted, by state.", []string{"state"}, nil),
		near:        prometheus.NewDesc(MetricNearExpiry, "Active connections whose access token has less left than its refresh needs (gate margin + 1.5 x refresh latency for its lifetime), or has expired: refreshes that are late.", nil, nil),
		lag:         prometheus.NewDesc(MetricProjectionLag, "Stream messages the projections have not applied yet.", nil, nil),
	}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	if g.cfg.Status != nil {
		ch <- g.connections
		ch <- g.near
	}
	if g.cfg.ProjectionLag != nil {
		ch <- g.lag
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.cfg.ProjectionLag != nil {
		if lag, err := g.cfg.ProjectionLag(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(g.lag, err)
		} else {
			ch <- prometheus.MustNewConstMetric(g.lag, prometheus.GaugeValue, float64(lag))
		}
	}
	if g.cfg.Status == nil {
		return
	}
	cs, err := g.cfg.Status.Connections(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(g.connections, err)
		return
	}
	count := map[domain.State]int{}
	near := 0
	now := g.cfg.Now()
	for _, c := range cs {
		if c.Deleted {
			continue
		}
		count[c.State]++
		if c.State == domain.StateActive && c.TokensHeld && g.nearExpiry(&c, now) {
			near++
		}
	}
	for _, st := range domain.States {
		ch <- prometheus.MustNewConstMetric(g.connections, prometheus.GaugeValue, float64(count[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(g.near, prometheus.GaugeValue, float64(near))
}

// nearExpiry reports whether an active connection's access token is inside
// its near-expiry window at now (MetricsConfig.Timing).
func (g *gauges) nearExpiry(c *domain.Connection, now time.Time) bool {
	exp := c.Tokens.AccessTokenExpiresAt
	if exp.IsZero() {
		return false // no expiry: never near it
	}
	window := g.cfg.NearExpiry
	if window <= 0 {
		window = g.cfg.Timing.Need(exp.Sub(domain.TokensIssuedAt(c)))
	}
	return exp.Sub(now) < window
}
