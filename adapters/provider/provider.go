// Package provider is tokenline's OAuth 2.0 client side, on
// golang.org/x/oauth2: the authorisation code exchange with PKCE (S256), the
// refresh grant with failure classification, RFC 7009 revocation and RFC 8414
// discovery. It also carries the presets for known providers (Pleo
// production and staging).
//
// Failure classification follows Pleo's guide ("treat refresh token failures
// as terminal") and RFC 6749 §5.2: any error code from the token endpoint
// (invalid_grant, invalid_client, unauthorized_client, unsupported_grant_type,
// invalid_scope, or one we do not know), any 400/401/other 4xx, and error
// bodies served with 200 are terminal and never retried. Network errors,
// timeouts, 5xx and 429 are transient: the caller backs off (honouring
// Retry-After) for a bounded number of attempts.
package provider

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/domain"
)

// Endpoints of an authorization server.
type Endpoints struct {
	AuthURL       string `json:"authorization_endpoint"`
	TokenURL      string `json:"token_endpoint"`
	RevocationURL string `json:"revocation_endpoint,omitempty"`
	IntrospectURL string `json:"introspection_endpoint,omitempty"`
}

// Presets are the endpoints of known providers.
var Presets = map[string]Endpoints{
	"pleo": {
		AuthURL:       "https://auth.pleo.io/oauth/authorize",
		TokenURL:      "https://auth.pleo.io/oauth/token",
		IntrospectURL: "https://auth.pleo.io/oauth/token/introspect",
	},
	"pleo-staging": {
		AuthURL:       "https://auth.staging.pleo.io/oauth/authorize",
		TokenURL:      "https://auth.staging.pleo.io/oauth/token",
		IntrospectURL: "https://auth.staging.pleo.io/oauth/token/introspect",
	},
}

// Client authentication methods (RFC 7591 token_endpoint_auth_method names).
const (
	// AuthBasic sends client_id and client_secret in an HTTP Basic
	// Authorization header (the default).
	AuthBasic = "client_secret_basic"
	// AuthPost sends client_id and client_secret in the form body.
	AuthPost = "client_secret_post"
	// AuthNone is a public client (PKCE, no secret): client_id in the form
	// body, no Authorization header, no client_secret parameter.
	AuthNone = "none"
)

// ParseAuthMethod returns the canonical client authentication method of s:
// client_secret_basic ("basic", or empty), client_secret_post ("post") or
// none.
func ParseAuthMethod(s string) (string, error) {
	switch s {
	case "", "basic", AuthBasic:
		return AuthBasic, nil
	case "post", AuthPost:
		return AuthPost, nil
	case AuthNone:
		return AuthNone, nil
	}
	return "", fmt.Errorf("client authentication %q: want client_secret_basic, client_secret_post or none", s)
}

// Config configures one provider.
type Config struct {
	// Name is what connections refer to ("sandbox", "pleo", ...).
	Name string
	// Issuer, if set, is discovered (RFC 8414, then OpenID Connect
	// discovery): the metadata's issuer must be identical to it, and its
	// endpoints fill every Endpoints field left empty. An explicit endpoint
	// always wins over a discovered one. Until discovery succeeds (see
	// Discover) the provider is unavailable.
	Issuer string
	// Endpoints are the explicit endpoints. Without Issuer, AuthURL and
	// TokenURL are required.
	Endpoints Endpoints
	ClientID  string
	// ClientSecret is never logged or returned in an error. Empty for a
	// public client (AuthStyle none).
	ClientSecret string
	// RedirectURL is tokenline's callback (exact match at the provider).
	RedirectURL string
	// AuthStyle is the client authentication at the token and revocation
	// endpoints: client_secret_basic ("basic", the default),
	// client_secret_post ("post") or none (a public client).
	AuthStyle string
	// Scopes are requested when a connection names none.
	Scopes []string
	// AuthorizeParams are extra authorization request parameters; a
	// connection's own parameters of the same name win, and tokenline's own
	// parameters (reservedAuthParams) always win.
	AuthorizeParams map[string]string
	// HTTPClient for token, revocation and discovery requests; default has
	// a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock token expiries are computed on (expires_in is
	// relative to the response); default time.Now.
	Now func() time.Time
}

