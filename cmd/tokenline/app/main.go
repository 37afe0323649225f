// Package app wires tokenline together by hand: Main owns every component
// (embedded or external NATS, the event store, the vault, projections, the
// lifecycle service, the sandbox provider and the HTTP server) and starts and
// stops them in order. cmd/tokenline's main only handles signals; the
// end-to-end tests in tests/ run Main on port 0.
package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/adapters/secretfile"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// Version is set at build time with -ldflags "-X .../app.Version=...".
var Version = "dev"

// Main is a running tokenline.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Clock is the time of the lifecycle, the gate and the sandbox provider
	// (default: the system clock; the gate then reads a coarse process
	// clock). Tests set a clock ahead of real time to make tokens due or
	// authorisation attempts expire without waiting.
	Clock domain.Clock
	// LogOutput receives the JSON logs (default os.Stderr).
	LogOutput io.Writer

	NATS      *natsserver.Server // nil with an external NATS
	Conn      *nats.Conn
	VaultConn *nats.Conn // the vault's own connection (refresh: its requests beside the appends')
	// FollowConn carries the projection Runner's deliveries (every event
	// of the stream), so that an append's acknowledgement does not queue
	// behind them on Conn (jsstore.Config.FollowConn).
	FollowConn *nats.Conn
	Store      *jsstore.Store
	Vault      *vault.Vault
	Sandbox    *sandbox.Server // nil unless the sandbox provider runs
	Providers  map[string]*provider.Provider
	// DiscoveryRetry is the first delay between discovery attempts of a
	// provider that could not be discovered at start-up (default 1 s,
	// doubling to a minute). Tests shorten it.
	DiscoveryRetry time.Duration
	providerSpecs  []ProviderSpec
	probeCounter   *prometheus.CounterVec // providers_detect.go
	probeOwner     func(string) bool      // providers_detect.go (--probe-shard)
	Lifecycle      *lifecycle.Service
	Attempts       *vault.Attempts
	Proj           *Projections

	API       *httpapi.Server
	Metrics   *httpapi.Metrics
	registry  *prometheus.Registry
	integrity *integrity

	// Webhooks delivers events to HTTP receivers (webhooks.go).
	Webhooks *webhook.Manager

	HTTPListener net.Listener
	HTTPServer   *http.Server
	// BaseURL is the public base URL of the HTTP server.
	BaseURL string
	// APITokenPath is where the API token is (empty when it came from the
	// environment).
	APITokenPath string
	// Startup lists how long each start-up phase took, in order; the
	// webhooks open, and then the HTTP handler is built ("http"), beside
	// the projections' catch-up, so those overlap it.
	Startup  []Phase
	apiToken string
	// checkpointKey authenticates the projections' snapshots and positions.
	checkpointKey []byte

	cancel      context.CancelFunc
	wg          sync.WaitGroup
	schedCancel context.CancelFunc
	schedWG     sync.WaitGroup
	closed      sync.Once
}

