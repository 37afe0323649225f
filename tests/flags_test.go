package tests

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
)

// A bad flag value is refused before anything starts: the error names the
// flag, the embedded NATS was never started and the data dir was never
// written (it does not exist afterwards).
func TestBadFlagsStartNothing(t *testing.T) {
	cases := []struct {
		flag string
		mod  func(c *app.Config)
	}{
		{"--log-level", func(c *app.Config) { c.LogLevel = "loud" }},
		{"--log-format", func(c *app.Config) { c.LogFormat = "xml" }},
		{"--http", func(c *app.Config) { c.HTTPAddr = "localhost" }},
		{"--nats-listen", func(c *app.Config) { c.NATSListen = "127.0.0.1:99999" }},
		{"--public-url", func(c *app.Config) { c.PublicURL = "ftp://example.com" }},
		{"--max-attempts", func(c *app.Config) { c.MaxAttempts = 0 }},
		{"--concurrency", func(c *app.Config) { c.Concurrency = -1 }},
		{"--backoff-base", func(c *app.Config) { c.BackoffBase = 0 }},
		{"--refresh-lease", func(c *app.Config) { c.RefreshLease = -time.Second }},
		{"--tick", func(c *app.Config) { c.Tick = 0 }},
		{"--authorisation-ttl", func(c *app.Config) { c.AuthorisationTTL = 0 }},
		{"--sandbox-consent", func(c *app.Config) { c.SandboxConsent = "maybe" }},
		{"--gate-expiry-margin", func(c *app.Config) { c.GateExpiryMargin = -time.Second }},
		{"--probe-shard", func(c *app.Config) { c.ProbeShard = "3/3" }},
		{"--checkpoint-interval", func(c *app.Config) { c.CheckpointInterval = 0 }},
		{"--snapshot-every", func(c *app.Config) { c.SnapshotEvery = 0 }},
		{"vault", func(c *app.Config) { // a key file others may read is refused
			c.VaultKeyFile = filepath.Join(filepath.Dir(c.DataDir), "vault.key")
			if err := os.WriteFile(c.VaultKeyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o644); err != nil {
				panic(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(strings.TrimPrefix(tc.flag, "--"), func(t *testing.T) {
			m := app.NewMain()
			c := &m.Config
			c.DataDir = filepath.Join(t.TempDir(), "data")
			c.NATSListen, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
			tc.mod(c)
			m.LogOutput = io.Discard
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := m.Run(ctx)
			defer m.Close()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("Run: %v, want an error naming %s", err, tc.flag)
			}
			if m.NATS != nil || m.Conn != nil {
				t.Fatal("NATS was started")
			}
			if _, serr := os.Stat(c.DataDir); !os.IsNotExist(serr) {
				t.Fatalf("the data dir was written (%v)", serr)
			}
		})
	}
	// The same through the command line.
	dir := filepath.Join(t.TempDir(), "data")
	cmd := app.NewRootCommand(context.Background(), io.Discard, io.Discard)
	cmd.SetArgs([]string{"serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--max-attempts", "0"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--max-attempts 0") {
		t.Fatalf("serve --max-attempts 0: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("serve wrote the data dir (%v)", err)
	}
}
