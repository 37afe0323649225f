package app

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tokenline/tokenline/adapters/provider"
)

// The providers file (--providers FILE) declares any number of providers.
// It is YAML (a JSON document is YAML too):
//
//	providers:
//	  - name: pleo                        # what connections name
//	    preset: pleo                      # pleo, pleo-staging or sandbox
//	    client_id: my-client
//	    client_secret_env: PLEO_CLIENT_SECRET
//	  - name: acme
//	    issuer: https://id.acme.example   # RFC 8414 / OpenID discovery
//	    revocation_url: https://id.acme.example/revoke   # explicit wins
//	    client_id: tokenline
//	    client_secret_file: /run/secrets/acme
//	    client_auth: client_secret_post
//	    scopes: [openid, offline_access]
//	    authorize_params: {prompt: consent}
//	    detection: [{status: 403}]        # providers_detect.go
//	    probe: {introspection: true, every: 5m}
//
// Secrets are never written inline: client_secret is refused.

// ProviderSpec is one provider of the providers file (or of the
// single-provider flags).
type ProviderSpec struct {
	Name             string            `yaml:"name"`
	Preset           string            `yaml:"preset"`
	Issuer           string            `yaml:"issuer"`
	AuthorizationURL string            `yaml:"authorization_url"`
	TokenURL         string            `yaml:"token_url"`
	RevocationURL    string            `yaml:"revocation_url"`
	IntrospectionURL string            `yaml:"introspection_url"`
	ClientID         string            `yaml:"client_id"`
	ClientSecret     string            `yaml:"client_secret"` // refused: secrets by reference only
	ClientSecretEnv  string            `yaml:"client_secret_env"`
	ClientSecretFile string            `yaml:"client_secret_file"`
	ClientAuth       string            `yaml:"client_auth"`
	Scopes           []string          `yaml:"scopes"`
	AuthorizeParams  map[string]string `yaml:"authorize_params"`
	// Detection and Probe: providers_detect.go.
	Detection []DetectionRuleSpec `yaml:"detection"`
	Probe     *ProbeSpec          `yaml:"probe"`

	// secret is the resolved client secret (never printed).
	secret string
	// where names the entry in errors: "providers[1] (acme)" or "flags".
	where string
}

// Kind is the preset, or "custom".
func (s ProviderSpec) Kind() string { return cmp.Or(s.Preset, "custom") }

// providersFile is the document of --providers.
type providersFile struct {
	Providers []ProviderSpec `yaml:"providers"`
}

// Limits of the providers file.
const (
	maxProvidersFile = 1 << 20
	maxProviders     = 100
)

// providerName is the shape of a provider name: it appears in URL paths
// (/v1/providers/{name}/client-secret) and in events.
var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// presets are the known providers of the file's preset field.
var presets = []string{"pleo", "pleo-staging", "sandbox"}

// LoadProvidersFile reads and checks a providers file, resolving each
// secret reference with lookupEnv (environment) or from its file. Every
// error names the file and the field.
func LoadProvidersFile(path string, lookupEnv func(string) (string, bool)) ([]ProviderSpec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--providers: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProvidersFile+1))
	if err != nil {
		return nil, fmt.Errorf("--providers %s: %w", path, err)
	}
	if len(b) > maxProvidersFile {
		return nil, fmt.Errorf("--providers %s: the file is larger than %d bytes", path, maxProvidersFile)
	}
	specs, err := parseProviders(b, lookupEnv)
	if err != nil {
		return nil, fmt.Errorf("--providers %s: %w", path, err)
	}
	return specs, nil
}

// parseProviders decodes and checks a providers document.
func parseProviders(b []byte, lookupEnv func(string) (string, bool)) ([]ProviderSpec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var doc providersFile
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty; it needs a providers: list")
		}
		return nil, fmt.Errorf("not a valid providers file: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document; write one providers: list")
	}
	if len(doc.Providers) == 0 {
		return nil, errors.New("providers: the list is empty; declare at least one provider")
	}
	if len(doc.Providers) > maxProviders {
		return nil, fmt.Errorf("providers: %d providers, at most %d", len(doc.Providers), maxProviders)
	}
	seen := map[string]int{}
	sandboxes := 0
	for i := range doc.Providers {
		s := &doc.Providers[i]
		if s.Name == "" && s.Preset != "" {
			s.Name = s.Preset
		}
		s.where = fmt.Sprintf("providers[%d]", i)
		if s.Name != "" {
			s.where += " (" + s.Name + ")"
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			return nil, fmt.Errorf("providers[%d].name %q: already used by providers[%d]; names must be unique", i, s.Name, j)
		}
		seen[s.Name] = i
		if s.Preset == "sandbox" {
			if sandboxes++; sandboxes > 1 {
				return nil, fmt.Errorf("%s.preset: only one provider may use the in-process sandbox", s.where)
			}
		}
		if err := s.check(lookupEnv, true); err != nil {
			return nil, err
		}
	}
	return doc.Providers, nil
}

