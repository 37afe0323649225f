package app

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testRedirectURI = "http://127.0.0.1:1/oauth/callback"

func runSandbox(t *testing.T, mod func(*SandboxConfig)) *SandboxMain {
	t.Helper()
	s := NewSandboxMain()
	s.Config.HTTPAddr, s.Config.DataDir = "127.0.0.1:0", t.TempDir()
	s.Config.RedirectURIs = []string{testRedirectURI}
	s.LogOutput = io.Discard
	if mod != nil {
		mod(&s.Config)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Without environment or flags, the client secret and the admin token are
// generated into the data dir (0600), named in the facts by absolute path,
// and reused by the next start on the same dir.
func TestSandboxSecretsGeneratedAndReused(t *testing.T) {
	t.Setenv(EnvSandboxClientSecret, "")
	t.Setenv(EnvAPIToken, "")
	s := runSandbox(t, nil)
	for _, p := range []string{s.ClientSecretPath, s.AdminTokenPath} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 || !filepath.IsAbs(p) {
			t.Fatalf("%s: %v %v", p, err, fi)
		}
	}
	secret, token := readTrim(t, s.ClientSecretPath), readTrim(t, s.AdminTokenPath)
	if secret != s.Server.ClientSecret() || token != s.Server.AdminToken() || secret == token {
		t.Fatal("files do not hold the server's secret and token")
	}
	facts := map[string]any{}
	for _, f := range s.Facts() {
		for k, v := range f {
			facts[k] = v
		}
	}
	if facts["client_secret_file"] != s.ClientSecretPath || facts["admin_token_file"] != s.AdminTokenPath ||
		facts["issuer"] != s.Issuer || facts["ready"] != true {
		t.Fatalf("facts %v", facts)
	}
	s.Close()

	again := runSandbox(t, func(c *SandboxConfig) { c.DataDir = s.Config.DataDir })
	if again.Server.ClientSecret() != secret || again.Server.AdminToken() != token {
		t.Fatal("a restart on the same data dir did not reuse the secret and token")
	}
}

// The environment wins over files; --client-secret-file and --api-token-file
// are read when given.
func TestSandboxSecretsFromEnvAndFiles(t *testing.T) {
	t.Setenv(EnvSandboxClientSecret, "env-secret-0123456789")
	t.Setenv(EnvAPIToken, "env-token-0123456789")
	s := runSandbox(t, nil)
	if s.Server.ClientSecret() != "env-secret-0123456789" || s.Server.AdminToken() != "env-token-0123456789" ||
		s.ClientSecretPath != "" || s.AdminTokenPath != "" {
		t.Fatalf("env: %q %q", s.ClientSecretPath, s.AdminTokenPath)
	}
	if _, err := os.Stat(filepath.Join(s.Config.DataDir, SandboxClientSecretFile)); err == nil {
		t.Fatal("secret file written although the secret came from the environment")
	}

	t.Setenv(EnvSandboxClientSecret, "")
	t.Setenv(EnvAPIToken, "")
	dir := t.TempDir()
	sf, tf := filepath.Join(dir, "secret"), filepath.Join(dir, "token")
	_ = os.WriteFile(sf, []byte("file-secret-0123456789\n"), 0o600)
	_ = os.WriteFile(tf, []byte("file-token-0123456789\n"), 0o600)
	s = runSandbox(t, func(c *SandboxConfig) { c.ClientSecretFile, c.APITokenFile = sf, tf })
	if s.Server.ClientSecret() != "file-secret-0123456789" || s.Server.AdminToken() != "file-token-0123456789" {
		t.Fatal("files not read")
	}
	// The admin API takes exactly that token.
	req, _ := http.NewRequest(http.MethodGet, s.Issuer+"/admin/stats", nil)
	for token, want := range map[string]int{"": 401, "file-secret-0123456789": 401, "file-token-0123456789": 200} {
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("stats with %q: %d, want %d", token, resp.StatusCode, want)
		}
	}
}

// Bad input gets a clear error and starts nothing.
func TestSandboxCommandRefusesBadInput(t *testing.T) {
	t.Setenv(EnvSandboxClientSecret, "")
	t.Setenv(EnvAPIToken, "")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--redirect-uri is required"},
		{[]string{"--redirect-uri", "not a uri"}, "redirect URI"},
		{[]string{"--redirect-uri", "http://example.com/cb"}, "https"},
		{[]string{"--redirect-uri", testRedirectURI, "--consent", "maybe"}, "consent"},
		{[]string{"--redirect-uri", testRedirectURI, "--access-ttl", "0s", "--refresh-ttl", "500ms"}, "at least one second"},
		{[]string{"--redirect-uri", testRedirectURI, "--client-secret-file", filepath.Join(dir, "missing")}, "client secret"},
		{[]string{"--redirect-uri", testRedirectURI, "--api-token-file", empty}, "empty"},
		{[]string{"--redirect-uri", testRedirectURI, "--max-codes", "-1"}, "MaxCodes"},
		{[]string{"--redirect-uri", testRedirectURI, "--log-format", "xml"}, "--log-format"},
		{[]string{"--redirect-uri", testRedirectURI, "--http", "127.0.0.1:99999"}, "listen"},
	} {
		var out bytes.Buffer
		cmd := NewRootCommand(context.Background(), &out, io.Discard)
		cmd.SetArgs(append([]string{"sandbox", "--data-dir", filepath.Join(dir, "data"), "--log-level", "error"}, c.args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error about %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q", c.args, out.String())
		}
	}
}

// --help documents every flag, the environment and the output.
func TestSandboxHelp(t *testing.T) {
	var out bytes.Buffer
	cmd := NewRootCommand(context.Background(), &out, io.Discard)
	cmd.SetArgs([]string{"sandbox", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--http", "--client-id", "--redirect-uri", "--access-ttl", "--refresh-ttl", "--consent",
		"--public-url", "--data-dir", "--client-secret-file", "--api-token-file", "--max-codes", "--max-grants",
		EnvSandboxClientSecret, EnvAPIToken, "discovery_url", "in memory", "--provider custom", "SIGTERM"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
