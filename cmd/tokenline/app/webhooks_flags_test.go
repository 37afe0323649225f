package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/webhook"
)

// A bad webhook flag is refused before anything starts, with an error
// naming the flag and the range: no NATS, no data dir. The same through
// the command line and the environment.
func TestWebhookFlagsRefused(t *testing.T) {
	cases := []struct {
		flag string
		mod  func(c *WebhooksConfig)
	}{
		{"--webhooks-timeout 0s: want 1ms to 10m0s", func(c *WebhooksConfig) { c.Timeout = 0 }},
		{"--webhooks-timeout 11m0s", func(c *WebhooksConfig) { c.Timeout = 11 * time.Minute }},
		{"--webhooks-max-attempts 0: want 1 to 100000", func(c *WebhooksConfig) { c.MaxAttempts = 0 }},
		{"--webhooks-backoff-base -1s", func(c *WebhooksConfig) { c.BackoffBase = -time.Second }},
		{"--webhooks-backoff-max 0s", func(c *WebhooksConfig) { c.BackoffMax = 0 }},
		{"--webhooks-backoff-base 20m0s is longer than --webhooks-backoff-max 10m0s", func(c *WebhooksConfig) { c.BackoffBase = 20 * time.Minute }},
		{"--webhooks-ack-wait 500ms: want 1s to 1h0m0s", func(c *WebhooksConfig) { c.AckWait = 500 * time.Millisecond }},
		{"--webhooks-concurrency 0: want 1 to 1024", func(c *WebhooksConfig) { c.Concurrency = 0 }},
		{"--webhooks-concurrency 5000", func(c *WebhooksConfig) { c.Concurrency = 5000 }},
		{"--webhooks-max-pending -3: want 1 to 100000", func(c *WebhooksConfig) { c.MaxPending = -3 }},
		{"--webhooks-pinned-ttl 2s: want 3s to 10m0s", func(c *WebhooksConfig) { c.PinnedTTL = 2 * time.Second }},
		{"--webhooks-secret-grace 0s: want 1s to 720h0m0s", func(c *WebhooksConfig) { c.SecretGrace = 0 }},
		{"--webhooks-secret-grace 721h0m0s", func(c *WebhooksConfig) { c.SecretGrace = 721 * time.Hour }},
		{"--webhooks-log-keep 0: want 1 to 10000", func(c *WebhooksConfig) { c.LogKeep = 0 }},
		{"--webhooks-log-keep 10001", func(c *WebhooksConfig) { c.LogKeep = 10001 }},
		{"--webhooks-log-max-age 30m0s: want 1h0m0s to 8760h0m0s", func(c *WebhooksConfig) { c.LogMaxAge = 30 * time.Minute }},
	}
	for _, tc := range cases {
		name, _, _ := strings.Cut(strings.TrimPrefix(tc.flag, "--"), " ")
		t.Run(name, func(t *testing.T) {
			m := NewMain()
			c := &m.Config
			c.DataDir = filepath.Join(t.TempDir(), "data")
			c.NATSListen, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
			tc.mod(&c.Webhooks)
			m.LogOutput = io.Discard
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := m.Run(ctx)
			defer m.Close()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.flag)
			}
			if m.NATS != nil || m.Conn != nil {
				t.Fatal("NATS was started")
			}
			if _, serr := os.Stat(c.DataDir); !os.IsNotExist(serr) {
				t.Fatalf("the data dir was written (%v)", serr)
			}
		})
	}

	serve := func(t *testing.T, args ...string) (string, error) {
		dir := filepath.Join(t.TempDir(), "data")
		cmd := NewRootCommand(context.Background(), io.Discard, io.Discard)
		cmd.SetArgs(append([]string{"serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, args...))
		err := cmd.Execute()
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("serve %v wrote the data dir (%v)", args, serr)
		}
		return dir, err
	}
	t.Run("command-line", func(t *testing.T) {
		if _, err := serve(t, "--webhooks-concurrency", "0"); err == nil || !strings.Contains(err.Error(), "--webhooks-concurrency 0: want 1 to 1024") {
			t.Fatalf("serve --webhooks-concurrency 0: %v", err)
		}
		if _, err := serve(t, "--webhooks-secret-grace", "soon"); err == nil || !strings.Contains(err.Error(), "webhooks-secret-grace") {
			t.Fatalf("serve --webhooks-secret-grace soon: %v", err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("TOKENLINE_WEBHOOKS_PINNED_TTL", "1s")
		if _, err := serve(t); err == nil || !strings.Contains(err.Error(), "--webhooks-pinned-ttl 1s: want 3s to 10m0s") {
			t.Fatalf("serve with TOKENLINE_WEBHOOKS_PINNED_TTL=1s: %v", err)
		}
	})
}

// The webhook flags reach delivery: the subscription's consumer has the
// ack wait, pending bound and pin TTL they set; no more requests are in
// flight than --webhooks-concurrency; after --webhooks-secret-grace the
// previous secret no longer signs.
func TestWebhookFlagsTakeEffect(t *testing.T) {
	const concurrency, conns, grace = 2, 8, 3 * time.Second
	fs := NewRootCommand(context.Background(), io.Discard, io.Discard)
	serveCmd, _, err := fs.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"webhooks-concurrency", "webhooks-max-pending", "webhooks-pinned-ttl", "webhooks-secret-grace", "webhooks-log-keep", "webhooks-log-max-age"} {
		if serveCmd.Flags().Lookup(f) == nil {
			t.Errorf("serve has no --%s", f)
		}
	}

	m := NewMain()
	c := &m.Config
	c.DataDir = t.TempDir()
	c.NATSListen, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	c.LogLevel = "error"
	c.Webhooks.AllowHTTP, c.Webhooks.AllowPrivate = true, true
	c.Webhooks.AckWait = 7 * time.Second
	c.Webhooks.MaxPending = 333
	c.Webhooks.PinnedTTL = 9 * time.Second
	c.Webhooks.Concurrency = concurrency
	c.Webhooks.SecretGrace = grace
	c.Webhooks.LogKeep = 3
	c.Webhooks.LogMaxAge = 5 * time.Hour
	m.LogOutput = &porttest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })

	// The receiver holds each request 200 ms and records the most in
	// flight and each event's signatures.
	var (
		secret            atomic.Pointer[string]
		inflight, maxSeen atomic.Int64
		mu                sync.Mutex
		sigs              = map[string]string{} // connection -> last signature header
		bad               int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			old := maxSeen.Load()
			if n <= old || maxSeen.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		b, _ := io.ReadAll(r.Body)
		err := webhook.Verify(*secret.Load(), r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), b, time.Now(), 5*time.Minute)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		sigs[subjectOf(b)] = r.Header.Get("webhook-signature")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	w, s, err := m.Webhooks.Create(ctx, webhook.CreateRequest{URL: srv.URL + "/hook", EventTypes: []string{"connection.created"}})
	if err != nil {
		t.Fatal(err)
	}
	secret.Store(&s)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for i := 0; i < 600 && !ok(); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if !ok() {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	// The deliverer creates the consumer as it starts.
	var cc jetstream.ConsumerConfig
	waitFor("the subscription's consumer", func() bool {
		cons, err := m.Store.JetStream().Consumer(ctx, m.Store.StreamName(), webhook.ConsumerPrefix+w.ID)
		if err == nil {
			cc = cons.CachedInfo().Config
		}
		return err == nil
	})
	if cc.AckWait != 7*time.Second || cc.MaxAckPending != 333 || cc.PinnedTTL != 9*time.Second {
		t.Errorf("consumer: ack wait %s, max ack pending %d, pinned TTL %s; want 7s, 333, 9s", cc.AckWait, cc.MaxAckPending, cc.PinnedTTL)
	}

	// The delivery log's retention shapes its stream, and /readyz agrees.
	logs, err := m.Store.JetStream().Stream(ctx, webhook.DefaultLogStream)
	if err != nil {
		t.Fatal(err)
	}
	if lc := logs.CachedInfo().Config; lc.MaxMsgsPerSubject != 3 || lc.MaxAge != 5*time.Hour {
		t.Errorf("log stream: max msgs per subject %d, max age %s; want 3, 5h", lc.MaxMsgsPerSubject, lc.MaxAge)
	}
	if err := m.Webhooks.CheckShape(ctx, jsstore.ShapeProblems); err != nil {
		t.Errorf("shape check: %v", err)
	}

	created := func() string {
		t.Helper()
		conn, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return conn.ID
	}
	delivered := func(ids ...string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if sigs[id] == "" {
					return false
				}
			}
			return true
		}
	}
	var ids []string
	for range conns {
		ids = append(ids, created())
	}
	waitFor("the connections' events", delivered(ids...))
	if got := maxSeen.Load(); got > concurrency {
		t.Errorf("%d requests in flight at once, --webhooks-concurrency is %d", got, concurrency)
	} else {
		t.Logf("at most %d requests in flight (%d connections, --webhooks-concurrency %d)", got, conns, concurrency)
	}

	// Rotate: during the grace both secrets sign; once it is over only the
	// new one does, also for a deliverer that signed with both before.
	rotated := time.Now()
	_, s2, err := m.Webhooks.RotateSecret(ctx, w.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	secret.Store(&s2)
	during := created()
	waitFor("the event after the rotation", delivered(during))
	if time.Since(rotated) < grace-time.Second { // surely within the grace (else nothing to check here)
		mu.Lock()
		if n := len(strings.Fields(sigs[during])); n != 2 {
			t.Errorf("during the grace: %d signatures (%q), want the new and the previous secret's", n, sigs[during])
		}
		mu.Unlock()
	}
	time.Sleep(time.Until(rotated.Add(grace + 100*time.Millisecond))) // past --webhooks-secret-grace
	late := created()
	waitFor("the event after the grace", delivered(late))
	mu.Lock()
	if n := len(strings.Fields(sigs[late])); n != 1 || bad != 0 {
		t.Errorf("after the grace: %d signatures (%q), %d refused; want only the new secret's", n, sigs[late], bad)
	}
	mu.Unlock()
	// The log keeps the newest 3 of the 10 attempts.
	var attempts []webhook.Attempt
	waitFor("the last delivery in the log", func() bool {
		attempts, err = m.Webhooks.Log(ctx, w.ID)
		return err == nil && len(attempts) > 0 && attempts[len(attempts)-1].Connection == late
	})
	if len(attempts) != 3 {
		t.Errorf("the log has %d attempts, --webhooks-log-keep is 3", len(attempts))
	}
}

// subjectOf is a CloudEvent's subject (the connection id).
func subjectOf(body []byte) string {
	_, rest, ok := strings.Cut(string(body), `"subject":"`)
	if !ok {
		return ""
	}
	s, _, _ := strings.Cut(rest, `"`)
	return s
}