// check validates the spec and resolves its secret. fromFile refuses an
// inline client_secret (the flags take one from TOKENLINE_CLIENT_SECRET).
func (s *ProviderSpec) check(lookupEnv func(string) (string, bool), fromFile bool) error {
	w := s.where
	field := func(f string) string {
		if fromFile {
			return w + "." + f
		}
		return flagFor[f]
	}
	if s.Name == "" {
		return fmt.Errorf("%s: name is required (what connections call the provider)", field("name"))
	}
	if !providerName.MatchString(s.Name) {
		return fmt.Errorf("%s %q: a name is 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", field("name"), s.Name)
	}
	if s.Preset != "" && !slices.Contains(presets, s.Preset) {
		return fmt.Errorf("%s %q: unknown preset; want %s (or no preset for a custom provider)", field("preset"), s.Preset, strings.Join(presets, ", "))
	}
	if s.Preset != "" {
		for f, v := range map[string]string{"issuer": s.Issuer, "authorization_url": s.AuthorizationURL, "token_url": s.TokenURL,
			"revocation_url": s.RevocationURL, "introspection_url": s.IntrospectionURL} {
			if v != "" {
				return fmt.Errorf("%s: preset %s has fixed endpoints; leave out the preset to configure a custom provider", field(f), s.Preset)
			}
		}
	} else {
		if s.Issuer == "" && (s.AuthorizationURL == "" || s.TokenURL == "") {
			missing := "authorization_url and token_url"
			if s.AuthorizationURL != "" {
				missing = "token_url"
			} else if s.TokenURL != "" {
				missing = "authorization_url"
			}
			return fmt.Errorf("%s: a custom provider needs issuer (discovery) or explicit endpoints; %s missing", w, missing)
		}
		if s.Issuer != "" {
			if err := provider.CheckIssuer(s.Issuer); err != nil {
				return fmt.Errorf("%s: %w", field("issuer"), err)
			}
		}
		for f, v := range map[string]string{"authorization_url": s.AuthorizationURL, "token_url": s.TokenURL,
			"revocation_url": s.RevocationURL, "introspection_url": s.IntrospectionURL} {
			if v != "" && !absoluteHTTPURL(v) {
				return fmt.Errorf("%s %q: not an absolute http(s) URL", field(f), v)
			}
		}
	}
	for _, sc := range s.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n\"\\") {
			return fmt.Errorf("%s: scope %q is empty or has spaces, quotes or backslashes", field("scopes"), sc)
		}
	}
	for k := range s.AuthorizeParams {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool {
			return !(r == '.' || r == '_' || r == '~' || r == ':' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			return fmt.Errorf("%s: parameter name %q: use letters, digits and ._~:-", field("authorize_params"), k)
		}
	}
	if err := s.checkDetection(); err != nil {
		return err
	}
	if s.Preset == "sandbox" {
		if s.ClientID != "" || s.ClientSecret != "" || s.ClientSecretEnv != "" || s.ClientSecretFile != "" || s.ClientAuth != "" {
			return fmt.Errorf("%s: the sandbox preset uses the in-process sandbox's own client; leave out client_id, client_secret_* and client_auth", w)
		}
		return nil
	}
	if s.ClientID == "" {
		return fmt.Errorf("%s: client_id is required", field("client_id"))
	}
	auth, err := provider.ParseAuthMethod(s.ClientAuth)
	if err != nil {
		return fmt.Errorf("%s: %w", field("client_auth"), err)
	}
	s.ClientAuth = auth
	if fromFile && s.ClientSecret != "" {
		return fmt.Errorf("%s: an inline secret is not accepted; name an environment variable (client_secret_env) or a file (client_secret_file)", field("client_secret"))
	}
	if s.ClientSecretEnv != "" && s.ClientSecretFile != "" {
		return fmt.Errorf("%s: give client_secret_env or client_secret_file, not both", w)
	}
	switch {
	case s.ClientSecretEnv != "":
		v, ok := lookupEnv(s.ClientSecretEnv)
		if !ok || v == "" {
			return fmt.Errorf("%s: environment variable %s is not set or empty", field("client_secret_env"), s.ClientSecretEnv)
		}
		s.secret = v
	case s.ClientSecretFile != "":
		b, err := os.ReadFile(s.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("%s: %w", field("client_secret_file"), err)
		}
		s.secret = strings.TrimRight(string(b), "\r\n")
		if s.secret == "" {
			return fmt.Errorf("%s: %s is empty", field("client_secret_file"), s.ClientSecretFile)
		}
	case !fromFile:
		s.secret = s.ClientSecret
	}
	if len(s.secret) > 1024 {
		return fmt.Errorf("%s: the client secret is longer than 1024 bytes", w)
	}
	switch {
	case auth == provider.AuthNone && s.secret != "" && fromFile:
		return fmt.Errorf("%s: client_auth none is a public client and has no secret; remove the secret reference or choose client_secret_basic or client_secret_post", field("client_auth"))
	case auth == provider.AuthNone && s.secret != "":
		return errors.New("--auth-style none is a public client and has no secret; unset TOKENLINE_CLIENT_SECRET/--client-secret or choose basic or post")
	case auth != provider.AuthNone && s.secret == "" && fromFile:
		return fmt.Errorf("%s: client_auth %s needs a client secret (client_secret_env or client_secret_file); a public client (PKCE, no secret) sets client_auth: none", w, auth)
	case auth != provider.AuthNone && s.secret == "":
		return fmt.Errorf("--provider %s needs a client secret (TOKENLINE_CLIENT_SECRET or --client-secret) for --auth-style %s; a public client (PKCE, no secret) sets --auth-style none", s.Kind(), auth)
	}
	return nil
}