// Health states of a provider.
const (
	// StatusConfigured: explicit endpoints, no discovery.
	StatusConfigured = "configured"
	// StatusDiscovered: the issuer's metadata was read and checked.
	StatusDiscovered = "discovered"
	// StatusUnavailable: discovery has not succeeded yet (retried).
	StatusUnavailable = "unavailable"
)

// Health is what a provider knows of itself: never a secret.
type Health struct {
	// Status is StatusConfigured, StatusDiscovered or StatusUnavailable.
	Status string
	// Endpoints in use (zero while unavailable).
	Endpoints Endpoints
	// Error says why the provider is unavailable; Tried lists every
	// discovery URL of the last attempt.
	Error string
	Tried []string
	// CheckedAt is when discovery last ran (zero without discovery).
	CheckedAt time.Time
}

// ErrUnavailable is wrapped by the errors of a provider whose endpoints are
// not known yet (discovery has not succeeded).
var ErrUnavailable = errors.New("provider unavailable")

// Provider talks to one authorization server.
type Provider struct {
	cfg    Config
	method string
	ep     atomic.Pointer[Endpoints] // nil until discovered
	secret atomic.Pointer[string]
	hc     *http.Client

	mu     sync.Mutex
	health Health
}

// New checks cfg and returns a Provider. It makes no request: a provider
// with an Issuer is unavailable until Discover succeeds.
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("provider: name, client id and redirect URL are required")
	}
	if cfg.Issuer == "" && (cfg.Endpoints.AuthURL == "" || cfg.Endpoints.TokenURL == "") {
		return nil, errors.New("provider: an issuer (discovery) or the authorization and token endpoints are required")
	}
	if cfg.Issuer != "" {
		if err := CheckIssuer(cfg.Issuer); err != nil {
			return nil, err
		}
	}
	for _, e := range []struct{ name, u string }{
		{"authorization", cfg.Endpoints.AuthURL}, {"token", cfg.Endpoints.TokenURL},
		{"revocation", cfg.Endpoints.RevocationURL}, {"introspection", cfg.Endpoints.IntrospectURL},
	} {
		if e.u != "" && !absoluteHTTP(e.u) {
			return nil, fmt.Errorf("provider: the %s endpoint %q is not an absolute http(s) URL", e.name, e.u)
		}
	}
	method, err := ParseAuthMethod(cfg.AuthStyle)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	if method == AuthNone && cfg.ClientSecret != "" {
		return nil, errors.New("provider: a public client (client authentication none) has no client secret")
	}
	hc := cmp.Or(cfg.HTTPClient, &http.Client{Timeout: 10 * time.Second})
	p := &Provider{cfg: cfg, method: method, hc: hc}
	p.cfg.Scopes = slices.Clone(cfg.Scopes)
	p.cfg.AuthorizeParams = maps.Clone(cfg.AuthorizeParams)
	p.SetClientSecret(cfg.ClientSecret)
	p.cfg.ClientSecret = ""
	if cfg.Issuer == "" {
		ep := cfg.Endpoints
		p.ep.Store(&ep)
		p.health = Health{Status: StatusConfigured, Endpoints: ep}
	} else {
		p.health = Health{Status: StatusUnavailable, Error: "discovery has not run yet"}
	}
	return p, nil
}

// absoluteHTTP reports whether raw is an absolute http or https URL.
func absoluteHTTP(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// CheckIssuer checks an issuer identifier (RFC 8414 §2): an absolute http(s)
// URL without user information, query or fragment.
func CheckIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("provider: issuer %q is not an absolute http(s) URL", issuer)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(issuer, "#") {
		return fmt.Errorf("provider: issuer %q must not have user information, a query or a fragment (RFC 8414 §2)", issuer)
	}
	return nil
}

// config returns the oauth2 configuration with the current endpoints and
// client secret, or false while the endpoints are unknown.
func (p *Provider) config() (*oauth2.Config, bool) {
	ep := p.ep.Load()
	if ep == nil {
		return nil, false
	}
	style := oauth2.AuthStyleInHeader
	secret := *p.secret.Load()
	switch p.method {
	case AuthPost:
		style = oauth2.AuthStyleInParams
	case AuthNone:
		// client_id in the body; x/oauth2 sends no client_secret when it
		// is empty, and no Authorization header in this style.
		style, secret = oauth2.AuthStyleInParams, ""
	}
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: secret, RedirectURL: p.cfg.RedirectURL,
		Endpoint: oauth2.Endpoint{AuthURL: ep.AuthURL, TokenURL: ep.TokenURL, AuthStyle: style},
	}, true
}

