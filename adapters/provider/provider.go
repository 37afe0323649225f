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
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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

// Config configures one provider.
type Config struct {
	// Name is what connections refer to ("sandbox", "pleo", ...).
	Name      string
	Endpoints Endpoints
	ClientID  string
	// ClientSecret is never logged or returned in an error.
	ClientSecret string
	// RedirectURL is tokenline's callback (exact match at the provider).
	RedirectURL string
	// AuthStyle: "basic" (client_secret_basic, default) or "post".
	AuthStyle string
	// HTTPClient for token and revocation requests; default has a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock token expiries are computed on (expires_in is
	// relative to the response); default time.Now.
	Now func() time.Time
}

// Provider talks to one authorization server.
type Provider struct {
	cfg    Config
	oauth  oauth2.Config // ClientSecret is empty here; see secret
	secret atomic.Pointer[string]
	hc     *http.Client
}

// New checks cfg and returns a Provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Name == "" || cfg.ClientID == "" || cfg.Endpoints.AuthURL == "" || cfg.Endpoints.TokenURL == "" || cfg.RedirectURL == "" {
		return nil, errors.New("provider: name, client id, authorization and token endpoints and redirect URL are required")
	}
	if u, err := url.Parse(cfg.Endpoints.AuthURL); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, errors.New("provider: the authorization endpoint is not an absolute URL")
	}
	style := oauth2.AuthStyleInHeader
	switch cfg.AuthStyle {
	case "", "basic":
	case "post":
		style = oauth2.AuthStyleInParams
	default:
		return nil, fmt.Errorf("provider: auth style %q is not basic or post", cfg.AuthStyle)
	}
	hc := cmp.Or(cfg.HTTPClient, &http.Client{Timeout: 10 * time.Second})
	p := &Provider{cfg: cfg, hc: hc, oauth: oauth2.Config{
		ClientID:    cfg.ClientID,
		RedirectURL: cfg.RedirectURL,
		Endpoint:    oauth2.Endpoint{AuthURL: cfg.Endpoints.AuthURL, TokenURL: cfg.Endpoints.TokenURL, AuthStyle: style},
	}}
	p.SetClientSecret(cfg.ClientSecret)
	p.cfg.ClientSecret = ""
	return p, nil
}

// config returns the oauth2 configuration with the current client secret.
func (p *Provider) config() *oauth2.Config {
	c := p.oauth
	c.ClientSecret = *p.secret.Load()
	return &c
}

// Name returns the provider's name.
func (p *Provider) Name() string { return p.cfg.Name }

// Endpoints returns the provider's endpoints.
func (p *Provider) Endpoints() Endpoints { return p.cfg.Endpoints }

// SetClientSecret replaces the client secret (after a rotation). Safe to
// call while requests are in flight.
func (p *Provider) SetClientSecret(secret string) { p.secret.Store(&secret) }

func (p *Provider) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.hc)
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
func (p *Provider) AuthCodeURL(state, verifier string, scopes []string, extra map[string]string) string {
	c := p.config()
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
// has no expires_in (Pleo's tokens live about 15 minutes): without it the
// token would never be refreshed ahead of time, or be refreshed endlessly.
const AssumedLifetime = 15 * time.Minute

func (p *Provider) toTokens(t *oauth2.Token, scopes []string) domain.Tokens {
	now := time.Now
	if p.cfg.Now != nil {
		now = p.cfg.Now
	}
	expiry := now().Add(AssumedLifetime)
	if t.ExpiresIn > 0 {
		expiry = now().Add(time.Duration(t.ExpiresIn) * time.Second)
	} else if !t.Expiry.IsZero() {
		expiry = t.Expiry
	}
	out := domain.Tokens{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType, Expiry: expiry.UTC(), Scopes: scopes}
	if s, ok := t.Extra("scope").(string); ok && s != "" {
		out.Scopes = strings.Fields(s)
	}
	return out
}

// Exchange trades an authorisation code for tokens.
func (p *Provider) Exchange(ctx context.Context, code, verifier string, scopes []string) (domain.Tokens, error) {
	t, err := p.config().Exchange(p.ctx(ctx), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return domain.Tokens{}, Classify(err)
	}
	if t.RefreshToken == "" {
		return domain.Tokens{}, &domain.Failure{Terminal: true, Code: "no_refresh_token", Detail: "the provider issued no refresh token"}
	}
	return p.toTokens(t, scopes), nil
}

// Refresh uses refreshToken once. On success it returns the new token set;
// when the response has no refresh_token the old one is kept (RFC 6749 §6)
// and rotated is false. On failure the error is a *domain.Failure.
func (p *Provider) Refresh(ctx context.Context, refreshToken string, scopes []string) (t domain.Tokens, rotated bool, err error) {
	if refreshToken == "" {
		return domain.Tokens{}, false, &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"}
	}
	tok, err := p.config().TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return domain.Tokens{}, false, Classify(err)
	}
	out := p.toTokens(tok, scopes)
	out.RefreshToken = cmp.Or(out.RefreshToken, refreshToken)
	return out, out.RefreshToken != refreshToken, nil
}

// Revoke revokes token at the provider (RFC 7009). It returns
// domain.ErrNoRevocation when the provider has no revocation endpoint.
func (p *Provider) Revoke(ctx context.Context, token, hint string) error {
	if p.cfg.Endpoints.RevocationURL == "" {
		return domain.ErrNoRevocation
	}
	if token == "" {
		return nil
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	if p.oauth.Endpoint.AuthStyle == oauth2.AuthStyleInParams {
		form.Set("client_id", p.cfg.ClientID)
		form.Set("client_secret", *p.secret.Load())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.Endpoints.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("provider: revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p.oauth.Endpoint.AuthStyle != oauth2.AuthStyleInParams {
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(*p.secret.Load()))
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

// Discover reads RFC 8414 metadata from issuer's
// /.well-known/oauth-authorization-server (and, failing that, the OpenID
// configuration).
func Discover(ctx context.Context, hc *http.Client, issuer string) (Endpoints, error) {
	hc = cmp.Or(hc, &http.Client{Timeout: 10 * time.Second})
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return Endpoints{}, fmt.Errorf("provider: discovery: invalid issuer %q", issuer)
	}
	// RFC 8414 §3 inserts the well-known segment before the issuer's path;
	// many servers also answer with it appended, and OpenID providers at
	// /.well-known/openid-configuration.
	path := strings.TrimSuffix(u.Path, "/")
	var candidates []string
	for _, p := range []string{"/.well-known/oauth-authorization-server" + path, path + "/.well-known/oauth-authorization-server", path + "/.well-known/openid-configuration"} {
		mu := *u
		mu.Path = p
		if c := mu.String(); !slices.Contains(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	var firstErr error
	for _, c := range candidates {
		ep, err := fetchMetadata(ctx, hc, c)
		if err == nil {
			return ep, nil
		}
		firstErr = cmp.Or(firstErr, err)
	}
	return Endpoints{}, firstErr
}

func fetchMetadata(ctx context.Context, hc *http.Client, u string) (Endpoints, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Endpoints{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Endpoints{}, fmt.Errorf("provider: discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Endpoints{}, fmt.Errorf("provider: discovery %s: status %d", u, resp.StatusCode)
	}
	var ep Endpoints
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ep); err != nil {
		return Endpoints{}, fmt.Errorf("provider: discovery %s: %w", u, err)
	}
	if ep.AuthURL == "" || ep.TokenURL == "" {
		return Endpoints{}, fmt.Errorf("provider: discovery %s: metadata lacks endpoints", u)
	}
	return ep, nil
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
		return min(time.Duration(n)*time.Second, time.Hour)
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
