package app

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/porttest"
)

// TestMetricsDocumented keeps the metric names of README.md,
// docs/operations.md and docs/openapi.yaml true to what serve registers:
// every tokenline_ metric the docs name is registered (a labelled one that
// has no series yet included), and every tokenline_ metric /metrics answers
// is named in docs/operations.md and docs/openapi.yaml.
func TestMetricsDocumented(t *testing.T) {
	docs := map[string]string{}
	for _, p := range []string{"../../../README.md", "../../../docs/operations.md", "../../../docs/openapi.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs[p] = string(b)
	}
	// tokenline_ names in the docs that are no metrics: buckets, the
	// session cookie.
	notMetrics := []string{"tokenline_tokens", "tokenline_attempts", "tokenline_positions", "tokenline_snapshots",
		"tokenline_webhook_secrets", "tokenline_session"}
	nameRe := regexp.MustCompile(`\btokenline_[a-z_]+\b`)
	named := map[string]bool{}
	for _, d := range docs {
		for _, n := range nameRe.FindAllString(d, -1) {
			if !slices.Contains(notMetrics, n) {
				named[n] = true
			}
		}
	}

	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.NATSListen, m.Config.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	m.Config.LogLevel = "error"
	m.LogOutput = &porttest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// A name is registered when a collector of that name with another help
	// text cannot be registered beside it.
	for n := range named {
		probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: "probe of TestMetricsDocumented"})
		err := m.registry.Register(probe)
		if err == nil {
			m.registry.Unregister(probe)
			t.Errorf("the docs name %s, which serve does not register", n)
		} else if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
			t.Errorf("%s: %v", n, err)
		}
	}
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		n := f.GetName()
		if !strings.HasPrefix(n, "tokenline_") {
			continue
		}
		for _, p := range []string{"../../../docs/operations.md", "../../../docs/openapi.yaml"} {
			if !strings.Contains(docs[p], "`"+n) {
				t.Errorf("/metrics answers %s, which %s does not name", n, p)
			}
		}
	}
}