// Name returns the provider's name.
func (p *Provider) Name() string { return p.cfg.Name }

// Issuer returns the configured issuer (empty without discovery).
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// ClientID returns the client id.
func (p *Provider) ClientID() string { return p.cfg.ClientID }

// AuthMethod returns the client authentication method.
func (p *Provider) AuthMethod() string { return p.method }

// Public reports whether the provider is a public client (no secret).
func (p *Provider) Public() bool { return p.method == AuthNone }

// Scopes returns the default scopes.
func (p *Provider) Scopes() []string { return slices.Clone(p.cfg.Scopes) }

// AuthorizeParams returns the extra authorization parameters.
func (p *Provider) AuthorizeParams() map[string]string { return maps.Clone(p.cfg.AuthorizeParams) }

// Endpoints returns the endpoints in use (zero while unavailable).
func (p *Provider) Endpoints() Endpoints {
	if ep := p.ep.Load(); ep != nil {
		return *ep
	}
	return Endpoints{}
}

// Health returns the provider's current health.
func (p *Provider) Health() Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.health
	h.Tried = slices.Clone(h.Tried)
	return h
}

// Ready returns nil when the endpoints are known, or an error wrapping
// ErrUnavailable that says why not.
func (p *Provider) Ready() error {
	if p.ep.Load() != nil {
		return nil
	}
	h := p.Health()
	return fmt.Errorf("%w: provider %q: %s", ErrUnavailable, p.cfg.Name, h.Error)
}

// Discover reads the issuer's metadata once (see the package function
// Discover) and, on success, makes the provider available with the
// discovered endpoints under the explicit ones. A provider without an
// issuer, or one already discovered, returns nil at once. A failure is
// recorded in Health and returned (a *DiscoveryError listing every URL
// tried).
func (p *Provider) Discover(ctx context.Context) error {
	if p.cfg.Issuer == "" || p.ep.Load() != nil {
		return nil
	}
	md, err := Discover(ctx, p.hc, p.cfg.Issuer)
	now := time.Now
	if p.cfg.Now != nil {
		now = p.cfg.Now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		h := Health{Status: StatusUnavailable, Error: err.Error(), CheckedAt: now().UTC()}
		var de *DiscoveryError
		if errors.As(err, &de) {
			for _, a := range de.Attempts {
				h.Tried = append(h.Tried, a.URL)
			}
		}
		p.health = h
		return err
	}
	// Explicit endpoints win over discovered ones, field by field.
	x := p.cfg.Endpoints
	ep := Endpoints{
		AuthURL:       cmp.Or(x.AuthURL, md.AuthURL),
		TokenURL:      cmp.Or(x.TokenURL, md.TokenURL),
		RevocationURL: cmp.Or(x.RevocationURL, md.RevocationURL),
		IntrospectURL: cmp.Or(x.IntrospectURL, md.IntrospectURL),
	}
	p.health = Health{Status: StatusDiscovered, Endpoints: ep, CheckedAt: now().UTC()}
	p.ep.Store(&ep)
	return nil
}

// SetClientSecret replaces the client secret (after a rotation). Safe to
// call while requests are in flight. A public client ignores it (the
// caller should refuse it first: see Public).
func (p *Provider) SetClientSecret(secret string) { p.secret.Store(&secret) }

func (p *Provider) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.hc)
}

// unavailable is the transient failure of a token request while the
// provider's endpoints are unknown.
func (p *Provider) unavailable() *domain.Failure {
	return &domain.Failure{Code: "provider_unavailable", Detail: "the provider's endpoints are not discovered yet"}
}

