package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// Discovery at start-up and in the background.
const (
	// startupDiscovery bounds the first discovery round of all providers
	// together: a provider not discovered by then starts unavailable and
	// is retried in the background.
	startupDiscovery = 15 * time.Second
	// discoveryRetryMax caps the backoff between background attempts.
	discoveryRetryMax = time.Minute
)

// providerSpecByName returns the spec of a configured provider.
func (m *Main) providerSpecByName(name string) (ProviderSpec, bool) {
	for _, s := range m.providerSpecs {
		if s.Name == name {
			return s, true
		}
	}
	return ProviderSpec{}, false
}

// logProvider logs what a provider uses (never a secret).
func (m *Main) logProvider(p *provider.Provider, err error) {
	h := p.Health()
	attrs := []any{"provider", p.Name(), "status", h.Status, "client_auth", p.AuthMethod()}
	if s, ok := m.providerSpecByName(p.Name()); ok {
		attrs = append(attrs, "kind", s.Kind())
	}
	if iss := p.Issuer(); iss != "" {
		attrs = append(attrs, "issuer", iss)
	}
	if err != nil {
		m.Logger.Warn("provider unavailable: discovery failed; retrying in the background", append(attrs, "error", err.Error())...)
		return
	}
	ep := h.Endpoints
	attrs = append(attrs, "authorization_endpoint", ep.AuthURL, "token_endpoint", ep.TokenURL,
		"revocation_endpoint", ep.RevocationURL, "introspection_endpoint", ep.IntrospectURL)
	m.Logger.Info("provider ready", attrs...)
}

// keepDiscovering retries, in the background, the discovery of every
// provider that is not available yet, with exponential backoff and jitter
// (from Main.DiscoveryRetry, default 1 s, to a minute), until it succeeds
// or ctx ends.
func (m *Main) keepDiscovering(ctx context.Context) {
	base := m.DiscoveryRetry
	if base <= 0 {
		base = time.Second
	}
	for _, s := range m.providerSpecs {
		p := m.Providers[s.Name]
		if p == nil || p.Ready() == nil {
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			delay := base
			for attempt := 1; ; attempt++ {
				d := delay/2 + mrand.N(delay/2+1)
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				actx, cancel := context.WithTimeout(ctx, startupDiscovery)
				err := p.Discover(actx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					m.logProvider(p, nil)
					return
				}
				m.Logger.Log(ctx, levelFor(attempt), "provider still unavailable", "provider", p.Name(), "attempt", attempt, "error", err.Error())
				delay = min(delay*2, max(discoveryRetryMax, base))
			}
		}()
	}
}