// flagFor names the serve flag of a field, for errors about the
// single-provider flags.
var flagFor = map[string]string{
	"name": "--provider-name", "preset": "--provider", "issuer": "--issuer", "authorization_url": "--auth-url",
	"token_url": "--token-url", "revocation_url": "--revocation-url", "client_id": "--client-id",
	"client_auth": "--auth-style",
}

// absoluteHTTPURL reports whether raw is an absolute http(s) URL without
// user information.
func absoluteHTTPURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil
}

// flagProviderSpec is the one provider of the single-provider flags.
func (c *Config) flagProviderSpec(lookupEnv func(string) (string, bool)) (ProviderSpec, error) {
	s := ProviderSpec{
		Name: cmp.Or(c.ProviderName, c.Provider), ClientID: c.ClientID, ClientSecret: c.ClientSecret,
		ClientAuth: c.AuthStyle, where: "the provider flags",
	}
	switch c.Provider {
	case "sandbox":
		s.Preset, s.ClientID, s.ClientSecret, s.ClientAuth = "sandbox", "", "", ""
	case "pleo", "pleo-staging":
		s.Preset = c.Provider
	case "custom":
		s.Issuer, s.AuthorizationURL, s.TokenURL, s.RevocationURL = c.Issuer, c.AuthURL, c.TokenURL, c.RevocationURL
	}
	if err := s.check(lookupEnv, false); err != nil {
		return ProviderSpec{}, err
	}
	return s, nil
}

// providerFlagsSet reports whether any single-provider flag differs from
// its default (they and --providers exclude each other).
func (c *Config) providerFlagsSet() []string {
	d := DefaultConfig()
	var set []string
	for _, f := range []struct {
		name     string
		got, def string
	}{
		{"--provider", c.Provider, d.Provider}, {"--provider-name", c.ProviderName, d.ProviderName},
		{"--client-id", c.ClientID, d.ClientID}, {"--client-secret/TOKENLINE_CLIENT_SECRET", c.ClientSecret, d.ClientSecret},
		{"--auth-url", c.AuthURL, d.AuthURL}, {"--token-url", c.TokenURL, d.TokenURL},
		{"--revocation-url", c.RevocationURL, d.RevocationURL}, {"--issuer", c.Issuer, d.Issuer},
		{"--auth-style", c.AuthStyle, d.AuthStyle},
	} {
		if f.got != f.def {
			set = append(set, f.name)
		}
	}
	return set
}

// ProviderSpecs returns the configured providers: the providers file's, or
// the one of the single-provider flags. Secrets are resolved (lookupEnv for
// client_secret_env).
func (c *Config) ProviderSpecs(lookupEnv func(string) (string, bool)) ([]ProviderSpec, error) {
	if c.ProvidersFile == "" {
		s, err := c.flagProviderSpec(lookupEnv)
		if err != nil {
			return nil, err
		}
		return []ProviderSpec{s}, nil
	}
	if set := c.providerFlagsSet(); len(set) > 0 {
		return nil, fmt.Errorf("--providers declares every provider; %s configure the single provider of the flags: use one or the other", strings.Join(set, ", "))
	}
	return LoadProvidersFile(c.ProvidersFile, lookupEnv)
}

// providerConfig is the provider.Config of a spec (the sandbox preset's
// client and endpoints are filled by openProviders).
func (s ProviderSpec) providerConfig() provider.Config {
	pc := provider.Config{
		Name: s.Name, Issuer: s.Issuer, ClientID: s.ClientID, ClientSecret: s.secret, AuthStyle: s.ClientAuth,
		Scopes: slices.Clone(s.Scopes), AuthorizeParams: maps.Clone(s.AuthorizeParams),
		Endpoints: provider.Endpoints{AuthURL: s.AuthorizationURL, TokenURL: s.TokenURL, RevocationURL: s.RevocationURL, IntrospectURL: s.IntrospectionURL},
	}
	if ep, ok := provider.Presets[s.Preset]; ok {
		pc.Endpoints = ep
	}
	return pc
}

// discoverAll runs one discovery round for every provider with an issuer,
// concurrently, bounded by ctx.
func discoverAll(ctx context.Context, ps []*provider.Provider) map[string]error {
	errs := make([]error, len(ps))
	done := make(chan struct{})
	n := 0
	for i, p := range ps {
		if p.Issuer() == "" {
			continue
		}
		n++
		go func() { errs[i] = p.Discover(ctx); done <- struct{}{} }()
	}
	for range n {
		<-done
	}
	out := map[string]error{}
	for i, p := range ps {
		if errs[i] != nil {
			out[p.Name()] = errs[i]
		}
	}
	return out
}