// AuthCodeURL returns the authorize URL for state with the PKCE S256
// challenge of verifier, the given scopes and any extra parameters (e.g.
// Pleo's urn_pleo_params_oauth_subject).
//
// The parameters tokenline sets itself (reservedAuthParams: response_type,
// client_id, redirect_uri, scope, state, code_challenge,
// code_challenge_method) always carry tokenline's values, whatever a
// connection's configuration says: configuration is validated when it is
// written (domain.ValidateConfig), but an event on the stream may have been
// written by something else, so this is the last line. An extra parameter is
// dropped when its name matches a reserved one in any letter case (some
// servers read parameter names case-insensitively), when it could replace
// them wholesale (request, request_uri: a request object carries its own
// redirect_uri), or when its name is not a plain token (letters, digits,
// "._~:-"). The same names in the endpoint URL's own query are dropped too.
//
// A connection without scopes gets the provider's default scopes
// (Config.Scopes); the provider's extra parameters (Config.AuthorizeParams)
// are sent under the connection's own. While the provider is unavailable
// (discovery pending) it returns "": callers check Ready first.
func (p *Provider) AuthCodeURL(state, verifier string, scopes []string, extra map[string]string) string {
	c, ok := p.config()
	if !ok {
		return ""
	}
	if len(scopes) == 0 {
		scopes = p.cfg.Scopes
	}
	merged := maps.Clone(p.cfg.AuthorizeParams)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, extra)
	extra = merged
	own := url.Values{
		"response_type":         {"code"},
		"client_id":             {c.ClientID},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
	}
	if c.RedirectURL != "" {
		own.Set("redirect_uri", c.RedirectURL)
	}
	if len(scopes) > 0 {
		own.Set("scope", strings.Join(scopes, " "))
	}
	if state != "" {
		own.Set("state", state)
	}
	u, err := url.Parse(c.Endpoint.AuthURL)
	if err != nil { // New checked it; never happens
		c.Scopes = scopes
		return c.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
	}
	q := url.Values{}
	for k, v := range u.Query() {
		if !reservedAuthParam(k) {
			q[k] = v
		}
	}
	for k, v := range extra {
		if validExtraParam(k) && !reservedAuthParam(k) {
			q.Set(k, v)
		}
	}
	for k, v := range own {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// reservedAuthParams are the authorization request parameters tokenline
// sets itself, and those that would replace them (a JAR request object or
// its reference): AuthCodeURL never takes them from elsewhere.
var reservedAuthParams = []string{
	"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method",
	"request", "request_uri",
}

// reservedAuthParam reports whether name is reserved, in any letter case
// and with any surrounding space.
func reservedAuthParam(name string) bool {
	name = strings.TrimSpace(name)
	return slices.ContainsFunc(reservedAuthParams, func(r string) bool { return strings.EqualFold(r, name) })
}

// validExtraParam reports whether name may be sent as an extra parameter:
// 1 to 128 characters of letters, digits and "._~:-".
func validExtraParam(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._~:-", r):
		default:
			return false
		}
	}
	return true
}

// AssumedLifetime is the access-token lifetime assumed when a token response
// has no expires_in but a refresh token (Pleo's tokens live about 15
// minutes): without it the token would never be refreshed ahead of time, or
// be refreshed endlessly. A response with neither expires_in nor a refresh
// token describes an access token that does not expire (as many providers
// issue them): its Expiry stays zero, and nothing is refreshed.
const AssumedLifetime = 15 * time.Minute

// toTokens converts a token response. refreshToken is the refresh token the
// grant holds after it: the response's, or the one it kept (RFC 6749 §6).
func (p *Provider) toTokens(t *oauth2.Token, scopes []string, refreshToken string) domain.Tokens {
	now := time.Now
	if p.cfg.Now != nil {
		now = p.cfg.Now
	}
	// expires_in is a positive number of seconds (RFC 6749 §5.1). One of
	// zero or less (or a form-encoded one that overflowed) is garbage, and
	// is read as not given: a lifetime already over would have the token
	// refreshed at once, and again, as fast as the provider answers. The
	// answer's tokens are kept all the same (its refresh token may be a
	// rotated one, the only one the grant still accepts).
	var expiry time.Time
	switch {
	case t.ExpiresIn > 0:
		expiry = now().Add(time.Duration(t.ExpiresIn) * time.Second)
	case t.ExpiresIn == 0 && t.Expiry.After(time.Now()): // x/oauth2's clock
		expiry = t.Expiry
	case refreshToken != "":
		expiry = now().Add(AssumedLifetime)
	}
	out := domain.Tokens{AccessToken: t.AccessToken, RefreshToken: refreshToken, TokenType: t.TokenType, Expiry: expiry.UTC(), Scopes: scopes}
	if s, ok := t.Extra("scope").(string); ok && s != "" {
		out.Scopes = strings.Fields(s)
	}
	return out
}