// levelFor logs the first background attempts at warn, then every tenth.
func levelFor(attempt int) slog.Level {
	if attempt <= 3 || attempt%10 == 0 {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// providerChecks are the readiness checks of the providers: a provider
// whose discovery is pending is listed under "degraded" on /readyz and
// leaves the instance ready (the other providers, and the access tokens
// already held, still work).
func (m *Main) providerChecks() []httpapi.Check {
	var out []httpapi.Check
	for _, s := range m.providerSpecs {
		p := m.Providers[s.Name]
		out = append(out, httpapi.Check{Name: "provider " + s.Name, Degrades: true, Probe: httpapi.ReadinessFunc(func(context.Context) error {
			if p.Ready() == nil {
				return nil
			}
			return fmt.Errorf("unavailable (discovery retried in the background): %s", strings.TrimPrefix(p.Health().Error, "provider: "))
		})})
	}
	return out
}

// providerDirectory serves GET /v1/providers.
type providerDirectory struct{ m *Main }

// Providers lists the providers in configuration order, never a secret.
func (d providerDirectory) Providers(context.Context) []apitypes.Provider {
	out := make([]apitypes.Provider, 0, len(d.m.providerSpecs))
	for _, s := range d.m.providerSpecs {
		p := d.m.Providers[s.Name]
		if p == nil {
			continue
		}
		h := p.Health()
		scopes := p.Scopes()
		if scopes == nil {
			scopes = []string{}
		}
		params := p.AuthorizeParams()
		if params == nil {
			params = map[string]string{}
		}
		out = append(out, apitypes.Provider{
			Name: s.Name, Kind: s.Kind(), Status: h.Status, Issuer: p.Issuer(),
			Endpoints: apitypes.ProviderEndpoints{Authorization: h.Endpoints.AuthURL, Token: h.Endpoints.TokenURL,
				Revocation: h.Endpoints.RevocationURL, Introspection: h.Endpoints.IntrospectURL},
			ClientID: p.ClientID(), ClientAuth: p.AuthMethod(), DefaultScopes: scopes, AuthorizeParams: params,
			Error: h.Error, Tried: h.Tried, CheckedAt: h.CheckedAt,
		})
		if h.Status != provider.StatusUnavailable {
			out[len(out)-1].Error = ""
		}
	}
	return out
}

// providerGuard is the lifecycle as the HTTP API uses it, with the checks
// that need the providers' state: an authorisation with a provider whose
// discovery is pending is refused with 503 (its authorize URL is not
// known), and a public client has no client secret to replace.
type providerGuard struct {
	*lifecycle.Service
	m *Main
}

// StartAuthorisation refuses a connection whose provider is unavailable.
func (g providerGuard) StartAuthorisation(ctx context.Context, id string) (string, error) {
	if c, ok := g.m.Proj.Status.Connection(id); ok {
		if p := g.m.Providers[c.Provider]; p != nil && p.Ready() != nil {
			return "", fmt.Errorf("%w: provider %q is not discovered yet (%s); tokenline retries in the background, GET /v1/providers shows its state",
				httpapi.ErrProviderUnavailable, c.Provider, strings.TrimPrefix(p.Health().Error, "provider: "))
		}
	}
	return g.Service.StartAuthorisation(ctx, id)
}

// SetClientSecret refuses a public client's.
func (g providerGuard) SetClientSecret(name, secret string) error {
	if p := g.m.Providers[name]; p != nil && p.Public() {
		return fmt.Errorf("%w: provider %q is a public client (client_auth none): it has no client secret", domain.ErrInvalidCommand, name)
	}
	return g.Service.SetClientSecret(name, secret)
}

// printProviders prints, for `serve`, every provider and the endpoints it
// uses (no secret).
func printProviders(out io.Writer, m *Main) {
	for _, s := range m.providerSpecs {
		p := m.Providers[s.Name]
		if p == nil {
			continue
		}
		h := p.Health()
		fmt.Fprintf(out, "  Provider:   %s (%s, %s, %s)\n", s.Name, s.Kind(), p.AuthMethod(), h.Status)
		if h.Status == provider.StatusUnavailable {
			fmt.Fprintf(out, "              UNAVAILABLE, discovery retried in the background: %s\n", strings.TrimPrefix(h.Error, "provider: "))
			continue
		}
		for _, e := range []struct{ name, url, explicit string }{
			{"authorize", h.Endpoints.AuthURL, s.AuthorizationURL}, {"token", h.Endpoints.TokenURL, s.TokenURL},
			{"revocation", h.Endpoints.RevocationURL, s.RevocationURL}, {"introspection", h.Endpoints.IntrospectURL, s.IntrospectionURL},
		} {
			if e.url == "" {
				continue
			}
			note := ""
			if h.Status == provider.StatusDiscovered && e.explicit != "" {
				note = " (explicit, not discovered)"
			}
			fmt.Fprintf(out, "              %-13s %s%s\n", e.name, e.url, note)
		}
	}
}

// registerProviderMetrics exports tokenline_provider_up{provider}: 1 when the
// provider's endpoints are known, 0 while its discovery is pending (a
// provider down does not make /readyz fail, so alert on this).
func (m *Main) registerProviderMetrics(reg prometheus.Registerer) error {
	desc := prometheus.NewDesc("tokenline_provider_up", "1 when the provider's endpoints are known (configured or discovered), 0 while its discovery is pending.", []string{"provider"}, nil)
	return reg.Register(providerCollector{m: m, desc: desc})
}

type providerCollector struct {
	m    *Main
	desc *prometheus.Desc
}

func (c providerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c providerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.providerSpecs {
		up := 0.0
		if p := c.m.Providers[s.Name]; p != nil && p.Ready() == nil {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, up, s.Name)
	}
}
