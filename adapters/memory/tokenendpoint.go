package memory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Request is a kind of request a TokenEndpoint serves.
type Request int

// The request kinds, for Requests, FailNext and Hold.
const (
	// RequestAuthorize is a consent given with Approve.
	RequestAuthorize Request = iota + 1
	// RequestExchange is a code exchange (Exchange).
	RequestExchange
	// RequestRefresh is a refresh grant (Refresh with a non-empty token).
	RequestRefresh
	// RequestRevoke is an RFC 7009 revocation (Revoke with a non-empty token).
	RequestRevoke
)

// String names the request kind ("exchange", "refresh", ...).
func (r Request) String() string {
	switch r {
	case RequestAuthorize:
		return "authorize"
	case RequestExchange:
		return "exchange"
	case RequestRefresh:
		return "refresh"
	case RequestRevoke:
		return "revoke"
	}
	return fmt.Sprintf("Request(%d)", int(r))
}

// Defaults of TokenEndpointConfig.
const (
	// DefaultClientID is the registered client's id.
	DefaultClientID = "memory-client"
	// DefaultClientSecret is the client's initial secret.
	DefaultClientSecret = "memory-client-secret"
	// DefaultRedirectURL is the registered redirect URL.
	DefaultRedirectURL = "http://127.0.0.1/callback"
	// DefaultAuthURL is the authorization endpoint (never contacted).
	DefaultAuthURL = "https://auth.memory.invalid/oauth/authorize"
	// DefaultAccessTokenLifetime is the sandbox's (and Pleo's) 15 minutes.
	DefaultAccessTokenLifetime = 15 * time.Minute
	// CodeLifetime is how long an unexchanged authorization code lives.
	CodeLifetime = 10 * time.Minute
)

// TokenEndpointConfig configures a TokenEndpoint. Zero fields take the
// defaults above.
type TokenEndpointConfig struct {
	// ClientID is the one registered client.
	ClientID string
	// ClientSecret is the secret the server expects and the one the client
	// side presents until SetClientSecret.
	ClientSecret string
	// RedirectURL must appear, exactly, in authorization requests.
	RedirectURL string
	// AuthURL is the authorization endpoint AuthCodeURL builds on.
	AuthURL string
	// Scopes, if set, are the scopes the client may request; a request
	// naming none is granted all of them. If unset any scope is granted.
	Scopes []string
	// AccessTokenLifetime of every access token (expires_in).
	AccessTokenLifetime time.Duration
	// NoRevocation: the server has no revocation endpoint (Revoke returns
	// domain.ErrNoRevocation, like adapters/provider without one).
	NoRevocation bool
	// Clock gives issue times and expiry; default domain.SystemClock.
	Clock domain.Clock
}

// TokenEndpoint implements domain.TokenEndpoint as a scriptable in-memory
// authorization server that behaves like adapters/sandbox (Pleo) seen
// through adapters/provider:
//
//   - Approve plays the user's consent for an AuthCodeURL and issues a
//     code; Exchange redeems it once, checking the PKCE S256 challenge. A
//     replayed code gets invalid_grant and revokes the tokens issued for it.
//   - Refresh rotates: a new access and refresh token, every earlier token
//     of the grant invalid. Presenting a replaced refresh token gets
//     invalid_grant and revokes the whole grant (reuse detection); of
//     concurrent refreshes with one token exactly one wins.
//   - Revoke of either token of a grant revokes the grant; unknown tokens
//     are not an error.
//   - A client secret (SetClientSecret) that is not the server's
//     (RotateClientSecret) gets invalid_client on every request.
//
// Failures are *domain.Failure exactly as adapters/provider.Classify makes
// them. A test scripts the next answers with FailNext (which consume
// nothing), stops issuing refresh tokens with SetIssueRefreshTokens, holds
// requests in flight with Hold and counts them with Requests. It is safe
// for concurrent use.
type TokenEndpoint struct {
	cfg TokenEndpointConfig

	mu           sync.Mutex
	clientSecret string // presented by the client side
	serverSecret string // expected by the server
	atLifetime   time.Duration
	noRefresh    bool
	codes        map[string]*authCode
	grants       []*grant
	byAccess     map[string]*grant
	byRefresh    map[string]*grant // current refresh tokens
	replaced     map[string]*grant // refresh tokens replaced by a rotation
	scripted     map[Request][]*domain.Failure
	holds        map[Request]*Hold
	counts       map[Request]int
	presented    map[Request][]string // fingerprints of the tokens presented
}