// Phase is one step of start-up and how long it took.
type Phase struct {
	Name string
	Took time.Duration
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main { return &Main{Config: DefaultConfig()} }

func (m *Main) logger() *slog.Logger {
	out := m.LogOutput
	if out == nil {
		out = os.Stderr
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(m.Config.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if m.Config.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(out, opts))
	}
	return slog.New(slog.NewJSONHandler(out, opts))
}

// Run starts everything and returns once tokenline is serving. Close stops it.
func (m *Main) Run(ctx context.Context) (err error) {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	specs, err := m.Config.ProviderSpecs(os.LookupEnv)
	if err != nil {
		return err
	}
	if err := m.Config.ValidateLifetimes(specs); err != nil {
		return err
	}
	m.providerSpecs = specs
	if m.Logger == nil {
		m.Logger = m.logger()
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if m.Config.Instance == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		m.Config.Instance = hex.EncodeToString(b)
	}
	// Everything a flag names is read (or created where the flag says)
	// before the embedded NATS starts: a bad value starts nothing. The
	// data dir is written only once the flags were accepted.
	var key []byte
	if os.Getenv(vault.EnvKey) != "" || m.Config.VaultKeyFile != "" {
		if key, err = m.vaultKey(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if key == nil {
		if key, err = m.vaultKey(); err != nil {
			return err
		}
	}
	if err := m.loadAPIToken(); err != nil {
		return err
	}
	t0 := time.Now()
	phase := func(name string) {
		m.Startup = append(m.Startup, Phase{name, time.Since(t0)})
		t0 = time.Now()
	}
	defer func() {
		if err == nil {
			attrs := []any{}
			for _, p := range m.Startup {
				attrs = append(attrs, p.Name, p.Took.Round(time.Millisecond).String())
			}
			m.Logger.Info("tokenline ready", attrs...)
		}
	}()
	if err := m.openNATS(ctx); err != nil {
		return err
	}
	phase("nats")
	if m.FollowConn, err = m.connectNATS(ctx, "tokenline/"+m.Config.Instance+"/projections"); err != nil {
		return err
	}
	if m.Store, err = jsstore.Open(ctx, m.Conn, jsstore.Config{
		Replicas: m.Config.Replicas, Actor: "instance/" + m.Config.Instance, Logger: m.Logger,
		FollowConn: m.FollowConn,
		// The status projection already holds every aggregate, confirmed by
		// the stream: Load starts from it instead of keeping a second copy.
		Seed: func(id string) (domain.Connection, bool) {
			// Before the projections start (m.Proj set, nothing
			// restored) Status holds nothing: nothing is seeded.
			if m.Proj == nil {
				return domain.Connection{}, false
			}
			return m.Proj.Status.Confirmed(id)
		},
	}); err != nil {
		return err
	}
	phase("store")
	// The vault has a NATS connection of its own: a refresh reads it while
	// its lock is appended and writes it right before the outcome, and on
	// one connection each request waited for the other's (one reader on
	// each side: the server took the read's work inline before the append;
	// BenchmarkRefreshCycle, per-step probe).
	if m.VaultConn, err = m.connectNATS(ctx, "tokenline/"+m.Config.Instance+"/vault"); err != nil {
		return err
	}
	vjs, err := jetstream.New(m.VaultConn)
	if err != nil {
		return err
	}
	if m.Vault, err = vault.Open(ctx, vjs, vault.Config{Key: key, Replicas: m.Config.Replicas}); err != nil {
		return err
	}
	// Snapshots and positions are authenticated with a key derived from
	// the vault key: every instance sharing the vault trusts them.
	if m.checkpointKey, err = vault.DeriveKey(key, "tokenline checkpoints v1"); err != nil {
		return err
	}
	// Listen first: the sandbox and the redirect URL need the real address.
	if m.HTTPListener, err = net.Listen("tcp", m.Config.HTTPAddr); err != nil {
		return fmt.Errorf("http listen %s: %w", m.Config.HTTPAddr, err)
	}
	m.BaseURL = strings.TrimRight(m.Config.PublicURL, "/")
	m.BaseURL = cmp.Or(m.BaseURL, "http://"+m.HTTPListener.Addr().String())
	if err := m.openProviders(ctx); err != nil {
		return err
	}
	m.Proj = newProjections(m)
	if m.Attempts, err = vault.OpenAttempts(ctx, m.Store.JetStream(), key, m.attemptsTTL(), m.Config.Replicas); err != nil {
		return err
	}
	endpoints := map[string]domain.TokenEndpoint{}
	for name, p := range m.Providers {
		endpoints[name] = p
	}
	detection, probers, err := m.detectionConfig() // providers_detect.go
	if err != nil {
		return err
	}
	if m.Lifecycle, err = lifecycle.New(lifecycle.Config{
		Store: m.Store, Vault: m.Vault, Gate: m.Proj.Gate, Providers: endpoints, Attempts: m.Attempts,
		Instance: m.Config.Instance, Logger: m.Logger, Clock: m.Clock,
		MaxAttempts: m.Config.MaxAttempts, BackoffBase: m.Config.BackoffBase,
		Lease: m.Config.RefreshLease, Tick: m.Config.Tick, Concurrency: m.Config.Concurrency,
		AuthorisationTTL: m.Config.AuthorisationTTL, Margin: m.Config.Timing().Lead,
		// m.Metrics is set below, before the scheduler runs.
		ObserveLateness: func(job string, late time.Duration) { m.Metrics.ObserveLateness(job, late) },
		Detection:       detection, Probers: probers, ObserveProbe: m.probeObserver(), ProbeOwner: m.probeOwner,
	}); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.registry = prometheus.NewRegistry()
	if m.Metrics, err = httpapi.NewMetrics(m.registry, httpapi.MetricsConfig{
		Status: httpapi.StatusFromProjection{Status: m.Proj.Status}, Timing: m.Config.Timing(),
		ProjectionLag: func(ctx context.Context) (uint64, error) {
			if m.Proj.Runner == nil {
				return 0, errors.New("projections not started")
			}
			return m.Proj.Runner.Lag(ctx)
		},
	}); err != nil {
		return err
	}
	// The Go runtime and process collectors: heap (go_gc_heap_live_bytes is
	// the heap the last GC found live, i.e. in use after GC), CPU, RSS.
	if err := m.registry.Register(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}))); err != nil {
		return err
	}
	if err := m.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}
	if err := m.registerProviderMetrics(m.registry); err != nil {
		return err
	}
	if err := m.registerProbeMetric(m.registry); err != nil {
		return err
	}
	if err := m.startIntegrity(runCtx); err != nil {
		return err
	}
	phase("setup")
	// The scheduler follows the status projection as the gate does: it is
	// seeded when the catch-up completes, then told of every change.
	m.Proj.Status.OnChangeSeeded(m.Lifecycle.Observe, m.Lifecycle.Seed)
	// The webhooks open beside the projections' catch-up, and the HTTP
	// handler is built once they are: they wait on a few JetStream
	// requests while the catch-up is mostly CPU, and neither needs the
	// other (a delivery before the status is ready finds its connection's
	// provider with a Load; the handler serves only once Run is done).
	// Built after the catch-up, the handler paid for the garbage
	// collection its end brings (the collector back at its usual rate, the
	// heap over its goal: 26-94 ms of mark assists on 100k connections).
	// Each phase's time is its own.
	// The Runner exists before either starts: the handler reads it.
	if err := m.Proj.Open(runCtx, m.Metrics.ObserveEvent); err != nil {
		return err
	}
	var (
		whErr   error
		handler http.Handler
	)
	whDone := make(chan [2]time.Duration, 1)
	go func() {
		start := time.Now()
		whErr = m.openWebhooks(ctx, key) // webhooks.go
		opened := time.Now()
		if whErr == nil {
			handler = m.handler()
		}
		whDone <- [2]time.Duration{opened.Sub(start), time.Since(opened)}
	}()
	projErr := m.Proj.Start(runCtx)
	phase("projections")
	took := <-whDone
	if projErr != nil {
		return projErr
	}
	if whErr != nil {
		return whErr
	}
	m.Startup = append(m.Startup, Phase{"webhooks", took[0]}, Phase{"http", took[1]})
	t0 = time.Now()
	m.keepDiscovering(runCtx)
	schedCtx, schedCancel := context.WithCancel(runCtx)
	m.schedCancel = schedCancel
	m.schedWG.Add(1)
	go func() { defer m.schedWG.Done(); m.Lifecycle.Run(schedCtx) }()

	// No WriteTimeout: the audit export streams JSON Lines for as long as it
	// takes. Bodies are capped at 64 KiB and must arrive within ReadTimeout;
	// headers at 64 KiB (431), as `tokenline sandbox` does.
	m.HTTPServer = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn)} // its errors as JSON lines too
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.HTTPServer.Serve(m.HTTPListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("http server stopped", "error", err.Error())
		}
	}()
	return nil
}

