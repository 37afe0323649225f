package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

// Environment variables read by `tokenline sandbox`.
const (
	// EnvSandboxClientSecret is the sandbox client's secret.
	EnvSandboxClientSecret = "TOKENLINE_SANDBOX_CLIENT_SECRET"
	// EnvAPIToken is tokenline's API token; the sandbox uses it as its
	// admin token.
	EnvAPIToken = "TOKENLINE_API_TOKEN"
)

// Files `tokenline sandbox` creates in its data directory when neither the
// environment nor a flag gives the secret or the token.
const (
	SandboxClientSecretFile = "sandbox-client-secret"
	SandboxAdminTokenFile   = "sandbox-admin-token"
)

// SandboxConfig is everything `tokenline sandbox` can be told.
type SandboxConfig struct {
	HTTPAddr         string
	PublicURL        string
	DataDir          string
	ClientID         string
	RedirectURIs     []string
	AccessTTL        time.Duration
	RefreshTTL       time.Duration
	Consent          string
	GrantMode        string // refresh-token mode: always, never, keep or scope:<scope>
	ClientSecretFile string
	APITokenFile     string
	MaxCodes         int
	MaxGrants        int
	LogLevel         string
	LogFormat        string
}

// DefaultSandboxConfig is the configuration of `tokenline sandbox` without
// flags (it still needs at least one --redirect-uri).
func DefaultSandboxConfig() SandboxConfig {
	return SandboxConfig{
		HTTPAddr:   "127.0.0.1:9096",
		DataDir:    "./tokenline-sandbox",
		ClientID:   sandbox.DefaultClientID,
		AccessTTL:  sandbox.DefaultAccessTokenLifetime,
		RefreshTTL: sandbox.DefaultRefreshTokenLifetime,
		Consent:    sandbox.ConsentPrompt,
		GrantMode:  sandbox.RefreshTokensAlways,
		MaxCodes:   sandbox.DefaultMaxCodes,
		MaxGrants:  sandbox.DefaultMaxGrants,
		LogLevel:   "info",
		LogFormat:  "json",
	}
}

// BindFlags registers the sandbox flags on fs.
func (c *SandboxConfig) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http", c.HTTPAddr, "listen address (port 0: random; the printed issuer has the real port)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "public base URL of --http; the issuer is <public-url>/sandbox (default http://<listen address>)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the generated client secret and admin token files")
	fs.StringVar(&c.ClientID, "client-id", c.ClientID, "the one registered OAuth client id")
	fs.StringArrayVar(&c.RedirectURIs, "redirect-uri", c.RedirectURIs, "registered redirect URI, matched exactly (repeat for each tokenline instance: <its public URL>/oauth/callback)")
	fs.DurationVar(&c.AccessTTL, "access-ttl", c.AccessTTL, "access token lifetime (1s to 8760h; 0s: access tokens without expiry, no expires_in)")
	fs.DurationVar(&c.RefreshTTL, "refresh-ttl", c.RefreshTTL, "refresh token lifetime")
	fs.StringVar(&c.Consent, "consent", c.Consent, "consent mode: prompt, approve or deny (changed at run time by POST /sandbox/admin/consent)")
	fs.StringVar(&c.GrantMode, "grant-mode", c.GrantMode, "which token responses carry a refresh token: always (rotated), never, keep (code exchange only, no rotation) or scope:<scope> (only grants with it, e.g. scope:offline_access) (changed at run time by POST /sandbox/admin/grant-mode)")
	fs.StringVar(&c.ClientSecretFile, "client-secret-file", c.ClientSecretFile, "file holding the client secret ("+EnvSandboxClientSecret+" wins; with neither, <data-dir>/"+SandboxClientSecretFile+", generated 0600 if missing)")
	fs.StringVar(&c.APITokenFile, "api-token-file", c.APITokenFile, "file holding the admin token for /sandbox/admin/ ("+EnvAPIToken+" wins; with neither, <data-dir>/"+SandboxAdminTokenFile+", generated 0600 if missing)")
	fs.IntVar(&c.MaxCodes, "max-codes", c.MaxCodes, "authorisation codes held at once (unexpired, used or not); beyond, authorisations are redirected with error=temporarily_unavailable until codes expire (10 min)")
	fs.IntVar(&c.MaxGrants, "max-grants", c.MaxGrants, "grants held at once (each until its last token expires); beyond, authorisations are redirected with error=temporarily_unavailable")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or text (logs go to stderr)")
}