// Exchange trades an authorisation code for tokens. A response without a
// refresh token is a grant all the same: providers issue one only for some
// scopes (OpenID Connect's offline_access) or never. Its access token is
// used until it expires (or, without expires_in, until the API rejects
// it); see domain.ReasonRefreshNotGranted.
func (p *Provider) Exchange(ctx context.Context, code, verifier string, scopes []string) (domain.Tokens, error) {
	c, ok := p.config()
	if !ok {
		return domain.Tokens{}, p.unavailable()
	}
	if len(scopes) == 0 {
		scopes = p.cfg.Scopes
	}
	t, err := c.Exchange(p.ctx(ctx), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return domain.Tokens{}, Classify(err)
	}
	return p.toTokens(t, scopes, t.RefreshToken), nil
}

// Refresh uses refreshToken once. On success it returns the new token set;
// when the response has no refresh_token the old one is kept (RFC 6749 §6)
// and rotated is false. On failure the error is a *domain.Failure.
func (p *Provider) Refresh(ctx context.Context, refreshToken string, scopes []string) (t domain.Tokens, rotated bool, err error) {
	if refreshToken == "" {
		return domain.Tokens{}, false, &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"}
	}
	c, ok := p.config()
	if !ok {
		return domain.Tokens{}, false, p.unavailable()
	}
	if len(scopes) == 0 {
		scopes = p.cfg.Scopes
	}
	tok, err := c.TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return domain.Tokens{}, false, Classify(err)
	}
	out := p.toTokens(tok, scopes, cmp.Or(tok.RefreshToken, refreshToken))
	return out, out.RefreshToken != refreshToken, nil
}

