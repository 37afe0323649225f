package httpapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// Config configures a Server. Connections and Status are required; every
// other dependency is optional and the routes that need it answer 501 (or,
// for the UI's sandbox panel, are hidden) without it.
type Config struct {
	// Connections is the command side (*lifecycle.Service).
	Connections ConnectionService
	// Status reads current state (StatusFromProjection or StoreReader).
	Status StatusReader
	// Audit reads history (StoreReader).
	Audit AuditReader
	// Ready are the checks of GET /readyz, typically
	// {Name: "nats", Probe: NATSReady(nc)} and one for the projections.
	Ready []Check

	// APIToken is the bearer token every /v1 request must present (or, from
	// the web UI, a session cookie: see session.go and ui.go). Empty means
	// no bearer request is accepted (fail closed).
	APIToken string
	// MetricsPublic serves GET /metrics without the API token. By default
	// (false) /metrics requires "Authorization: Bearer <API token>" like
	// /v1, since connection counts by state and refresh outcomes are
	// nobody else's business on a shared machine.
	MetricsPublic bool
	// BaseURL is the public base URL (scheme://host[:port], no path). It
	// makes reauthorise_url, the callback redirect and login links
	// absolute, and an https BaseURL makes the session cookie Secure.
	// Empty: relative links.
	BaseURL string
	// Now is the clock of login codes and UI sessions (default time.Now).
	Now func() time.Time
	// Logger receives one line per request (method, route, status, time; no
	// query string, body or header). Default: discard.
	Logger *slog.Logger

	// Registerer and Gatherer are the Prometheus registry the metrics are
	// registered on and /metrics serves. Default: a new registry of the
	// server's own (never the global one). Ignored when Metrics is set, but
	// Gatherer is still what /metrics serves.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Metrics, if set, is used instead of creating one (create it first
	// with NewMetrics when event hooks must be wired before the server).
	Metrics *Metrics
	// ProjectionLag feeds tokenline_projection_lag (projections.Runner.Lag;
	// nil: not exported).
	ProjectionLag func(ctx context.Context) (uint64, error)
	// NearExpiry is the window of tokenline_tokens_near_expiry.
	NearExpiry time.Duration

	// Sandbox, if non-nil, is mounted at /sandbox/ (sandbox.Server.Handler)
	// and the UI shows the sandbox panel. SandboxMetadata, if non-nil, is
	// served at /.well-known/oauth-authorization-server/sandbox (RFC 8414
	// location for the issuer BaseURL+"/sandbox").
	Sandbox http.Handler
	// SigningKey is served by GET /v1/signing-key (nil: 404).
	SigningKey      *apitypes.SigningKey
	SandboxMetadata http.Handler
	// Providers lists provider names offered by the UI's create form.
	Providers []string
	// ProviderDirectory, if non-nil, serves GET /v1/providers (providers.go).
	ProviderDirectory ProviderDirectory
	// Webhooks, if non-nil, serves /v1/webhooks (webhooks.go; 501 without).
	Webhooks WebhookService
}

// Server is tokenline's HTTP server: the /v1 API, the OAuth callback, the
// web UI, health, readiness and metrics (and the sandbox when mounted).
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	gatherer prometheus.Gatherer
	tokenSum [sha256.Size]byte
	handler  http.Handler

	// loginCodes are the one-time codes of login links; sessions are the
	// web UI's sessions (session.go).
	loginCodes *secretSet
	sessions   *secretSet

	// secretSetAt: provider name → when this instance last installed its
	// client secret (PUT .../client-secret); status tells the user to
	// reconnect an operator-action connection only after it.
	secretSetAt sync.Map
}