type authCode struct {
	challenge string
	scopes    []string
	expires   time.Time
	used      bool
	grant     *grant // issued for this code
}

type grant struct {
	scopes       []string
	access       string
	accessExpiry time.Time
	refresh      string
	revoked      bool
}

var _ domain.TokenEndpoint = (*TokenEndpoint)(nil)

// NewTokenEndpoint returns an authorization server with no grant.
func NewTokenEndpoint(cfg TokenEndpointConfig) *TokenEndpoint {
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = DefaultClientSecret
	}
	if cfg.RedirectURL == "" {
		cfg.RedirectURL = DefaultRedirectURL
	}
	if cfg.AuthURL == "" {
		cfg.AuthURL = DefaultAuthURL
	}
	if cfg.AccessTokenLifetime <= 0 {
		cfg.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if cfg.Clock == nil {
		cfg.Clock = domain.SystemClock{}
	}
	cfg.Scopes = slices.Clone(cfg.Scopes)
	return &TokenEndpoint{
		cfg:          cfg,
		clientSecret: cfg.ClientSecret,
		serverSecret: cfg.ClientSecret,
		atLifetime:   cfg.AccessTokenLifetime,
		codes:        map[string]*authCode{},
		byAccess:     map[string]*grant{},
		byRefresh:    map[string]*grant{},
		replaced:     map[string]*grant{},
		scripted:     map[Request][]*domain.Failure{},
		holds:        map[Request]*Hold{},
		counts:       map[Request]int{},
		presented:    map[Request][]string{},
	}
}

// ClientID returns the registered client id.
func (s *TokenEndpoint) ClientID() string { return s.cfg.ClientID }

// RedirectURL returns the registered redirect URL.
func (s *TokenEndpoint) RedirectURL() string { return s.cfg.RedirectURL }

// ServerClientSecret returns the client secret the server currently expects.
func (s *TokenEndpoint) ServerClientSecret() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serverSecret
}

// SetClientSecret implements domain.TokenEndpoint: the client side presents
// secret from now on.
func (s *TokenEndpoint) SetClientSecret(secret string) {
	s.mu.Lock()
	s.clientSecret = secret
	s.mu.Unlock()
}

// RotateClientSecret makes the server expect secret from now on (the
// sandbox's rotate-client-secret): requests with the old one get
// invalid_client until the client side is told with SetClientSecret.
func (s *TokenEndpoint) RotateClientSecret(secret string) {
	s.mu.Lock()
	s.serverSecret = secret
	s.mu.Unlock()
}

// SetIssueRefreshTokens chooses whether token responses carry a refresh
// token (default true). Without one, Exchange grants tokens without a
// refresh token (as providers that issue one only for some scopes do;
// adapters/provider accepts them) and Refresh keeps the presented refresh
// token (rotated false) instead of rotating.
func (s *TokenEndpoint) SetIssueRefreshTokens(on bool) {
	s.mu.Lock()
	s.noRefresh = !on
	s.mu.Unlock()
}

// SetAccessTokenLifetime sets the lifetime of access tokens issued from now
// on (d <= 0: DefaultAccessTokenLifetime).
func (s *TokenEndpoint) SetAccessTokenLifetime(d time.Duration) {
	if d <= 0 {
		d = DefaultAccessTokenLifetime
	}
	s.mu.Lock()
	s.atLifetime = d
	s.mu.Unlock()
}

// FailNext queues failures as the answers to the next requests of kind
// (RequestExchange, RequestRefresh or RequestRevoke), one each, before
// any other check. They consume nothing: the code or refresh token stays
// as it was. Revoke returns the failure as an error.
func (s *TokenEndpoint) FailNext(kind Request, failures ...*domain.Failure) {
	s.mu.Lock()
	s.scripted[kind] = append(s.scripted[kind], failures...)
	s.mu.Unlock()
}

