package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// Config is everything `tokenline serve` can be told. Every flag is also an
// environment variable TOKENLINE_<NAME> (upper case, dashes as underscores);
// a flag given on the command line wins over the environment.
type Config struct {
	DataDir                            string
	NATSURL                            string
	NATSCreds                          string
	NATSTLSCert, NATSTLSKey, NATSTLSCA string
	NATSListen                         string
	HTTPAddr                           string
	PublicURL                          string
	Replicas                           int
	Instance                           string
	LogLevel                           string
	LogFormat                          string

	// ProvidersFile declares every provider (providers.go); without it the
	// single-provider flags below declare one.
	ProvidersFile string
	// Provider: "sandbox" (default: the in-process sandbox), "pleo",
	// "pleo-staging" or "custom" (endpoints by flag or RFC 8414 discovery).
	Provider      string
	ProviderName  string
	ClientID      string
	ClientSecret  string
	AuthURL       string
	TokenURL      string
	RevocationURL string
	Issuer        string
	AuthStyle     string

	VaultKeyFile string
	APITokenFile string
	// MetricsAuth makes GET /metrics require the API token (default on).
	MetricsAuth bool
	// SigningKeyFile holds the seed of the Ed25519 key that signs the
	// checkpoints; CheckpointInterval is how often they are written.
	SigningKeyFile     string
	CheckpointInterval time.Duration

	// SandboxAccessTTL is the sandbox's access-token lifetime; 0: tokens
	// without expiry (no expires_in).
	SandboxAccessTTL  time.Duration
	SandboxRefreshTTL time.Duration
	SandboxConsent    string
	// SandboxGrantMode is the sandbox's refresh-token mode
	// (sandbox.Config.RefreshTokens): always, never, keep or scope:<scope>.
	SandboxGrantMode string

	MaxAttempts      int
	BackoffBase      time.Duration
	RefreshLease     time.Duration
	Tick             time.Duration
	Concurrency      int
	SnapshotEvery    int
	AuthorisationTTL time.Duration
	GateExpiryMargin time.Duration
	// RefreshLatency is the expected time from a refresh's planned start to
	// the fresh token in the gate; with GateExpiryMargin it sets the refresh
	// lead time (domain.TokenTiming, docs/transitions.md "Token lifetimes").
	RefreshLatency time.Duration

	// ProbeShard is this instance's share of the probes, "INDEX/COUNT"
	// (providers_detect.go); empty: every connection.
	ProbeShard string

	// Webhooks configures webhook delivery (webhooks.go).
	Webhooks WebhooksConfig
}

// DefaultConfig is the embedded default: local JetStream, sandbox provider.
func DefaultConfig() Config {
	return Config{
		DataDir:            "./tokenline-data",
		NATSListen:         "127.0.0.1:4222",
		HTTPAddr:           "127.0.0.1:8080",
		Replicas:           1,
		LogLevel:           "info",
		LogFormat:          "json",
		Provider:           "sandbox",
		AuthStyle:          "basic",
		SandboxAccessTTL:   15 * time.Minute,
		SandboxRefreshTTL:  60 * 24 * time.Hour,
		SandboxConsent:     "prompt",
		SandboxGrantMode:   sandbox.RefreshTokensAlways,
		MaxAttempts:        5,
		BackoffBase:        time.Second,
		RefreshLease:       30 * time.Second,
		Tick:               250 * time.Millisecond,
		Concurrency:        16,
		SnapshotEvery:      10000,
		AuthorisationTTL:   10 * time.Minute,
		GateExpiryMargin:   domain.DefaultMaxGateMargin,
		RefreshLatency:     domain.DefaultRefreshLatency,
		MetricsAuth:        true,
		CheckpointInterval: 30 * time.Second,
		Webhooks:           defaultWebhooksConfig(),
	}
}

