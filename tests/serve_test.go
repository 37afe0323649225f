package tests

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
)

// `tokenline serve` (the README's first command) on its embedded default
// starts NATS, the sandbox and HTTP, prints where they are, and stops
// cleanly on a signal (context cancel).
func TestServeCommandPrintsWhereEverythingIs(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &porttest.LogBuffer{}
	cmd := app.NewRootCommand(ctx, out, io.Discard)
	cmd.SetArgs([]string{"serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	eventually(t, 20*time.Second, "serve to print its addresses", func() bool { return strings.Contains(out.String(), "Data dir:") })
	text := out.String()
	for _, want := range []string{"/ui/", "api-token", "nats://127.0.0.1:", "/sandbox/"} {
		if !strings.Contains(text, want) {
			t.Fatalf("serve output lacks %q:\n%s", want, text)
		}
	}
	// The sandbox answers on the printed address.
	var sandboxURL string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Sandbox:" {
			sandboxURL = f[1]
		}
	}
	resp, err := http.Get(sandboxURL + ".well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sandbox metadata: %d", resp.StatusCode)
	}
	if fi, err := os.Stat(dir + "/api-token"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api token file: %v %v", err, fi)
	}
	if fi, err := os.Stat(dir + "/vault.key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("vault key file: %v %v", err, fi)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestSecondServeOnSameDataDirFails(t *testing.T) {
	first := start(t, nil)
	m := app.NewMain()
	m.Config.DataDir = first.Config.DataDir
	m.Config.NATSListen, m.Config.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	m.LogOutput = io.Discard
	err := m.Run(ctxT(t))
	defer m.Close()
	var inUse *natsserver.DataDirInUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second serve: %v", err)
	}
	// The first one is unharmed.
	id := create(t, first, map[string]string{"team": "finance"})
	if c := load(t, first, id); c.ID != id {
		t.Fatal("first instance broken")
	}
}

func TestVersionCommand(t *testing.T) {
	out := &porttest.LogBuffer{}
	cmd := app.NewRootCommand(context.Background(), out, io.Discard)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil || !strings.HasPrefix(out.String(), "tokenline ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
}

// Flags are also environment variables TOKENLINE_<NAME>; a flag given on
// the command line wins.
func TestFlagsFromEnvironment(t *testing.T) {
	c := app.DefaultConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	c.BindFlags(fs)
	_ = fs.Parse([]string{"--replicas", "3"})
	env := map[string]string{"TOKENLINE_DATA_DIR": "/x", "TOKENLINE_REPLICAS": "5", "TOKENLINE_NATS_URL": "nats://127.0.0.1:4999"}
	if err := app.ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/x" || c.Replicas != 3 || c.NATSURL != "nats://127.0.0.1:4999" {
		t.Fatalf("config %+v", c)
	}
	bad := map[string]string{"TOKENLINE_MAX_ATTEMPTS": "many"}
	if err := app.ApplyEnv(fs, func(k string) (string, bool) { v, ok := bad[k]; return v, ok }); err == nil {
		t.Fatal("a bad environment value was accepted")
	}
}

// The pleo preset refuses a plain-HTTP public URL that is not localhost
// (Pleo accepts plain HTTP redirect URIs only for localhost).
func TestPleoPresetNeedsHTTPSRedirect(t *testing.T) {
	m := app.NewMain()
	m.Config.DataDir, m.Config.NATSListen, m.Config.HTTPAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	m.Config.Provider, m.Config.ClientID, m.Config.ClientSecret = "pleo", "client", "secret"
	m.Config.PublicURL = "http://tokenline.example.com"
	m.LogOutput = io.Discard
	err := m.Run(ctxT(t))
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "HTTPS") {
		t.Fatalf("plain-HTTP public URL accepted: %v", err)
	}
	m = app.NewMain()
	m.Config.DataDir, m.Config.NATSListen, m.Config.HTTPAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	m.Config.Provider, m.Config.ClientID, m.Config.ClientSecret = "pleo", "client", "secret"
	m.LogOutput = io.Discard
	if err := m.Run(ctxT(t)); err != nil { // loopback: allowed
		t.Fatalf("loopback redirect refused: %v", err)
	}
	defer m.Close()
	if p := m.Providers["pleo"]; p == nil || p.Endpoints().TokenURL != "https://auth.pleo.io/oauth/token" {
		t.Fatalf("pleo provider %+v", p)
	}
}
