package sandbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
)

// Consent modes accepted by Config.Consent and POST /sandbox/admin/consent.
const (
	// ConsentApprove approves every valid authorisation request at once:
	// the authorize endpoint redirects straight back with code and state.
	ConsentApprove = "approve"
	// ConsentDeny denies every valid authorisation request at once: the
	// authorize endpoint redirects back with error=access_denied and state.
	ConsentDeny = "deny"
	// ConsentPrompt shows an HTML consent page with Approve and Deny
	// buttons (element ids "approve" and "deny"). It is the default.
	ConsentPrompt = "prompt"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultClientID is the client ID used when Config.ClientID is empty.
	DefaultClientID = "sandbox-client"
	// DefaultAccessTokenLifetime is the access-token lifetime in Pleo's older
	// documentation (current docs say to read expires_in).
	DefaultAccessTokenLifetime = 15 * time.Minute
	// DefaultRefreshTokenLifetime is Pleo's documented minimum refresh-token
	// lifetime ("at least 60 days").
	DefaultRefreshTokenLifetime = 60 * 24 * time.Hour
)

// Default caps on what the sandbox holds in memory; see Config.MaxCodes and
// Config.MaxGrants.
const (
	DefaultMaxCodes  = 10000
	DefaultMaxGrants = 100000
)

// DefaultScopes are the scopes registered when Config.Scopes is empty; they
// are the examples from Pleo's scope documentation.
var DefaultScopes = []string{"export-jobs:read", "export-items:read", "users:read", "accounts:read"}

// PathPrefix is the path under which Server.Handler serves every route.
const PathPrefix = "/sandbox/"

// authorizeCodeLifetime is how long an unexchanged authorisation code lives.
const authorizeCodeLifetime = 10 * time.Minute

// sessionSubject is the resource owner every grant is issued for: the
// sandbox has no user accounts, just one pretend Pleo user.
const sessionSubject = "sandbox-user"