// BindFlags registers the serve flags on fs.
func (c *Config) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory (embedded JetStream store, vault key, API token)")
	fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "external NATS URL; empty runs the embedded server")
	fs.StringVar(&c.NATSCreds, "nats-creds", c.NATSCreds, "NATS credentials for --nats-url: a .creds file or a user nkey seed file")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", c.NATSTLSCert, "client certificate for --nats-url")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", c.NATSTLSKey, "client key for --nats-url")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", c.NATSTLSCA, "CA bundle for --nats-url")
	fs.StringVar(&c.NATSListen, "nats-listen", c.NATSListen, "embedded NATS client listen address (port 0: random); clients authenticate with the nkey seeds in --data-dir")
	fs.StringVar(&c.HTTPAddr, "http", c.HTTPAddr, "HTTP listen address (UI, API, OAuth callback, sandbox)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "public base URL of the HTTP address (default http://<http>)")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "stream and bucket replicas (1, or 3 on a cluster)")
	fs.StringVar(&c.Instance, "instance", c.Instance, "instance name written on events (default: random)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or text")
	fs.StringVar(&c.ProvidersFile, "providers", c.ProvidersFile, "providers file (YAML): any number of providers, presets or custom, secrets by reference (see docs/operations.md, Providers); excludes --provider and the other single-provider flags")
	fs.StringVar(&c.Provider, "provider", c.Provider, "sandbox, pleo, pleo-staging or custom (one provider; see also --providers)")
	fs.StringVar(&c.ProviderName, "provider-name", c.ProviderName, "name connections use for the provider (default: --provider)")
	fs.StringVar(&c.ClientID, "client-id", c.ClientID, "OAuth client id")
	fs.StringVar(&c.ClientSecret, "client-secret", c.ClientSecret, "OAuth client secret (prefer TOKENLINE_CLIENT_SECRET)")
	fs.StringVar(&c.AuthURL, "auth-url", c.AuthURL, "authorization endpoint (custom provider)")
	fs.StringVar(&c.TokenURL, "token-url", c.TokenURL, "token endpoint (custom provider)")
	fs.StringVar(&c.RevocationURL, "revocation-url", c.RevocationURL, "RFC 7009 revocation endpoint (optional; wins over a discovered one)")
	fs.StringVar(&c.Issuer, "issuer", c.Issuer, "issuer URL for RFC 8414 / OpenID discovery (custom provider; the metadata's issuer must be identical; explicit endpoint flags win)")
	fs.StringVar(&c.AuthStyle, "auth-style", c.AuthStyle, "client authentication: basic (client_secret_basic), post (client_secret_post) or none (public client: PKCE, no secret)")
	fs.StringVar(&c.VaultKeyFile, "vault-key-file", c.VaultKeyFile, "vault key file (default <data-dir>/vault.key; TOKENLINE_VAULT_KEY overrides)")
	fs.StringVar(&c.APITokenFile, "api-token-file", c.APITokenFile, "API token file (default <data-dir>/api-token, mode 0600; TOKENLINE_API_TOKEN overrides)")
	fs.BoolVar(&c.MetricsAuth, "metrics-auth", c.MetricsAuth, "GET /metrics requires the API token (--metrics-auth=false: open to anyone who reaches --http)")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", c.SigningKeyFile, "checkpoint signing key file (default <data-dir>/signing.key; TOKENLINE_SIGNING_KEY overrides; share it between instances)")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", c.CheckpointInterval, "how often a signed checkpoint of the hash chains is written (1s to 24h)")
	fs.DurationVar(&c.SandboxAccessTTL, "sandbox-access-ttl", c.SandboxAccessTTL, "sandbox access token lifetime (1s to 8760h; 0s: access tokens without expiry, no expires_in)")
	fs.DurationVar(&c.SandboxRefreshTTL, "sandbox-refresh-ttl", c.SandboxRefreshTTL, "sandbox refresh token lifetime")
	fs.StringVar(&c.SandboxConsent, "sandbox-consent", c.SandboxConsent, "sandbox consent: prompt, approve or deny")
	fs.StringVar(&c.SandboxGrantMode, "sandbox-grant-mode", c.SandboxGrantMode, "which sandbox token responses carry a refresh token: always (rotated), never, keep (code exchange only, no rotation) or scope:<scope> (only grants with it, e.g. scope:offline_access); changed at run time by POST /sandbox/admin/grant-mode")
	fs.IntVar(&c.MaxAttempts, "max-attempts", c.MaxAttempts, "transient refresh failures before refresh_retries_exhausted")
	fs.DurationVar(&c.BackoffBase, "backoff-base", c.BackoffBase, "first backoff after a transient refresh failure")
	fs.DurationVar(&c.RefreshLease, "refresh-lease", c.RefreshLease, "refresh lock lease: a live refresher extends it at half; another instance recovers it this long after its end")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "longest the scheduler sleeps between looks at its queue (it also wakes at the next due time)")
	fs.StringVar(&c.ProbeShard, "probe-shard", c.ProbeShard, "this instance's share of the probes (providers file, probe:) as INDEX/COUNT, e.g. 0/3 on the first of three instances; default: it probes every connection")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "refreshes in flight per instance; with the measured refresh duration it sets how many refreshes a second the scheduler plans before it spreads them earlier")
	fs.IntVar(&c.SnapshotEvery, "snapshot-every", c.SnapshotEvery, "events between snapshots of the status projection, at least half as many as there are connections (a snapshot writes every connection); also every minute when events arrived, and on shutdown")
	fs.DurationVar(&c.GateExpiryMargin, "gate-expiry-margin", c.GateExpiryMargin, "at most this long before it expires an access token stops being handed out (a token living L stops min(this, L/10) before; docs/transitions.md, Token lifetimes)")
	fs.DurationVar(&c.RefreshLatency, "refresh-latency", c.RefreshLatency, "expected time a refresh takes, start to fresh token; refreshes start at least gate margin + 1.5 × this before expiry (docs/transitions.md, Token lifetimes)")
	fs.DurationVar(&c.AuthorisationTTL, "authorisation-ttl", c.AuthorisationTTL, "how long an authorisation attempt (state) lives")
	c.Webhooks.bindFlags(fs)
}