// New returns a Server. It never fails: a metrics registration error is
// logged and the server runs without those metrics.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.log = cmp.Or(s.log, slog.New(slog.DiscardHandler))
	if cfg.Connections == nil || cfg.Status == nil {
		s.log.Error("httpapi: Config.Connections and Config.Status are required; the API answers 500 without them")
	}
	s.cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	s.tokenSum = sha256.Sum256([]byte(cfg.APIToken))
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s.loginCodes = newSecretSet(MaxLoginCodes, LoginCodeTTL, now)
	s.sessions = newSecretSet(MaxSessions, SessionTTL, now)
	s.gatherer = cfg.Gatherer
	reg := cfg.Registerer
	if reg == nil && s.gatherer == nil {
		r := prometheus.NewRegistry()
		reg, s.gatherer = r, r
	} else if reg == nil {
		if r, ok := s.gatherer.(prometheus.Registerer); ok {
			reg = r
		}
	} else if s.gatherer == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			s.gatherer = g
		}
	}
	s.metrics = cfg.Metrics
	if s.metrics == nil && reg != nil {
		m, err := NewMetrics(reg, MetricsConfig{Status: cfg.Status, ProjectionLag: cfg.ProjectionLag, NearExpiry: cfg.NearExpiry})
		if err != nil {
			s.log.Error("metrics registration failed", "error", err.Error())
		}
		s.metrics = m
	}
	s.handler = s.routes()
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics returns the server's metrics, for the lead's event hooks
// (ObserveEvent). It may be nil if registration failed.
func (s *Server) Metrics() *Metrics { return s.metrics }

// maxBody bounds every request body the API reads.
const maxBody = 64 << 10

// routes builds the mux. Each known path also has a method-less pattern
// that answers 405 with Allow, so a wrong method gets JSON, not the mux's
// plain-text default.
func (s *Server) routes() http.Handler {
	v1 := http.NewServeMux()
	route(v1, apitypes.RouteConnections, map[string]http.HandlerFunc{
		"GET":  s.handleList,
		"POST": s.handleCreate,
	})
	route(v1, apitypes.RouteConnection, map[string]http.HandlerFunc{
		"GET":    s.handleGet,
		"PATCH":  s.handlePatch,
		"DELETE": s.handleDelete,
	})
	route(v1, apitypes.RouteAuthorize, map[string]http.HandlerFunc{"POST": s.handleAuthorize})
	route(v1, apitypes.RouteToken, map[string]http.HandlerFunc{"GET": s.handleToken})
	route(v1, apitypes.RouteRejections, map[string]http.HandlerFunc{"POST": s.handleRejection})
	route(v1, apitypes.RouteEvents, map[string]http.HandlerFunc{"GET": s.handleEvents})
	route(v1, apitypes.RouteState, map[string]http.HandlerFunc{"GET": s.handleStateAt})
	route(v1, apitypes.RouteTimeline, map[string]http.HandlerFunc{"GET": s.handleTimeline})
	route(v1, apitypes.RouteProviders, map[string]http.HandlerFunc{"GET": s.handleProviders})
	route(v1, apitypes.RouteClientSecret, map[string]http.HandlerFunc{"PUT": s.handleClientSecret})
	route(v1, apitypes.RouteLoginLinks, map[string]http.HandlerFunc{"POST": s.handleLoginLink})
	route(v1, apitypes.RouteSigningKey, map[string]http.HandlerFunc{"GET": s.handleSigningKey})
	s.webhookRoutes(v1)
	v1.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API route")
	})

	mux := http.NewServeMux()
	mux.Handle("/v1/", s.requireToken(v1))
	route(mux, "/oauth/callback", map[string]http.HandlerFunc{"GET": s.handleCallback})
	route(mux, "/healthz", map[string]http.HandlerFunc{"GET": s.handleHealth})
	route(mux, "/readyz", map[string]http.HandlerFunc{"GET": s.handleReady})
	metricsHandler := http.NotFoundHandler()
	if s.gatherer != nil {
		metricsHandler = promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})
	}
	if !s.cfg.MetricsPublic {
		metricsHandler = s.requireBearer(metricsHandler)
	}
	route(mux, "/metrics", map[string]http.HandlerFunc{"GET": metricsHandler.ServeHTTP})
	s.uiRoutes(mux)
	if s.cfg.Sandbox != nil {
		// The sandbox's admin endpoints take the API token (the sandbox
		// checks it); on top, refuse requests whose Host is not this
		// machine's (DNS rebinding) or that came through a proxy.
		sb := s.cfg.Sandbox
		mux.Handle("/sandbox/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/sandbox/admin/") {
				if !s.loopbackBrowser(r) {
					writeError(w, http.StatusForbidden, "forbidden", "the sandbox admin endpoints are served only to this machine")
					return
				}
				// The UI's sandbox panel holds a session, not the token:
				// a same-origin fetch with a valid session is admitted as
				// the API token would be (the pages never carry it).
				if r.Header.Get("Authorization") == "" && r.Header.Get("Sec-Fetch-Site") == "same-origin" && s.validSession(r) {
					r = r.Clone(r.Context())
					r.Header.Set("Authorization", "Bearer "+s.cfg.APIToken)
				}
			}
			sb.ServeHTTP(w, r)
		}))
	}
	if s.cfg.SandboxMetadata != nil {
		mux.Handle("GET /.well-known/oauth-authorization-server/sandbox", s.cfg.SandboxMetadata)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})

	// Cross-origin protection rejects state-changing browser requests from
	// other origins (Sec-Fetch-Site / Origin), which also shields the
	// sandbox's admin endpoints from a forged form post.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross_origin", "cross-origin request refused")
	}))
	return s.recoverer(s.accessLog(cop.Handler(limitBody(mux))))
}