// Revoke revokes token at the provider (RFC 7009). It returns
// domain.ErrNoRevocation when the provider has no revocation endpoint, and
// an error wrapping ErrUnavailable while the endpoints are unknown. The
// client authenticates as at the token endpoint: Basic header, client_id
// and client_secret in the body (post), or client_id alone (none: no
// empty client_secret, no Authorization header).
func (p *Provider) Revoke(ctx context.Context, token, hint string) error {
	ep := p.ep.Load()
	if ep == nil {
		return fmt.Errorf("provider: revoke: %w", p.Ready())
	}
	if ep.RevocationURL == "" {
		return domain.ErrNoRevocation
	}
	if token == "" {
		return nil
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	secret := *p.secret.Load()
	switch p.method {
	case AuthPost:
		form.Set("client_id", p.cfg.ClientID)
		if secret != "" {
			form.Set("client_secret", secret)
		}
	case AuthNone:
		form.Set("client_id", p.cfg.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("provider: revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p.method == AuthBasic {
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(secret))
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return fmt.Errorf("provider: revoke: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("provider: revoke: status %d", resp.StatusCode)
	}
	return nil
}

// DiscoveryAttempt is one metadata URL tried and why it did not do.
type DiscoveryAttempt struct {
	URL string
	Err string
}

// DiscoveryError is a failed discovery: every URL tried, in order, with its
// failure.
type DiscoveryError struct {
	Issuer   string
	Attempts []DiscoveryAttempt
}

func (e *DiscoveryError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "provider: discovery for issuer %s failed; tried", e.Issuer)
	for i, a := range e.Attempts {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s: %s", a.URL, a.Err)
	}
	return b.String()
}

// IssuerMismatch reports whether any URL answered metadata for another
// issuer.
func (e *DiscoveryError) IssuerMismatch() bool {
	return slices.ContainsFunc(e.Attempts, func(a DiscoveryAttempt) bool { return strings.Contains(a.Err, "does not match") })
}

// metadata is the part of RFC 8414 / OpenID provider metadata tokenline
// reads.
type metadata struct {
	Issuer string `json:"issuer"`
	Endpoints
}

// DiscoveryURLs returns the metadata URLs tried for issuer, in order: RFC
// 8414 §3 inserts the well-known segment before the issuer's path; many
// servers also answer with it appended; OpenID providers answer at
// /.well-known/openid-configuration appended to the issuer.
func DiscoveryURLs(issuer string) ([]string, error) {
	if err := CheckIssuer(issuer); err != nil {
		return nil, err
	}
	u, _ := url.Parse(issuer)
	path := strings.TrimSuffix(u.Path, "/")
	var candidates []string
	for _, p := range []string{"/.well-known/oauth-authorization-server" + path, path + "/.well-known/oauth-authorization-server", path + "/.well-known/openid-configuration"} {
		mu := *u
		mu.Path, mu.RawPath = p, ""
		if c := mu.String(); !slices.Contains(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	return candidates, nil
}

// Discover reads RFC 8414 metadata for issuer (or, failing that, the
// OpenID configuration) and returns its endpoints. The metadata's issuer
// must be identical to issuer (RFC 8414 §3.3, OpenID Discovery §4.3): a
// document for another issuer is refused. On failure the error is a
// *DiscoveryError naming every URL tried and what each answered.
func Discover(ctx context.Context, hc *http.Client, issuer string) (Endpoints, error) {
	hc = cmp.Or(hc, &http.Client{Timeout: 10 * time.Second})
	candidates, err := DiscoveryURLs(issuer)
	if err != nil {
		return Endpoints{}, err
	}
	de := &DiscoveryError{Issuer: issuer}
	for _, c := range candidates {
		md, err := fetchMetadata(ctx, hc, c)
		if err == nil && md.Issuer != issuer {
			err = fmt.Errorf("metadata issuer %q does not match the configured issuer %q (RFC 8414 §3.3: they must be identical)", md.Issuer, issuer)
		}
		if err == nil {
			return md.Endpoints, nil
		}
		de.Attempts = append(de.Attempts, DiscoveryAttempt{URL: c, Err: err.Error()})
		if ctx.Err() != nil {
			break
		}
	}
	return Endpoints{}, de
}

func fetchMetadata(ctx context.Context, hc *http.Client, u string) (metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return metadata{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return metadata{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return metadata{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	var md metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&md); err != nil {
		return metadata{}, fmt.Errorf("not a JSON metadata document: %w", err)
	}
	if md.AuthURL == "" || md.TokenURL == "" {
		return metadata{}, errors.New("metadata lacks authorization_endpoint or token_endpoint")
	}
	for _, e := range []string{md.AuthURL, md.TokenURL, md.RevocationURL, md.IntrospectURL} {
		if e != "" && !absoluteHTTP(e) {
			return metadata{}, fmt.Errorf("metadata endpoint %q is not an absolute http(s) URL", e)
		}
	}
	return md, nil
}

// Classify maps an error from x/oauth2 or the transport to a *domain.Failure.
func Classify(err error) *domain.Failure {
	var f *domain.Failure
	if errors.As(err, &f) {
		return f
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		var retryAfter time.Duration
		if re.Response != nil {
			status = re.Response.StatusCode
			retryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"))
		}
		switch {
		case status == http.StatusTooManyRequests:
			return &domain.Failure{Code: "rate_limited", Status: status, RetryAfter: retryAfter}
		case status >= 500:
			return &domain.Failure{Code: "server_error_status", Status: status, RetryAfter: retryAfter}
		case re.ErrorCode != "":
			return &domain.Failure{Terminal: true, Code: domain.SafeErrorCode(re.ErrorCode), Status: status}
		default:
			return &domain.Failure{Terminal: true, Code: "http_" + strconv.Itoa(status), Status: status}
		}
	}
	var ue *url.Error
	isURL := errors.As(err, &ue)
	switch {
	case errors.Is(err, context.DeadlineExceeded), isURL && ue.Timeout():
		return &domain.Failure{Code: "timeout", Detail: "token request timed out"}
	case isURL:
		return &domain.Failure{Code: "network", Detail: "token endpoint unreachable"}
	}
	// x/oauth2 could not parse a 2xx body, or it lacked an access token:
	// a garbage response. Transient: a proxy page is not a verdict on the
	// grant, and the retry bound still applies.
	return &domain.Failure{Code: "malformed_response", Detail: "token endpoint returned an unusable response"}
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		// Capped before the multiplication: a huge delay-seconds would
		// overflow time.Duration into a negative wait.
		return time.Duration(min(n, int(time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), time.Hour)
	}
	return 0
}

func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, "revocation endpoint", ue.Err)
	}
	return err
}
