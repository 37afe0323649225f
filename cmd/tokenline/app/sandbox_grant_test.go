package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
)

// grantModeOf reads GET /sandbox/admin/grant-mode.
func grantModeOf(t *testing.T, url, token string) map[string]string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&got) != nil {
		t.Fatalf("grant-mode: %d", resp.StatusCode)
	}
	return got
}

// serve's --sandbox-grant-mode and --sandbox-access-ttl 0s configure the
// embedded sandbox from the start.
func TestServeSandboxGrantMode(t *testing.T) {
	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.NATSListen, m.Config.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	m.Config.LogLevel = "error"
	m.Config.SandboxGrantMode, m.Config.SandboxAccessTTL = "scope:offline_access", 0
	m.LogOutput = &porttest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	got := grantModeOf(t, m.BaseURL+"/sandbox/admin/grant-mode", m.APIToken())
	if got["refresh_token"] != "scope:offline_access" || got["access_ttl"] != "0s" {
		t.Fatalf("embedded sandbox grant mode %v, want scope:offline_access and 0s", got)
	}
}

// tokenline sandbox --grant-mode never --access-ttl 0s.
func TestSandboxCommandGrantMode(t *testing.T) {
	s := runSandbox(t, func(c *SandboxConfig) { c.GrantMode, c.AccessTTL = "never", 0 })
	got := grantModeOf(t, s.Issuer+"/admin/grant-mode", s.Server.AdminToken())
	if got["refresh_token"] != "never" || got["access_ttl"] != "0s" {
		t.Fatalf("sandbox grant mode %v, want never and 0s", got)
	}
}

// A bad grant mode or access-token lifetime is refused before anything
// starts (no data directory, no NATS, nothing printed), by serve and by
// the sandbox command; --help documents the flags.
func TestSandboxGrantFlagsRefused(t *testing.T) {
	t.Setenv(EnvSandboxClientSecret, "")
	t.Setenv(EnvAPIToken, "")
	for _, c := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"serve", []string{"--sandbox-grant-mode", "sometimes"}, "--sandbox-grant-mode"},
		{"serve", []string{"--sandbox-grant-mode", "scope:admin"}, "--sandbox-grant-mode"},
		{"serve", []string{"--sandbox-access-ttl", "500ms"}, "--sandbox-access-ttl"},
		{"serve", []string{"--sandbox-access-ttl", "9000h"}, "--sandbox-access-ttl"},
		{"sandbox", []string{"--redirect-uri", testRedirectURI, "--grant-mode", "sometimes"}, "--grant-mode"},
		{"sandbox", []string{"--redirect-uri", testRedirectURI, "--grant-mode", "scope:"}, "--grant-mode"},
		{"sandbox", []string{"--redirect-uri", testRedirectURI, "--access-ttl", "-1s"}, "--access-ttl"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		var out bytes.Buffer
		// A command that wrongly starts serves until ctx ends: bounded.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := NewRootCommand(ctx, &out, io.Discard)
		cmd.SetArgs(append([]string{c.cmd, "--data-dir", dir, "--http", "127.0.0.1:0", "--log-level", "error"}, c.args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want an error about %s", c.cmd, c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%s %v: printed %q", c.cmd, c.args, out.String())
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s %v: the data directory was created", c.cmd, c.args)
		}
	}
	for cmdName, flags := range map[string][]string{"serve": {"--sandbox-grant-mode", "--sandbox-access-ttl", "0s: access tokens without expiry"}, "sandbox": {"--grant-mode", "scope:offline_access", "0s: access tokens without expiry"}} {
		var out bytes.Buffer
		cmd := NewRootCommand(context.Background(), &out, io.Discard)
		cmd.SetArgs([]string{cmdName, "--help"})
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		for _, f := range flags {
			if !strings.Contains(out.String(), f) {
				t.Errorf("%s --help lacks %q", cmdName, f)
			}
		}
	}
}
