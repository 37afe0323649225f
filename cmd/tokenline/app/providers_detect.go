package app

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// Detection rules and probes of the providers file:
//
//	providers:
//	  - name: acme
//	    ...
//	    detection:                 # answers that mean "this access token is dead"
//	      - status: 403            # besides 401 and Bearer error="invalid_token"
//	      - status: 200
//	        body: {ok: false, error: invalid_auth}
//	    probe:                     # proactive revocation detection
//	      introspection: true      # RFC 7662 of the refresh token; or
//	      # get: https://api.acme.example/userinfo
//	      every: 5m

// DetectionRuleSpec is one rule of a provider's detection: list.
type DetectionRuleSpec struct {
	Status int               `yaml:"status"`
	Body   map[string]string `yaml:"body"`
}

// ProbeSpec is a provider's probe: block.
type ProbeSpec struct {
	Introspection bool   `yaml:"introspection"`
	Get           string `yaml:"get"`
	Every         string `yaml:"every"`
}

// Probe interval bounds.
const (
	minProbeEvery = time.Second
	maxProbeEvery = 24 * time.Hour
)

// detectionRules converts and checks the spec's detection: list.
func (s ProviderSpec) detectionRules() (domain.DetectionRules, error) {
	var r domain.DetectionRules
	for _, d := range s.Detection {
		r.Rules = append(r.Rules, domain.DetectionRule{Status: d.Status, Body: d.Body})
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%s.detection: %w", s.where, err)
	}
	return r, nil
}

// probeConfig converts and checks the spec's probe: block (ok false when
// the provider is not probed). A get URL starting with "/" is on
// tokenline's own base URL (for the sandbox preset: /sandbox/api/me).
func (s ProviderSpec) probeConfig(baseURL string) (cfg provider.ProbeConfig, ok bool, err error) {
	if s.Probe == nil {
		return cfg, false, nil
	}
	w := s.where + ".probe"
	every, err := time.ParseDuration(s.Probe.Every)
	if err != nil || every < minProbeEvery || every > maxProbeEvery {
		return cfg, false, fmt.Errorf("%s.every %q: a duration from %s to %s (e.g. 5m)", w, s.Probe.Every, minProbeEvery, maxProbeEvery)
	}
	if s.Probe.Introspection == (s.Probe.Get != "") {
		return cfg, false, fmt.Errorf("%s: give introspection: true or get: URL, exactly one", w)
	}
	get := s.Probe.Get
	if strings.HasPrefix(get, "/") && !strings.HasPrefix(get, "//") {
		if s.Preset != "sandbox" {
			return cfg, false, fmt.Errorf("%s.get %q: a path is only for the sandbox preset; give an absolute http(s) URL", w, get)
		}
		get = baseURL + get
	} else if get != "" && !absoluteHTTPURL(get) {
		return cfg, false, fmt.Errorf("%s.get %q: not an absolute http(s) URL", w, get)
	}
	if s.Probe.Introspection && s.ClientAuth == provider.AuthNone {
		return cfg, false, fmt.Errorf("%s.introspection: a public client (client_auth none) cannot authenticate to the introspection endpoint; probe with get: URL", w)
	}
	return provider.ProbeConfig{Introspection: s.Probe.Introspection, GetURL: get, Every: every}, true, nil
}

// checkDetection validates the detection and probe fields (providers.go's
// check calls it).
func (s ProviderSpec) checkDetection() error {
	if _, err := s.detectionRules(); err != nil {
		return err
	}
	_, _, err := s.probeConfig("http://127.0.0.1")
	return err
}

// detectionConfig returns the lifecycle's detection rules and probers per
// provider, and registers tokenline_probes_total on reg.
func (m *Main) detectionConfig() (map[string]domain.DetectionRules, map[string]domain.Prober, error) {
	owner, err := probeOwner(m.Config.ProbeShard)
	if err != nil {
		return nil, nil, err
	}
	m.probeOwner = owner
	rules := map[string]domain.DetectionRules{}
	probers := map[string]domain.Prober{}
	for _, s := range m.providerSpecs {
		r, err := s.detectionRules()
		if err != nil {
			return nil, nil, err
		}
		rules[s.Name] = r
		pc, ok, err := s.probeConfig(m.BaseURL)
		if err != nil {
			return nil, nil, err
		}
		if !ok || m.Providers[s.Name] == nil {
			continue
		}
		pr, err := m.Providers[s.Name].Prober(pc)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.probe: %w", s.where, err)
		}
		probers[s.Name] = pr
	}
	return rules, probers, nil
}

// probeMetric is tokenline_probes_total{provider,outcome}.
var probeMetricOpts = prometheus.CounterOpts{
	Name: "tokenline_probes_total",
	Help: "Probes of connections (providers file, probe:) by outcome: alive, dead (reported as a rejection), error, skipped (no usable token), stale (the tokens changed while probing).",
}

// probeObserver returns the lifecycle's ObserveProbe, counting into a
// counter registered later by registerProbeMetric.
func (m *Main) probeObserver() func(provider, outcome string) {
	m.probeCounter = prometheus.NewCounterVec(probeMetricOpts, []string{"provider", "outcome"})
	c := m.probeCounter
	for _, s := range m.providerSpecs {
		if s.Probe != nil {
			for _, o := range []string{lifecycle.ProbeAlive, lifecycle.ProbeDead, lifecycle.ProbeError, lifecycle.ProbeSkipped, lifecycle.ProbeStale} {
				c.WithLabelValues(s.Name, o)
			}
		}
	}
	return func(provider, outcome string) { c.WithLabelValues(provider, outcome).Inc() }
}

// registerProbeMetric registers tokenline_probes_total.
func (m *Main) registerProbeMetric(reg prometheus.Registerer) error {
	if m.probeCounter == nil {
		return nil
	}
	return reg.Register(m.probeCounter)
}

// probeOwner parses --probe-shard: nil (every connection) when empty.
func probeOwner(shard string) (func(string) bool, error) {
	if shard == "" {
		return nil, nil
	}
	i, n, ok := strings.Cut(shard, "/")
	index, err1 := strconv.Atoi(i)
	count, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || count < 1 || count > 1000 || index < 0 || index >= count {
		return nil, fmt.Errorf("--probe-shard %q: want INDEX/COUNT with 0 <= INDEX < COUNT <= 1000, e.g. 0/3", shard)
	}
	return lifecycle.ShardOwner(index, count), nil
}