func (m *Main) openNATS(ctx context.Context) error {
	var err error
	if m.Config.NATSURL == "" {
		m.NATS, err = natsserver.Start(ctx, natsserver.Config{DataDir: m.Config.DataDir, Listen: m.Config.NATSListen, Logger: m.Logger})
		if err != nil {
			return err
		}
	}
	m.Conn, err = m.connectNATS(ctx, "tokenline/"+m.Config.Instance)
	return err
}

// connectNATS opens a connection named name to the embedded server, or to
// the configured one with the configured credentials.
func (m *Main) connectNATS(ctx context.Context, name string) (*nats.Conn, error) {
	if m.Config.NATSURL == "" {
		return m.NATS.Connect(nats.Name(name))
	}
	return natsserver.Connect(ctx, m.Config.NATSURL, natsserver.ConnectOptions{
		CredsFile: m.Config.NATSCreds, TLSCert: m.Config.NATSTLSCert, TLSKey: m.Config.NATSTLSKey, TLSCA: m.Config.NATSTLSCA,
		Name: name, InboxPrefix: natsserver.InboxPrefix,
	})
}

// now returns the injected clock's Now, or nil for the default.
func (m *Main) now() func() time.Time {
	if m.Clock == nil {
		return nil
	}
	return m.Clock.Now
}