// Validate checks the flags that the sandbox itself does not.
func (c *SandboxConfig) Validate() error {
	if len(c.RedirectURIs) == 0 {
		return errors.New("--redirect-uri is required (repeat it for each tokenline instance: <public URL>/oauth/callback)")
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if err := validateSandboxGrant("--grant-mode", c.GrantMode, "--access-ttl", c.AccessTTL); err != nil {
		return err
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("--log-format %q: want json or text", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// SandboxMain is a running standalone sandbox provider: the same server
// `tokenline serve` embeds, in its own process, so that several tokenline
// instances can share one provider as they would share Pleo.
type SandboxMain struct {
	Config    SandboxConfig
	LogOutput io.Writer // default os.Stderr
	// Now is the sandbox's clock (default time.Now).
	Now func() time.Time

	Server   *sandbox.Server
	Listener net.Listener
	HTTP     *http.Server
	// BaseURL is the public base URL; Issuer is BaseURL + "/sandbox".
	BaseURL, Issuer string
	// ClientSecretPath and AdminTokenPath are where the secret and the
	// token are, empty when they came from the environment.
	ClientSecretPath, AdminTokenPath string

	logger *slog.Logger
	wg     sync.WaitGroup
	closed sync.Once
}

// NewSandboxMain returns a SandboxMain with the default configuration.
func NewSandboxMain() *SandboxMain { return &SandboxMain{Config: DefaultSandboxConfig()} }

// Run validates the configuration, loads or creates the client secret and
// the admin token, listens and starts serving. It returns once the listener
// is bound; Close stops the server.
func (s *SandboxMain) Run(_ context.Context) (err error) {
	c := s.Config
	if err := c.Validate(); err != nil {
		return err
	}
	out := cmp.Or[io.Writer](s.LogOutput, os.Stderr)
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "text" {
		s.logger = slog.New(slog.NewTextHandler(out, opts))
	} else {
		s.logger = slog.New(slog.NewJSONHandler(out, opts))
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Absolute, so that the printed file paths work from any directory.
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	secret, secretPath, err := loadOrCreateSecret(os.Getenv(EnvSandboxClientSecret), c.ClientSecretFile, filepath.Join(dataDir, SandboxClientSecretFile), "client secret")
	if err != nil {
		return err
	}
	adminToken, tokenPath, err := loadOrCreateSecret(os.Getenv(EnvAPIToken), c.APITokenFile, filepath.Join(dataDir, SandboxAdminTokenFile), "admin token")
	if err != nil {
		return err
	}
	s.ClientSecretPath, s.AdminTokenPath = secretPath, tokenPath
	if s.Server, err = sandbox.New(sandbox.Config{
		ClientID: c.ClientID, ClientSecret: secret, RedirectURIs: c.RedirectURIs,
		AccessTokenLifetime: c.AccessTTL, RefreshTokenLifetime: c.RefreshTTL, Consent: c.Consent,
		RefreshTokens: c.GrantMode, NonExpiringAccessTokens: c.AccessTTL == 0,
		AdminToken: adminToken, MaxCodes: c.MaxCodes, MaxGrants: c.MaxGrants,
		Now: s.Now, Logger: s.logger,
	}); err != nil {
		return err
	}
	if s.Listener, err = net.Listen("tcp", c.HTTPAddr); err != nil {
		return fmt.Errorf("http listen %s: %w", c.HTTPAddr, err)
	}
	s.BaseURL = cmp.Or(strings.TrimRight(c.PublicURL, "/"), "http://"+s.Listener.Addr().String())
	s.Server.SetIssuer(s.BaseURL)
	s.Issuer = s.BaseURL + strings.TrimSuffix(sandbox.PathPrefix, "/")

	mux := http.NewServeMux()
	mux.Handle(sandbox.PathPrefix, s.Server.Handler())
	// RFC 8414 section 3: the well-known segment goes before the issuer's
	// path. This is the first URL tokenline's discovery tries.
	mux.Handle("GET /.well-known/oauth-authorization-server/sandbox", s.Server.MetadataHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	s.HTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.HTTP.Serve(s.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "error", err.Error())
		}
	}()
	s.logger.Info("sandbox ready", "issuer", s.Issuer, "client_id", c.ClientID, "redirect_uris", c.RedirectURIs)
	return nil
}

// DiscoveryURL is the RFC 8414 metadata URL for the issuer.
func (s *SandboxMain) DiscoveryURL() string {
	return s.BaseURL + "/.well-known/oauth-authorization-server/sandbox"
}

// Facts are what `tokenline sandbox` prints on start, one JSON object per
// line, each with exactly one key. Secrets are never printed: only where
// they are.
func (s *SandboxMain) Facts() []map[string]any {
	secret := any(s.ClientSecretPath)
	secretKey := "client_secret_file"
	if s.ClientSecretPath == "" {
		secretKey, secret = "client_secret_env", EnvSandboxClientSecret
	}
	token := any(s.AdminTokenPath)
	tokenKey := "admin_token_file"
	if s.AdminTokenPath == "" {
		tokenKey, token = "admin_token_env", EnvAPIToken
	}
	return []map[string]any{
		{"issuer": s.Issuer},
		{"discovery_url": s.DiscoveryURL()},
		{"client_id": s.Server.ClientID()},
		{secretKey: secret},
		{tokenKey: token},
		{"redirect_uris": s.Config.RedirectURIs},
		{"admin_url": s.Issuer + "/admin/"},
		{"stats_url": s.Issuer + "/admin/stats"},
		{"state": "memory"},
		{"ready": true},
	}
}

// Close stops serving: new connections are refused at once and requests in
// flight get up to five seconds to finish. It is safe to call twice.
func (s *SandboxMain) Close() error {
	s.closed.Do(func() {
		if s.HTTP != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.HTTP.Shutdown(ctx)
			cancel()
		} else if s.Listener != nil {
			s.Listener.Close()
		}
		s.wg.Wait()
	})
	return nil
}

// loadOrCreateSecret returns the value from the environment if set (path
// ""), else the content of file if given (it must exist and not be empty),
// else the content of def, creating def (0600) with a random value when it
// does not exist.
func loadOrCreateSecret(env, file, def, what string) (value, path string, err error) {
	if env != "" {
		return env, "", nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", what, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", "", fmt.Errorf("%s file %s is empty", what, file)
		}
		abs, err := filepath.Abs(file)
		return v, abs, err
	}
	b, err := os.ReadFile(def)
	if err == nil {
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", "", fmt.Errorf("%s file %s is empty", what, def)
		}
		return v, def, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	v := hex.EncodeToString(raw)
	f, err := os.OpenFile(def, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	return v, def, nil
}

const sandboxLong = `Run the sandbox OAuth 2.0 provider (the fosite server that plays Pleo, the one
'tokenline serve' embeds by default) as its own process, so that several tokenline
instances share one provider the way they share Pleo. It serves the same routes
as the embedded sandbox: /sandbox/oauth/{authorize,token,revoke,token/introspect},
/sandbox/api/me, RFC 8414 metadata at /.well-known/oauth-authorization-server/sandbox
(and /sandbox/.well-known/oauth-authorization-server), and the admin API under
/sandbox/admin/ (stats, reset-stats, faults, consent, grant-mode, api-mode,
revoke-grants, rotate-client-secret, expire-refresh-tokens), which needs
"Authorization: Bearer <admin token>".

Secrets: the client secret comes from $TOKENLINE_SANDBOX_CLIENT_SECRET, else
--client-secret-file, else <data-dir>/sandbox-client-secret (created 0600 with a
random value if missing). The admin token comes from $TOKENLINE_API_TOKEN, else
--api-token-file, else <data-dir>/sandbox-admin-token (same rule). Give the sandbox
the instances' API token and one token drives both.

On start it prints one JSON object per line on stdout, each with one key, in
this order: issuer, discovery_url, client_id, client_secret_file (or
client_secret_env), admin_token_file (or admin_token_env), redirect_uris,
admin_url, stats_url, state ("memory"), ready (true). Logs go to stderr.

Grants, authorisation codes and refresh-token families live in memory only: a
restart forgets every token, so connections go unauthenticated (invalid_grant)
at their next refresh. SIGINT or SIGTERM stops it gracefully.

Connect a tokenline instance with:

  TOKENLINE_CLIENT_SECRET=$(cat <data-dir>/sandbox-client-secret) \
    tokenline serve --provider custom --provider-name sandbox \
      --issuer <printed issuer> --client-id <client id>`

const sandboxExample = `  tokenline sandbox --http 127.0.0.1:9096 --consent approve --data-dir ./sandbox-data \
    --redirect-uri http://127.0.0.1:8080/oauth/callback \
    --redirect-uri http://127.0.0.1:8081/oauth/callback`

func newSandboxCommand(ctx context.Context) *cobra.Command {
	s := NewSandboxMain()
	cmd := &cobra.Command{
		Use:     "sandbox",
		Short:   "Run the sandbox OAuth provider on its own, shared by several tokenline instances",
		Long:    sandboxLong,
		Example: sandboxExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.LogOutput == nil {
				s.LogOutput = cmd.ErrOrStderr()
			}
			if err := s.Run(ctx); err != nil {
				return err
			}
			defer s.Close()
			enc := json.NewEncoder(cmd.OutOrStdout())
			for _, f := range s.Facts() {
				if err := enc.Encode(f); err != nil {
					return err
				}
			}
			<-ctx.Done()
			s.logger.Info("shutting down")
			return nil
		},
	}
	s.Config.BindFlags(cmd.Flags())
	return cmd
}