// Requests returns how many requests of kind reached the server (including
// failed ones; not Refresh("") nor Revoke(""), which make none).
func (s *TokenEndpoint) Requests(kind Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[kind]
}

// RevokeGrants revokes every grant (the user withdrew consent) and
// returns how many were live.
func (s *TokenEndpoint) RevokeGrants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.grants {
		if !g.revoked {
			s.revokeLocked(g)
			n++
		}
	}
	return n
}

// ExpireRefreshTokens makes every live refresh token invalid now (access
// tokens stay valid until their expiry) and returns how many there were.
func (s *TokenEndpoint) ExpireRefreshTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.byRefresh)
	for rt, g := range s.byRefresh {
		delete(s.byRefresh, rt)
		g.refresh = ""
	}
	return n
}

// AccessTokenValid reports whether token is the current, unexpired access
// token of a live grant (what the provider's API would accept).
func (s *TokenEndpoint) AccessTokenValid(token string) bool {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.byAccess[token]
	return g != nil && !g.revoked && now.Before(g.accessExpiry)
}

// LiveGrants returns how many grants are not revoked.
func (s *TokenEndpoint) LiveGrants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.grants {
		if !g.revoked {
			n++
		}
	}
	return n
}

// AuthCodeURL implements domain.TokenEndpoint like adapters/provider
// (x/oauth2): response_type, client_id, redirect_uri, scope, state and the
// S256 challenge, then the extra parameters, which never override those.
func (s *TokenEndpoint) AuthCodeURL(state, verifier string, scopes []string, extra map[string]string) string {
	v := url.Values{}
	for k, val := range extra {
		v.Set(k, val)
	}
	v.Set("response_type", "code")
	v.Set("client_id", s.cfg.ClientID)
	v.Set("redirect_uri", s.cfg.RedirectURL)
	if len(scopes) > 0 {
		v.Set("scope", strings.Join(scopes, " "))
	} else {
		v.Del("scope")
	}
	v.Set("state", state)
	v.Set("code_challenge", S256Challenge(verifier))
	v.Set("code_challenge_method", "S256")
	return s.cfg.AuthURL + "?" + v.Encode()
}

// S256Challenge returns the PKCE S256 code challenge of verifier.
func S256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Approve plays the user approving the authorization request authURL (from
// AuthCodeURL) and returns the authorization code the provider would put
// on the redirect. It refuses, like the sandbox, a URL for another
// endpoint, client or redirect URL, a state shorter than 8 characters, a
// missing or non-S256 challenge, and scopes the client may not request.
func (s *TokenEndpoint) Approve(authURL string) (code string, err error) {
	u, err := url.Parse(authURL)
	if err != nil {
		return "", fmt.Errorf("memory: authorize: %w", err)
	}
	q := u.Query()
	base := *u
	base.RawQuery = ""
	switch {
	case base.String() != s.cfg.AuthURL:
		return "", fmt.Errorf("memory: authorize: %s is not this server's authorization endpoint", base.String())
	case q.Get("response_type") != "code":
		return "", errors.New("memory: authorize: unsupported_response_type")
	case q.Get("client_id") != s.cfg.ClientID:
		return "", errors.New("memory: authorize: invalid_client")
	case q.Get("redirect_uri") != s.cfg.RedirectURL:
		return "", errors.New("memory: authorize: invalid_request: redirect_uri mismatch")
	case len(q.Get("state")) < 8:
		return "", errors.New("memory: authorize: invalid_state: state shorter than 8 characters")
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		return "", errors.New("memory: authorize: invalid_request: PKCE S256 is required")
	}
	scopes := strings.Fields(q.Get("scope"))
	if len(scopes) == 0 {
		scopes = slices.Clone(s.cfg.Scopes)
	}
	if len(s.cfg.Scopes) > 0 {
		for _, sc := range scopes {
			if !slices.Contains(s.cfg.Scopes, sc) {
				return "", fmt.Errorf("memory: authorize: invalid_scope %q", sc)
			}
		}
	}
	code = "mem_ac_" + randomToken()
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	s.counts[RequestAuthorize]++
	s.codes[code] = &authCode{challenge: q.Get("code_challenge"), scopes: scopes, expires: now.Add(CodeLifetime)}
	s.mu.Unlock()
	return code, nil
}

// present logs the fingerprint of a token presented to the server, before
// anything else happens to the request (a token sent is a token presented,
// whatever the answer).
func (s *TokenEndpoint) present(kind Request, token string) {
	s.mu.Lock()
	s.presented[kind] = append(s.presented[kind], domain.Fingerprint(token))
	s.mu.Unlock()
}

// Presented returns the fingerprints (domain.Fingerprint) of the tokens
// presented in requests of the kind (RequestRefresh: refresh tokens;
// RequestRevoke: either kind of token), in order, including requests that
// failed. A test asserts with it that a token was never sent.
func (s *TokenEndpoint) Presented(kind Request) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.presented[kind])
}