// ApplyEnv sets every flag not given on the command line from
// TOKENLINE_<NAME>.
func ApplyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := "TOKENLINE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookup(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	})
	return err
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	if err := c.validateValues(); err != nil { // config_validate.go
		return err
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		return fmt.Errorf("--replicas must be 1, 3 or 5")
	}
	if c.CheckpointInterval < time.Second || c.CheckpointInterval > 24*time.Hour {
		return fmt.Errorf("--checkpoint-interval %s: want 1s to 24h", c.CheckpointInterval)
	}
	if c.GateExpiryMargin < 10*projections.ClockResolution || c.GateExpiryMargin > time.Hour {
		return fmt.Errorf("--gate-expiry-margin must be between %s and 1h", 10*projections.ClockResolution)
	}
	if c.RefreshLatency < time.Millisecond || c.RefreshLatency > 10*time.Minute {
		return fmt.Errorf("--refresh-latency must be between 1ms and 10m")
	}
	if err := validateSandboxGrant("--sandbox-grant-mode", c.SandboxGrantMode, "--sandbox-access-ttl", c.SandboxAccessTTL); err != nil {
		return err
	}
	return c.validateProviderFlags()
}

// validateSandboxGrant checks a sandbox's refresh-token mode and access-token
// lifetime flags (serve's --sandbox-*, the sandbox command's) before
// anything starts.
func validateSandboxGrant(modeFlag, mode, ttlFlag string, ttl time.Duration) error {
	if mode == "" { // a Config not made by DefaultConfig: the sandbox's default
		mode = sandbox.RefreshTokensAlways
	}
	if err := sandbox.ValidateRefreshTokens(mode, nil); err != nil {
		return fmt.Errorf("%s: %w", modeFlag, err)
	}
	if ttl != 0 && (ttl < time.Second || ttl > sandbox.MaxAccessTTL) {
		return fmt.Errorf("%s %s: want 0s (access tokens without expiry) or from 1s to %s", ttlFlag, ttl, sandbox.MaxAccessTTL)
	}
	return nil
}

// Timing is the token-timing rule these settings make: the gate margin
// and the refresh lead time for every lifetime.
func (c *Config) Timing() domain.TokenTiming {
	return domain.TokenTiming{MaxGateMargin: c.GateExpiryMargin, RefreshLatency: c.RefreshLatency}
}

// knownAccessTTL is the access-token lifetime of a preset provider whose
// lifetime is documented (Pleo: 15 minutes); the sandbox's is
// --sandbox-access-ttl.
var knownAccessTTL = map[string]time.Duration{"pleo": 15 * time.Minute, "pleo-staging": 15 * time.Minute}

// ValidateLifetimes checks the token-timing rule (domain.TokenTiming) for
// every provider whose access-token lifetime is known: the sandbox's
// (--sandbox-access-ttl) and the presets'. A provider whose lifetime is
// only learnt from its token responses is not checked here; tokens shorter
// than Timing().MinLifetime() get a refresh lead of at most their whole life.
func (c *Config) ValidateLifetimes(specs []ProviderSpec) error {
	t := c.Timing()
	for _, s := range specs {
		life, flag := knownAccessTTL[s.Preset], ""
		if s.Preset == "sandbox" {
			life, flag = c.SandboxAccessTTL, "--sandbox-access-ttl "+c.SandboxAccessTTL.String()+", "
		}
		if err := t.Check(life); err != nil {
			return fmt.Errorf("provider %s (%s--gate-expiry-margin %s, --refresh-latency %s): %w", s.Name, flag, c.GateExpiryMargin, c.RefreshLatency, err)
		}
	}
	return nil
}

// validateProviderFlags checks the single-provider flags (ProviderSpecs
// checks the providers file, and that no provider flag is set with it).
func (c *Config) validateProviderFlags() error {
	if c.ProvidersFile != "" {
		return nil
	}
	switch c.Provider {
	case "sandbox":
	case "pleo", "pleo-staging":
		if c.ClientID == "" || c.ClientSecret == "" {
			return fmt.Errorf("--provider %s needs --client-id and TOKENLINE_CLIENT_SECRET", c.Provider)
		}
	case "custom":
		if c.ClientID == "" {
			return fmt.Errorf("--provider custom needs --client-id")
		}
		if c.Issuer == "" && (c.AuthURL == "" || c.TokenURL == "") {
			return fmt.Errorf("--provider custom needs --issuer (discovery) or --auth-url and --token-url")
		}
	default:
		return fmt.Errorf("--provider %q: want sandbox, pleo, pleo-staging or custom", c.Provider)
	}
	return nil
}
