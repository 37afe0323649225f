// Package tests holds tokenline's end-to-end tests: they run the real Main
// (embedded nats-server, JetStream store, vault, projections, lifecycle, the
// fosite sandbox provider and the HTTP server) on loopback port 0, and talk to
// it over HTTP like a user, an integration or a second instance would.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

type instance struct {
	*app.Main
	logs  *porttest.LogBuffer
	clock *porttest.SkewClock // the instance's lifecycle, gate and sandbox read it
}

// advance moves the instance's clock forward by d.
func (in *instance) advance(d time.Duration) { in.clock.Advance(d) }

// start runs a Main on loopback port 0 with a fast schedule. mod adjusts the
// configuration.
func start(t *testing.T, mod func(*app.Config)) *instance { return startTB(t, mod) }

func startTB(t testing.TB, mod func(*app.Config)) *instance {
	t.Helper()
	m := app.NewMain()
	c := &m.Config
	c.DataDir = t.TempDir()
	c.NATSListen = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.SandboxConsent = "approve"
	c.SandboxAccessTTL = time.Hour
	c.BackoffBase = 20 * time.Millisecond
	c.Tick = 50 * time.Millisecond
	c.LogLevel = "debug"
	if mod != nil {
		mod(c)
	}
	logs := &porttest.LogBuffer{}
	m.LogOutput = logs
	clock := &porttest.SkewClock{}
	m.Clock = clock
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return &instance{Main: m, logs: logs, clock: clock}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// consent follows an authorize URL through the sandbox (consent mode
// approve or deny) and returns the callback query it redirects to.
func consent(t testing.TB, authorizeURL string) url.Values {
	t.Helper()
	return porttest.Consent(t, authorizeURL).Query()
}

func callback(t testing.TB, in *instance, q url.Values) error {
	_, err := in.Lifecycle.HandleCallback(ctxT(t), q.Get("state"), q.Get("code"), q.Get("error"), q.Get("error_description"))
	return err
}

// authorise runs a full (re)authorisation of id through the sandbox.
func authorise(t testing.TB, in *instance, id string) {
	t.Helper()
	u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
	if err != nil {
		t.Fatalf("start authorisation: %v", err)
	}
	if err := callback(t, in, consent(t, u)); err != nil {
		t.Fatalf("callback: %v", err)
	}
}

func create(t testing.TB, in *instance, config map[string]string) string {
	t.Helper()
	c, err := in.Lifecycle.Create(ctxT(t), "sandbox", []string{"export-jobs:read", "users:read"}, config)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return c.ID
}

// admin calls a sandbox admin endpoint and decodes its JSON answer.
func admin(t testing.TB, in *instance, path string, body any, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	method := http.MethodPost
	if path == "stats" {
		method = http.MethodGet
	}
	req, _ := http.NewRequest(method, in.BaseURL+"/sandbox/admin/"+path, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+in.APIToken()) // the admin API takes the API token
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("sandbox admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("sandbox admin %s: %d %s", path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

func stats(t testing.TB, in *instance) sandbox.Stats {
	var s sandbox.Stats
	admin(t, in, "stats", nil, &s)
	return s
}

// history returns the event types of a connection, with ":terminal" on
// terminal refresh failures and rejections.
func history(t testing.TB, in *instance, id string) []string {
	t.Helper()
	h, err := in.Store.History(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range h {
		s := string(e.Type())
		switch d := e.Payload.(type) {
		case domain.RefreshFailed:
			if d.Terminal {
				s += ":terminal"
			}
		case domain.AccessRejected:
			if d.Terminal {
				s += ":terminal"
			}
		}
		out = append(out, s)
	}
	return out
}

func load(t testing.TB, in *instance, id string) domain.Connection {
	t.Helper()
	c, err := in.Store.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls cond every 20 ms for at most d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func equalSeq(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func hasPrefix(a, prefix []string) bool {
	return len(a) >= len(prefix) && equalSeq(a[:len(prefix)], prefix)
}

func vaultEmpty(t testing.TB, in *instance, id string) bool {
	_, err := in.Vault.Get(ctxT(t), id)
	return errors.Is(err, domain.ErrNoTokens)
}

func sharedKey(t testing.TB, in *instance) string {
	return filepath.Join(in.Config.DataDir, "vault.key")
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

var _ = strings.Contains