// begin counts a request, waits while it is held, and returns the failure
// it gets before reaching the grant logic (context ended, scripted, wrong
// client secret). On nil it returns with s.mu held.
func (s *TokenEndpoint) begin(ctx context.Context, kind Request) *domain.Failure {
	if f := ctxFailure(ctx); f != nil {
		return f // never sent
	}
	s.mu.Lock()
	s.counts[kind]++
	h := s.holds[kind]
	s.mu.Unlock()
	if h != nil {
		h.wait(ctx)
	}
	if f := ctxFailure(ctx); f != nil {
		return f
	}
	s.mu.Lock()
	if q := s.scripted[kind]; len(q) > 0 {
		f := *q[0]
		s.scripted[kind] = q[1:]
		s.mu.Unlock()
		return &f
	}
	if s.clientSecret != s.serverSecret {
		s.mu.Unlock()
		return InvalidClient()
	}
	return nil
}

// ctxFailure is how adapters/provider classifies a request whose context
// ended: a timeout for a passed deadline, a network failure otherwise.
func ctxFailure(ctx context.Context) *domain.Failure {
	switch err := ctx.Err(); {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return TimeoutFailure()
	default:
		return NetworkFailure()
	}
}

// Exchange implements domain.TokenEndpoint.
func (s *TokenEndpoint) Exchange(ctx context.Context, code, verifier string, scopes []string) (domain.Tokens, error) {
	if f := s.begin(ctx, RequestExchange); f != nil {
		return domain.Tokens{}, f
	}
	defer s.mu.Unlock()
	now := s.cfg.Clock.Now()
	c := s.codes[code]
	switch {
	case c == nil:
		return domain.Tokens{}, InvalidGrant()
	case c.used:
		if c.grant != nil {
			s.revokeLocked(c.grant)
		}
		return domain.Tokens{}, InvalidGrant()
	case !now.Before(c.expires):
		return domain.Tokens{}, InvalidGrant()
	case S256Challenge(verifier) != c.challenge:
		return domain.Tokens{}, InvalidGrant()
	}
	c.used = true
	g := &grant{scopes: slices.Clone(c.scopes)}
	s.grants = append(s.grants, g)
	c.grant = g
	s.issueAccessLocked(g, now)
	if !s.noRefresh {
		g.refresh = "mem_rt_" + randomToken()
		s.byRefresh[g.refresh] = g
	}
	return s.tokensLocked(g, scopes), nil
}