// scopePattern is Pleo's scope shape: resource ":" permission, both in lower
// case with digits, '-', '_' or '.' (e.g. "export-jobs:read").
var scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$`)

// Config configures a sandbox authorization server. The zero value of every
// field except RedirectURIs selects a default; see New.
type Config struct {
	// ClientID is the one registered OAuth 2.0 client. Default
	// DefaultClientID.
	ClientID string
	// ClientSecret is the client's initial secret. When empty, New
	// generates a random one; read it back with Server.ClientSecret. The
	// secret changes when POST /sandbox/admin/rotate-client-secret is
	// called.
	ClientSecret string
	// RedirectURIs are the client's registered redirect URIs. At least one
	// is required. The authorize endpoint accepts a redirect_uri only if it
	// is byte-for-byte equal to one of these (no loopback-port leniency, no
	// prefix matching, no wildcards), and the parameter is mandatory. Each
	// must be an absolute URI without fragment, https or http on a loopback
	// or localhost host (or a custom scheme).
	RedirectURIs []string
	// Scopes are the scopes the client may request, in Pleo's
	// resource:permission form ("export-jobs:read", "users:read"). A request
	// may ask for any subset; a request with no scope parameter is granted
	// all of them (RFC 6749 section 3.3 default). Default DefaultScopes.
	Scopes []string
	// AccessTokenLifetime is the lifetime of every access token. It must be
	// at least one second; expires_in in token responses is the lifetime in
	// whole seconds. Default DefaultAccessTokenLifetime (15 minutes).
	AccessTokenLifetime time.Duration
	// RefreshTokenLifetime is the lifetime of every refresh token, counted
	// from its issue (each rotation issues a new one with a fresh
	// lifetime). It must be at least one second. Default
	// DefaultRefreshTokenLifetime (60 days).
	RefreshTokenLifetime time.Duration
	// Consent is the initial consent mode: ConsentApprove, ConsentDeny or
	// ConsentPrompt. Default ConsentPrompt. It can be changed at run time
	// with POST /sandbox/admin/consent.
	Consent string
	// Now is the sandbox's clock (default time.Now). Authorisation codes
	// (10 minutes), access and refresh tokens get their expiry times from
	// it, are checked against it and are evicted from memory once it has
	// passed them; POST /sandbox/admin/expire-refresh-tokens expires
	// refresh tokens as of it. A test can so let things expire without
	// waiting.
	Now func() time.Time
	// MaxCodes caps the authorisation codes held at once: unexpired ones,
	// used or not (used ones are kept until they expire so that a replay is
	// detected). When the cap is reached the authorize endpoint redirects
	// with error=temporarily_unavailable until codes expire (10 minutes
	// after issue, on the sandbox's clock). Default DefaultMaxCodes.
	MaxCodes int
	// MaxGrants caps the grants (authorisations) held at once. A grant is
	// held until its last token or code has expired, revoked or not. When
	// the cap is reached the authorize endpoint redirects with
	// error=temporarily_unavailable. Default DefaultMaxGrants.
	MaxGrants int
	// AdminToken is the bearer token every /sandbox/admin/ request must
	// carry ("Authorization: Bearer <token>"); other requests get 401.
	// tokenline passes its API token. When empty, New generates a random
	// one; read it back with Server.AdminToken.
	AdminToken string
	// PublicClient registers the client as a public client
	// (token_endpoint_auth_method none): it has no secret and identifies
	// itself with client_id in the form body; PKCE is required as for every
	// client. ClientSecret is then ignored. For testing public-client
	// support (RFC 8252, OAuth 2.1).
	PublicClient bool
	// RefreshTokens chooses which token responses carry a refresh token:
	// RefreshTokensAlways (the default: every one, rotated on refresh),
	// RefreshTokensNever, RefreshTokensKeep (the code exchange only;
	// refresh responses omit it and the old one stays valid) or
	// "scope:<scope>" (only grants with that scope, e.g.
	// "scope:offline_access"; the client may always request
	// OfflineAccessScope). Changed at run time by POST
	// /sandbox/admin/grant-mode (mode_refresh.go).
	RefreshTokens string
	// NonExpiringAccessTokens issues access tokens without expiry: token
	// responses have no expires_in and the token is valid until revoked.
	// POST /sandbox/admin/grant-mode {"access_ttl":"0s"} does the same at
	// run time.
	NonExpiringAccessTokens bool
	// MetadataIssuer, if set, is the issuer the RFC 8414 metadata document
	// claims instead of the real one (the endpoints stay right): a
	// misconfigured or impersonating server, for testing that clients
	// refuse metadata whose issuer is not the one they asked for (RFC 8414
	// section 3.3).
	MetadataIssuer string
	// Logger receives one record per token-endpoint request, admin action
	// and detected refresh-token reuse. Tokens, secrets, authorisation codes
	// and PKCE verifiers are never logged. Default: discard.
	Logger *slog.Logger
}

// Server is a sandbox OAuth 2.0 authorization server that behaves like Pleo's
// (see the package documentation). Create it with New and mount
// Server.Handler. All methods are safe for concurrent use.
type Server struct {
	clientID     string
	redirectURIs []string
	scopes       []string
	atLifetime   time.Duration
	rtLifetime   time.Duration
	log          *slog.Logger
	now          func() time.Time

	provider fosite.OAuth2Provider
	strategy *oauth2.HMACSHAStrategy
	store    *store
	stats    *counters
	handler  http.Handler

	// tokenMu serialises every operation that reads and then changes
	// token state (token endpoint, RFC 7009 revocation, admin actions), so
	// that a refresh is atomic: of two requests presenting the same refresh
	// token, exactly one wins and the other is reuse, as at Pleo. Responses
	// are written after the lock is released.
	tokenMu sync.Mutex

	adminToken string

	public         bool   // Config.PublicClient
	metadataIssuer string // Config.MetadataIssuer

	mu      sync.Mutex // guards the fields below
	secret  string
	issuer  string
	consent string
	fault   faultPlan
	grant   grantMode // mode_refresh.go
}

// faultPlan is the pending fault set by POST /sandbox/admin/faults.
type faultPlan struct {
	status     int
	remaining  int
	retryAfter int // seconds; < 0: no Retry-After header
	errorCode  string
}

// New validates cfg, applies defaults and returns a ready server. The HMAC
// secret that signs tokens and codes is 32 random bytes generated here, so
// tokens never survive a restart.
func New(cfg Config) (*Server, error) {
	cfg.ClientID = cmp.Or(cfg.ClientID, DefaultClientID)
	if strings.ContainsFunc(cfg.ClientID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, errors.New("sandbox: ClientID must not contain spaces or control characters")
	}
	if cfg.ClientSecret == "" {
		s, err := randomString(32)
		if err != nil {
			return nil, err
		}
		cfg.ClientSecret = s
	}
	if cfg.AdminToken == "" {
		t, err := randomString(32)
		if err != nil {
			return nil, err
		}
		cfg.AdminToken = t
	}
	if len(cfg.RedirectURIs) == 0 {
		return nil, errors.New("sandbox: at least one redirect URI is required")
	}
	for _, raw := range cfg.RedirectURIs {
		u, err := url.Parse(raw)
		if err != nil || !u.IsAbs() || !fosite.IsValidRedirectURI(u) {
			return nil, fmt.Errorf("sandbox: redirect URI %q is not an absolute URI without fragment", raw)
		}
		if !fosite.IsRedirectURISecure(context.Background(), u) {
			return nil, fmt.Errorf("sandbox: redirect URI %q uses http on a non-local host; use https", raw)
		}
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = DefaultScopes
	}
	seen := map[string]bool{}
	for _, sc := range cfg.Scopes {
		if !scopePattern.MatchString(sc) {
			return nil, fmt.Errorf("sandbox: scope %q is not of the form resource:permission", sc)
		}
		if seen[sc] {
			return nil, fmt.Errorf("sandbox: scope %q listed twice", sc)
		}
		seen[sc] = true
	}
	cfg.AccessTokenLifetime = cmp.Or(cfg.AccessTokenLifetime, DefaultAccessTokenLifetime)
	cfg.RefreshTokenLifetime = cmp.Or(cfg.RefreshTokenLifetime, DefaultRefreshTokenLifetime)
	if cfg.AccessTokenLifetime < time.Second || cfg.RefreshTokenLifetime < time.Second {
		return nil, errors.New("sandbox: token lifetimes must be at least one second")
	}
	cfg.MaxCodes = cmp.Or(cfg.MaxCodes, DefaultMaxCodes)
	cfg.MaxGrants = cmp.Or(cfg.MaxGrants, DefaultMaxGrants)
	if cfg.MaxCodes < 1 || cfg.MaxGrants < 1 {
		return nil, errors.New("sandbox: MaxCodes and MaxGrants must be at least 1")
	}
	cfg.Consent = cmp.Or(cfg.Consent, ConsentPrompt)
	if !validConsent(cfg.Consent) {
		return nil, fmt.Errorf("sandbox: consent mode %q is not one of approve, deny, prompt", cfg.Consent)
	}
	logger := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))

	now := cfg.Now
	if now == nil {
		now = time.Now
	}

	globalSecret := make([]byte, 32)
	if _, err := rand.Read(globalSecret); err != nil {
		return nil, fmt.Errorf("sandbox: generating HMAC secret: %w", err)
	}

	s := &Server{
		clientID:     cfg.ClientID,
		redirectURIs: slices.Clone(cfg.RedirectURIs),
		scopes:       slices.Clone(cfg.Scopes),
		atLifetime:   cfg.AccessTokenLifetime,
		rtLifetime:   cfg.RefreshTokenLifetime,
		log:          logger.With("component", "sandbox"),
		now:          now,
		stats:        newCounters(),
		secret:       cfg.ClientSecret,
		consent:      cfg.Consent,
		adminToken:   cfg.AdminToken,

		public:         cfg.PublicClient,
		metadataIssuer: cfg.MetadataIssuer,
	}
	if err := s.initialGrantMode(cfg); err != nil {
		return nil, err
	}
	s.store = newStore(s.newClient(cfg.ClientSecret), storeHooks{
		grantRevoked: func(string) { s.stats.revocation() },
		refreshReuse: func(string) {
			s.stats.reuse()
			s.log.Warn("refresh token reuse detected: a replaced refresh token was presented; the grant is revoked")
		},
	}, storeLimits{now: now, codeLifetime: authorizeCodeLifetime, maxCodes: cfg.MaxCodes, maxGrants: cfg.MaxGrants})

	fc := &fosite.Config{
		AccessTokenLifespan:            cfg.AccessTokenLifetime,
		RefreshTokenLifespan:           cfg.RefreshTokenLifetime,
		AuthorizeCodeLifespan:          authorizeCodeLifetime,
		GlobalSecret:                   globalSecret,
		TokenEntropy:                   32,
		EnforcePKCE:                    true,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		// Empty, not nil: nil means "only grants with the offline scope
		// get a refresh token".
		RefreshTokenScopes: []string{},
		// fosite's getters assign defaults into the Config on first use,
		// which races under concurrent requests; set them all up front.
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
		ClientSecretsHasher:      secretHasher{},
	}
	s.strategy = compose.NewOAuth2HMACStrategy(fc)
	s.provider = compose.Compose(fc, s.store, &clockStrategy{HMACSHAStrategy: s.strategy, now: now},
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2PKCEFactory, // must follow the explicit factory: it needs the issued code
	)
	s.handler = s.routes()
	return s, nil
}

// newClient builds the registered client with the given plaintext secret.
func (s *Server) newClient(secret string) *fosite.DefaultClient {
	hash, _ := secretHasher{}.Hash(context.Background(), []byte(secret))
	return &fosite.DefaultClient{
		ID:            s.clientID,
		Secret:        hash,
		RedirectURIs:  slices.Clone(s.redirectURIs),
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"},
		Scopes:        requestableScopes(s.scopes),
		Public:        s.public,
	}
}

// Handler returns the HTTP handler for every sandbox route. Paths include the
// PathPrefix ("/sandbox/"), so mount it as mux.Handle("/sandbox/", h) without
// stripping the prefix. Routes:
//
//	GET  /sandbox/oauth/authorize                  authorisation endpoint (consent page in prompt mode)
//	POST /sandbox/oauth/authorize                  consent form submission
//	POST /sandbox/oauth/token                      token endpoint (authorization_code, refresh_token)
//	POST /sandbox/oauth/revoke                     RFC 7009 token revocation
//	POST /sandbox/oauth/token/introspect           RFC 7662 token introspection
//	GET  /sandbox/.well-known/oauth-authorization-server   RFC 8414 metadata
//	GET  /sandbox/api/me                           protected resource
//	POST /sandbox/admin/revoke-grants              admin token (Bearer), see package doc
//	POST /sandbox/admin/rotate-client-secret       admin token
//	POST /sandbox/admin/expire-refresh-tokens      admin token
//	POST /sandbox/admin/faults                     admin token
//	POST /sandbox/admin/consent                    admin token
//	GET  /sandbox/admin/grant-mode                 admin token
//	POST /sandbox/admin/grant-mode                 admin token
//	GET  /sandbox/admin/stats                      admin token
//	POST /sandbox/admin/reset-stats                admin token
//
// Other methods on these paths get 405, other paths 404.
func (s *Server) Handler() http.Handler { return s.handler }

// MetadataHandler returns a handler that serves the RFC 8414 metadata
// document regardless of the request path. It lets the embedding program
// also serve the metadata at the RFC 8414 well-known location for an issuer
// with a path, /.well-known/oauth-authorization-server/sandbox.
func (s *Server) MetadataHandler() http.Handler { return http.HandlerFunc(s.handleDiscovery) }

// SetIssuer sets the public base URL of the server the handler is mounted on
// (scheme, host and port, no path; for example "http://127.0.0.1:8080").
// The issuer is baseURL+"/sandbox" and the discovery metadata's endpoint URLs
// are built from it. Until SetIssuer is called, the base URL is derived from
// each metadata request (its Host header; https only if it came over TLS).
// A trailing slash is ignored.
func (s *Server) SetIssuer(baseURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issuer = strings.TrimRight(baseURL, "/")
}

// Stats returns a snapshot of the counters, the same data as
// GET /sandbox/admin/stats.
func (s *Server) Stats() Stats {
	st := s.stats.snapshot()
	h := s.store.holding()
	st.Held = HeldStats{Codes: h.codes, Grants: h.grants, AccessTokens: h.accessTokens, RefreshTokens: h.refreshTokens}
	st.RefreshesPerGrant = make(map[string]int64, len(h.refreshesPerGrant))
	for n, grants := range h.refreshesPerGrant {
		st.RefreshesPerGrant[strconv.FormatInt(n, 10)] = grants
	}
	return st
}

// ClientSecret returns the client's current secret: the configured or
// generated one, or the latest one set by POST
// /sandbox/admin/rotate-client-secret. It exists to wire a client in the
// same process.
func (s *Server) ClientSecret() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secret
}

// AdminToken returns the bearer token the admin API requires: the
// configured Config.AdminToken or the one New generated.
func (s *Server) AdminToken() string { return s.adminToken }

// ClientID returns the registered client's ID.
func (s *Server) ClientID() string { return s.clientID }

func (s *Server) routes() http.Handler {
	mux := newMux(map[string]http.HandlerFunc{
		"GET /sandbox/oauth/authorize":                        s.handleAuthorize,
		"POST /sandbox/oauth/authorize":                       s.handleAuthorize,
		"POST /sandbox/oauth/token":                           s.handleToken,
		"POST /sandbox/oauth/revoke":                          s.handleRevoke,
		"POST /sandbox/oauth/token/introspect":                s.handleIntrospect,
		"GET /sandbox/.well-known/oauth-authorization-server": s.handleDiscovery,
		"GET /sandbox/api/me":                                 s.handleMe,
	})
	admin := newMux(map[string]http.HandlerFunc{
		"POST /sandbox/admin/revoke-grants":         s.handleAdminRevokeGrants,
		"POST /sandbox/admin/rotate-client-secret":  s.handleAdminRotateSecret,
		"POST /sandbox/admin/expire-refresh-tokens": s.handleAdminExpireRefreshTokens,
		"POST /sandbox/admin/faults":                s.handleAdminFaults,
		"POST /sandbox/admin/consent":               s.handleAdminConsent,
		"GET /sandbox/admin/grant-mode":             s.handleAdminGetGrantMode,
		"POST /sandbox/admin/grant-mode":            s.handleAdminGrantMode,
		"GET /sandbox/admin/stats":                  s.handleAdminStats,
		"POST /sandbox/admin/reset-stats":           s.handleAdminResetStats,
	})
	// The guard wraps the whole admin subtree so that a caller without the
	// admin token gets 401 for every admin path and method, learning
	// nothing else.
	mux.Handle("/sandbox/admin/", requireAdminToken(sha256.Sum256([]byte(s.adminToken)), admin))

	return limitBody(mux)
}

// newMux serves each pattern with its handler.
func newMux(routes map[string]http.HandlerFunc) *http.ServeMux {
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	return mux
}

// maxBodyBytes bounds every request body.
const maxBodyBytes = 64 << 10

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

func validConsent(mode string) bool {
	return mode == ConsentApprove || mode == ConsentDeny || mode == ConsentPrompt
}

func (s *Server) consentMode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.consent
}

// issuerFor returns the issuer URL: the configured base URL or one derived
// from r, plus "/sandbox".
func (s *Server) issuerFor(r *http.Request) string {
	s.mu.Lock()
	base := s.issuer
	s.mu.Unlock()
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return base + strings.TrimSuffix(PathPrefix, "/")
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("sandbox: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