// route registers one handler per method on path, and a catch-all that
// answers 405 with the Allow header.
func route(mux *http.ServeMux, path string, byMethod map[string]http.HandlerFunc) {
	allow := make([]string, 0, len(byMethod)+1)
	for _, m := range []string{"GET", "POST", "PATCH", "PUT", "DELETE"} {
		h, ok := byMethod[m]
		if !ok {
			continue
		}
		mux.HandleFunc(m+" "+path, h)
		allow = append(allow, m)
		if m == "GET" {
			allow = append(allow, "HEAD")
		}
	}
	allowed := strings.Join(allow, ", ")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method "+r.Method+" is not allowed here; allowed: "+allowed)
	})
}

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// requireToken admits a request with "Authorization: Bearer <API token>"
// (checked in constant time: both sides are hashed first, so neither
// content nor length leaks), or a browser request of the web UI: no
// Authorization header, Sec-Fetch-Site: same-origin (a fetch by a page of
// this origin; the server-wide cross-origin protection refuses the other
// state-changing ones besides) and a live session cookie. A request admitted
// by its session is marked (viaSession): the routes that hand out secrets
// (access tokens, login links) refuse it.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		switch {
		case s.validToken(auth):
			next.ServeHTTP(w, r)
		case auth == "" && r.Header.Get("Sec-Fetch-Site") == "same-origin" && s.validSession(r):
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, true)))
		default:
			unauthorized(w)
		}
	})
}

// requireBearer admits only "Authorization: Bearer <API token>".
func (s *Server) requireBearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.validToken(r.Header.Get("Authorization")) {
			unauthorized(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tokenline"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", "a valid API token is required (Authorization: Bearer <token>)")
}

// sessionKey marks the context of a request admitted by a UI session.
type sessionKey struct{}

// viaSession reports whether r was admitted by a UI session cookie rather
// than the API token.
func viaSession(r *http.Request) bool {
	v, _ := r.Context().Value(sessionKey{}).(bool)
	return v
}

// refuseSession answers 403 to a request admitted by a UI session: what
// the route hands out (access tokens, login links) is for holders of the
// API token only.
func refuseSession(w http.ResponseWriter, r *http.Request) bool {
	if !viaSession(r) {
		return false
	}
	writeError(w, http.StatusForbidden, "api_token_required", "this route needs the API token (Authorization: Bearer <token>); a web UI session is not enough")
	return true
}

func (s *Server) validToken(h string) bool {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	sum := sha256.Sum256([]byte(tok))
	match := subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
	return match && s.cfg.APIToken != "" && tok != ""
}

// statusWriter records the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = cmp.Or(w.status, code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.status = cmp.Or(w.status, http.StatusOK)
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs one line per request: method, matched route pattern, path
// (never the query string: the callback's carries state and code), status
// and duration.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		sw.status = cmp.Or(sw.status, http.StatusOK)
		lvl := slog.LevelInfo
		if sw.status >= 500 {
			lvl = slog.LevelError
		}
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" || strings.HasPrefix(r.URL.Path, "/ui/static/") {
			lvl = slog.LevelDebug
		}
		s.log.Log(r.Context(), lvl, "http request", "method", r.Method, "route", r.Pattern, "path", r.URL.Path,
			"status", sw.status, "duration_ms", time.Since(t0).Milliseconds())
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path)
				writeError(w, http.StatusInternalServerError, "internal_error", "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