// Refresh implements domain.TokenEndpoint.
func (s *TokenEndpoint) Refresh(ctx context.Context, refreshToken string, scopes []string) (domain.Tokens, bool, error) {
	if refreshToken == "" {
		return domain.Tokens{}, false, noStoredRefreshToken()
	}
	if ctx.Err() == nil {
		s.present(RequestRefresh, refreshToken)
	}
	if f := s.begin(ctx, RequestRefresh); f != nil {
		return domain.Tokens{}, false, f
	}
	defer s.mu.Unlock()
	g := s.byRefresh[refreshToken]
	if g == nil {
		if old := s.replaced[refreshToken]; old != nil && !old.revoked {
			s.revokeLocked(old) // reuse of a replaced token kills the grant
		}
		return domain.Tokens{}, false, InvalidGrant()
	}
	s.issueAccessLocked(g, s.cfg.Clock.Now())
	rotated := !s.noRefresh
	if rotated {
		delete(s.byRefresh, g.refresh)
		s.replaced[g.refresh] = g
		g.refresh = "mem_rt_" + randomToken()
		s.byRefresh[g.refresh] = g
	}
	return s.tokensLocked(g, scopes), rotated, nil
}

// Revoke implements domain.TokenEndpoint: revoking the current access or
// refresh token of a grant revokes the grant; other tokens are ignored.
func (s *TokenEndpoint) Revoke(ctx context.Context, token, hint string) error {
	if s.cfg.NoRevocation {
		return domain.ErrNoRevocation
	}
	if token == "" {
		return nil
	}
	if ctx.Err() == nil {
		s.present(RequestRevoke, token)
	}
	if f := s.begin(ctx, RequestRevoke); f != nil {
		if f.Code == "invalid_client" {
			return errors.New("memory: revoke: status 401")
		}
		return fmt.Errorf("memory: revoke: %w", f)
	}
	defer s.mu.Unlock()
	if g := s.byRefresh[token]; g != nil {
		s.revokeLocked(g)
	} else if g := s.byAccess[token]; g != nil {
		s.revokeLocked(g)
	}
	return nil
}

func (s *TokenEndpoint) issueAccessLocked(g *grant, now time.Time) {
	delete(s.byAccess, g.access)
	g.access = "mem_at_" + randomToken()
	g.accessExpiry = now.Add(s.atLifetime).UTC()
	s.byAccess[g.access] = g
}

func (s *TokenEndpoint) tokensLocked(g *grant, scopes []string) domain.Tokens {
	t := domain.Tokens{AccessToken: g.access, RefreshToken: g.refresh, TokenType: "bearer", Expiry: g.accessExpiry, Scopes: slices.Clone(scopes)}
	if len(g.scopes) > 0 {
		t.Scopes = slices.Clone(g.scopes) // the response names the granted scopes
	}
	return t
}

func (s *TokenEndpoint) revokeLocked(g *grant) {
	g.revoked = true
	delete(s.byAccess, g.access)
	delete(s.byRefresh, g.refresh)
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Hold holds requests of one kind in flight: each waits, after it was
// counted and before it is answered, until Release is called or its
// context ends (then it fails as a timeout or network failure, as over
// HTTP).
type Hold struct {
	mu       sync.Mutex
	held     int
	changed  chan struct{}
	released chan struct{}
	once     sync.Once
	release  func()
}

// Hold makes every request of kind wait from now on until the returned
// Hold is released. A Hold replaces an earlier one for the same kind
// (requests already waiting on that one keep waiting for it).
func (s *TokenEndpoint) Hold(kind Request) *Hold {
	h := &Hold{changed: make(chan struct{}), released: make(chan struct{})}
	h.release = func() {
		s.mu.Lock()
		if s.holds[kind] == h {
			delete(s.holds, kind)
		}
		s.mu.Unlock()
		close(h.released)
	}
	s.mu.Lock()
	s.holds[kind] = h
	s.mu.Unlock()
	return h
}

func (h *Hold) wait(ctx context.Context) {
	h.mu.Lock()
	h.held++
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	select {
	case <-h.released:
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.held--
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// Held returns how many requests are waiting on h now.
func (h *Hold) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// WaitHeld waits, without sleeping, until at least n requests are waiting
// on h, or ctx ends (whose error it returns).
func (h *Hold) WaitHeld(ctx context.Context, n int) error {
	for {
		h.mu.Lock()
		if h.held >= n {
			h.mu.Unlock()
			return nil
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Release lets every held request, and every later one, through. Calling
// it again does nothing.
func (h *Hold) Release() { h.once.Do(h.release) }
