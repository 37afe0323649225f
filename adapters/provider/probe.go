package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// ProbeConfig configures a provider's probe (providers file, probe:).
type ProbeConfig struct {
	// Introspection probes by RFC 7662 introspection of the refresh token
	// (of the access token when the grant has no refresh token) at the
	// provider's introspection endpoint, authenticated as the client.
	Introspection bool
	// GetURL, instead, probes by a GET with the access token as Bearer
	// (a cheap authenticated call such as userinfo), judged by the
	// provider's detection rules.
	GetURL string
	// Every is the probe interval per connection.
	Every time.Duration
}

// ErrNoIntrospection: the provider has no introspection endpoint.
var ErrNoIntrospection = errors.New("provider: no introspection endpoint")

// Prober returns the provider's domain.Prober. Its errors and logs never
// contain a token.
func (p *Provider) Prober(cfg ProbeConfig) (domain.Prober, error) {
	switch {
	case cfg.Every <= 0:
		return nil, errors.New("provider: a probe needs a positive interval")
	case cfg.Introspection == (cfg.GetURL != ""):
		return nil, errors.New("provider: a probe is introspection or a GET URL, exactly one")
	case cfg.GetURL != "" && !absoluteHTTP(cfg.GetURL):
		return nil, fmt.Errorf("provider: probe URL %q is not an absolute http(s) URL", cfg.GetURL)
	case cfg.Introspection && p.method == AuthNone:
		return nil, errors.New("provider: introspection needs client credentials; a public client (client_auth none) probes with a GET URL")
	}
	return prober{p: p, cfg: cfg}, nil
}

type prober struct {
	p   *Provider
	cfg ProbeConfig
}

func (pr prober) Every() time.Duration { return pr.cfg.Every }

// Probe introspects or GETs. A network error, a 5xx or 429 of the
// introspection endpoint, or an answer that is not RFC 7662 JSON is an
// error; the GET's answer is returned for the rules to judge whatever its
// status.
func (pr prober) Probe(ctx context.Context, t domain.Tokens) (domain.ProbeAnswer, error) {
	if pr.cfg.Introspection {
		return pr.p.introspect(ctx, t)
	}
	return pr.p.probeGet(ctx, pr.cfg.GetURL, t.AccessToken)
}

// introspect asks the introspection endpoint whether the grant's refresh
// token (else its access token) is active.
func (p *Provider) introspect(ctx context.Context, t domain.Tokens) (domain.ProbeAnswer, error) {
	ep := p.ep.Load()
	if ep == nil {
		return domain.ProbeAnswer{}, fmt.Errorf("provider: introspect: %w", p.Ready())
	}
	if ep.IntrospectURL == "" {
		return domain.ProbeAnswer{}, ErrNoIntrospection
	}
	form := url.Values{"token": {t.RefreshToken}, "token_type_hint": {"refresh_token"}}
	if t.RefreshToken == "" {
		form = url.Values{"token": {t.AccessToken}, "token_type_hint": {"access_token"}}
	}
	secret := *p.secret.Load()
	if p.method == AuthPost {
		form.Set("client_id", p.cfg.ClientID)
		form.Set("client_secret", secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.IntrospectURL, strings.NewReader(form.Encode()))
	if err != nil {
		return domain.ProbeAnswer{}, errors.New("provider: introspect: bad request")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if p.method == AuthBasic {
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(secret))
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return domain.ProbeAnswer{}, fmt.Errorf("provider: introspect: %w", redactErr(err, "introspection endpoint"))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, domain.MaxRejectionBody))
	if resp.StatusCode != http.StatusOK {
		return domain.ProbeAnswer{}, fmt.Errorf("provider: introspect: status %d", resp.StatusCode)
	}
	var out struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Active == nil {
		return domain.ProbeAnswer{}, errors.New("provider: introspect: the answer is not RFC 7662 JSON with a boolean active member")
	}
	return domain.ProbeAnswer{Introspected: true, Active: *out.Active}, nil
}

// probeGet calls u with the access token and returns the answer.
func (p *Provider) probeGet(ctx context.Context, u, accessToken string) (domain.ProbeAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return domain.ProbeAnswer{}, errors.New("provider: probe: bad request")
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return domain.ProbeAnswer{}, fmt.Errorf("provider: probe: %w", redactErr(err, "probe URL"))
	}
	defer resp.Body.Close()
	ans := domain.ProbeAnswer{Status: resp.StatusCode, WWWAuthenticate: resp.Header.Values("WWW-Authenticate")}
	b, err := io.ReadAll(io.LimitReader(resp.Body, domain.MaxRejectionBody+1))
	if err == nil && len(b) <= domain.MaxRejectionBody && jsonish(resp.Header.Get("Content-Type")) {
		ans.Body = b
	}
	return ans, nil
}

// jsonish reports whether a content type may hold JSON (or is missing).
func jsonish(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json" || mt == "text/plain")
}

// redactErr names the endpoint instead of quoting its URL (which may carry
// query parameters) and never mentions the request's headers.
func redactErr(err error, what string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, what, ue.Err)
	}
	return err
}