// NATSCredsFile is the credentials file of tokenline's own NATS identity:
// the embedded server's DataDir/nats-tokenline.nk, or --nats-creds (which
// may be empty) with an external NATS.
func (m *Main) NATSCredsFile() string {
	if m.NATS != nil {
		return m.NATS.TokenlineSeedPath()
	}
	return m.Config.NATSCreds
}

// NATSReaderFile is the nkey seed file of the embedded server's reader
// identity (DataDir/nats-reader.nk), for downstream consumers; empty with
// an external NATS, whose operator issues the readers' credentials.
func (m *Main) NATSReaderFile() string {
	if m.NATS != nil {
		return m.NATS.ReaderSeedPath()
	}
	return ""
}

// NATSURL is where other processes reach the NATS server tokenline uses.
func (m *Main) NATSURL() string {
	if m.NATS != nil {
		return m.NATS.ClientURL()
	}
	return m.Config.NATSURL
}

func (m *Main) vaultKey() ([]byte, error) {
	if v := os.Getenv(vault.EnvKey); v != "" {
		return vault.KeyFromEnv(v)
	}
	path := cmp.Or(m.Config.VaultKeyFile, filepath.Join(m.Config.DataDir, "vault.key"))
	return vault.LoadOrCreateKey(path)
}

func (m *Main) loadAPIToken() error {
	if v := os.Getenv("TOKENLINE_API_TOKEN"); v != "" {
		m.apiToken = v
		return nil
	}
	path := cmp.Or(m.Config.APITokenFile, filepath.Join(m.Config.DataDir, "api-token"))
	m.APITokenPath = path
	b, err := readAPITokenFile(path)
	if err == nil {
		m.apiToken = strings.TrimSpace(string(b))
		if m.apiToken == "" {
			return fmt.Errorf("api token file %s is empty", path)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api token: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	m.apiToken = "tl_" + hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(m.apiToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("api token: %w", err)
	}
	return nil
}

// readAPITokenFile reads the API token file, refusing one that is not a
// regular file or that group or others may access (as the vault key file).
func readAPITokenFile(path string) ([]byte, error) {
	return secretfile.Read(path, "api token file")
}

// attemptsTTL is how long the attempts bucket keeps an entry: a little
// more than an attempt lives.
func (m *Main) attemptsTTL() time.Duration { return m.Config.AuthorisationTTL + time.Hour }

// APIToken returns the bearer token of the /v1 API.
func (m *Main) APIToken() string { return m.apiToken }

// LoginLink returns a one-time link that signs a browser into the web UI
// (httpapi.Server.NewLoginLink) and when it expires. It is a secret: show
// it to the operator, never log it.
func (m *Main) LoginLink() (string, time.Time) { return m.API.NewLoginLink() }

// openProviders creates every configured provider (the in-process sandbox
// for the sandbox preset) and runs one discovery round, bounded by
// startupDiscovery. A provider that cannot be discovered does not stop
// start-up: it is unavailable, said so in the log, /readyz and GET
// /v1/providers, and keepDiscovering retries it.
func (m *Main) openProviders(ctx context.Context) error {
	c := m.Config
	redirect := m.BaseURL + "/oauth/callback"
	m.Providers = map[string]*provider.Provider{}
	var list []*provider.Provider
	for _, s := range m.providerSpecs {
		pc := s.providerConfig()
		pc.RedirectURL, pc.Now = redirect, m.now()
		switch s.Preset {
		case "sandbox":
			sb, err := sandbox.New(sandbox.Config{
				RedirectURIs: []string{redirect}, AccessTokenLifetime: c.SandboxAccessTTL,
				RefreshTokenLifetime: c.SandboxRefreshTTL, Consent: c.SandboxConsent,
				RefreshTokens: c.SandboxGrantMode, NonExpiringAccessTokens: c.SandboxAccessTTL == 0,
				Logger: m.Logger, Now: m.now(), // the sandbox adds component=sandbox
				// The admin endpoints take the /v1 API token.
				AdminToken: m.apiToken,
			})
			if err != nil {
				return err
			}
			sb.SetIssuer(m.BaseURL)
			m.Sandbox = sb
			pc.ClientID, pc.ClientSecret, pc.AuthStyle = sb.ClientID(), sb.ClientSecret(), provider.AuthBasic
			pc.Endpoints = provider.Endpoints{
				AuthURL:       m.BaseURL + "/sandbox/oauth/authorize",
				TokenURL:      m.BaseURL + "/sandbox/oauth/token",
				RevocationURL: m.BaseURL + "/sandbox/oauth/revoke",
				IntrospectURL: m.BaseURL + "/sandbox/oauth/token/introspect",
			}
		case "pleo", "pleo-staging":
			// Pleo registers exact redirect URIs: HTTPS, or plain HTTP only
			// for localhost. Say so now rather than at the user's first
			// consent.
			if err := checkRedirect(redirect); err != nil {
				return err
			}
		}
		p, err := provider.New(pc)
		if err != nil {
			return fmt.Errorf("%s: %w", s.where, err)
		}
		m.Providers[s.Name] = p
		list = append(list, p)
	}
	dctx, cancel := context.WithTimeout(ctx, startupDiscovery)
	defer cancel()
	errs := discoverAll(dctx, list)
	for _, p := range list {
		m.logProvider(p, errs[p.Name()])
	}
	return nil
}

// StopScheduler stops refreshing ahead of expiry and the other background
// jobs, and waits for the jobs in flight; the API keeps serving. Close calls
// it; tests call it to freeze the stream before comparing it with a provider.
func (m *Main) StopScheduler() {
	if m.schedCancel != nil {
		m.schedCancel()
	}
	m.schedWG.Wait()
}

// Close stops everything in reverse order. It is safe to call twice.
func (m *Main) Close() error {
	m.closed.Do(func() {
		if m.HTTPServer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = m.HTTPServer.Shutdown(ctx)
			cancel()
		} else if m.HTTPListener != nil {
			m.HTTPListener.Close()
		}
		m.StopScheduler()
		if m.Webhooks != nil { // webhooks: give held events back before NATS goes
			m.Webhooks.Close()
		}
		if m.cancel != nil {
			m.cancel()
		}
		m.wg.Wait()
		if m.Proj != nil {
			m.Proj.Close()
		}
		if m.Conn != nil {
			_ = m.Conn.Drain()
			m.Conn.Close()
		}
		for _, nc := range []*nats.Conn{m.FollowConn, m.VaultConn} {
			if nc != nil {
				_ = nc.Drain()
				nc.Close()
			}
		}
		if m.NATS != nil {
			m.NATS.Shutdown()
		}
	})
	return nil
}

func (m *Main) handler() http.Handler {
	cfg := httpapi.Config{
		Connections: providerGuard{Service: m.Lifecycle, m: m},
		Status:      httpapi.StatusFromProjection{Status: m.Proj.Status, Fallback: m.Store},
		Audit:       httpapi.StoreReader{Store: m.Store},
		Ready: []httpapi.Check{
			{Name: "nats", Probe: httpapi.NATSReady(m.Conn)},
			{Name: "projections", Probe: httpapi.ProjectionsReady(m.Proj.Runner.Ready, m.Proj.Runner.Lag, 1000)},
			m.shapeReady(),
		},
		SigningKey:        m.signingKeyInfo(),
		ProviderDirectory: providerDirectory{m},
		APIToken:          m.apiToken,
		MetricsPublic:     !m.Config.MetricsAuth,
		BaseURL:           m.BaseURL,
		Logger:            m.Logger,
		ProjectionLag:     m.Proj.Runner.Lag,
		Metrics:           m.Metrics,
		Registerer:        m.registry,
		Gatherer:          m.registry,
	}
	cfg.Ready = append(cfg.Ready, m.providerChecks()...)
	cfg.Ready = append(cfg.Ready, m.webhooksReady()) // webhooks
	cfg.Webhooks = webhookService{m.Webhooks}        // webhooks
	for _, s := range m.providerSpecs {
		cfg.Providers = append(cfg.Providers, s.Name)
	}
	if m.Sandbox != nil {
		cfg.Sandbox, cfg.SandboxMetadata = m.Sandbox.Handler(), m.Sandbox.MetadataHandler()
	}
	m.API = httpapi.New(cfg)
	return m.API.Handler()
}

// loopbackURL reports whether u's host is localhost or a loopback address.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkRedirect refuses a plain-HTTP redirect URI on a host other than
// localhost or a loopback address.
func checkRedirect(redirect string) error {
	u, err := url.Parse(redirect)
	if err != nil {
		return fmt.Errorf("redirect URI %q: %w", redirect, err)
	}
	if u.Scheme == "https" || loopbackURL(redirect) {
		return nil
	}
	return fmt.Errorf("redirect URI %s: the provider accepts plain HTTP only for localhost; set --public-url to the HTTPS address users reach tokenline at", redirect)
}
