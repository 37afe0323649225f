package tests

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// hookReceiver is a webhook receiver on loopback: it verifies each
// signature (Standard Webhooks) and de-duplicates on webhook-id, recording
// each connection's event types in the order they first arrived.
type hookReceiver struct {
	srv    *httptest.Server
	secret atomic.Pointer[string]
	// fail, if set, answers 500 to a connection's events.
	fail atomic.Pointer[string]
	// slow makes each answer take 20 ms.
	slow atomic.Bool

	mu       sync.Mutex
	seen     map[string]bool
	types    map[string][]string
	receipts int
	bad      int
	distinct atomic.Int64
}

func newHookReceiver(t testing.TB) *hookReceiver {
	r := &hookReceiver{seen: map[string]bool{}, types: map[string][]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.slow.Load() {
			time.Sleep(20 * time.Millisecond)
		}
		b, _ := io.ReadAll(req.Body)
		var ev struct{ ID, Type, Subject string }
		_ = json.Unmarshal(b, &ev)
		if f := r.fail.Load(); f != nil && *f == ev.Subject {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		err := webhook.Verify(*r.secret.Load(), req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"),
			req.Header.Get("webhook-signature"), b, time.Now(), 5*time.Minute)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.receipts++
		if err != nil || req.Header.Get("webhook-id") != ev.ID {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if !r.seen[ev.ID] {
			r.seen[ev.ID] = true
			r.types[ev.Subject] = append(r.types[ev.Subject], strings.TrimPrefix(ev.Type, "tokenline."))
			r.distinct.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// streamTypes is history without its ":terminal" marks.
func streamTypes(t testing.TB, in *instance, id string) []string {
	h := history(t, in, id)
	for i := range h {
		h[i] = strings.TrimSuffix(h[i], ":terminal")
	}
	return h
}

func (r *hookReceiver) got(conn string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.types[conn])
}

// hooksOn lets tokenline deliver to the loopback receiver, quickly.
func hooksOn(c *app.Config) {
	c.Webhooks.AllowHTTP, c.Webhooks.AllowPrivate = true, true
	c.Webhooks.BackoffBase, c.Webhooks.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
	c.Webhooks.MaxAttempts = 10000
	c.Webhooks.AckWait = 2 * time.Second
}

func apiClient(t testing.TB, in *instance) *client.Client {
	c, err := client.New(in.BaseURL, in.APIToken())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func subscribeHook(t testing.TB, in *instance, r *hookReceiver, req apitypes.WebhookCreateRequest) apitypes.Webhook {
	t.Helper()
	req.URL = r.srv.URL + "/hook"
	w, err := apiClient(t, in).CreateWebhook(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w.Secret, "whsec_") || w.SecretFingerprint != webhook.Fingerprint(w.Secret) {
		t.Fatalf("created webhook: %+v", w)
	}
	r.secret.Store(&w.Secret)
	return w
}

// Every event of a connection's life arrives once, in order, signed; a
// connection whose receiver answers 500 does not hold back another's.
func TestWebhooksDeliverAConnectionsLife(t *testing.T) {
	in := start(t, hooksOn)
	r := newHookReceiver(t)
	hk := subscribeHook(t, in, r, apitypes.WebhookCreateRequest{})

	blocked := create(t, in, nil)
	r.fail.Store(&blocked)
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	if err := refreshNow(t, in, id); err != nil {
		t.Fatal(err)
	}
	if err := in.Lifecycle.Delete(ctxT(t), id); err != nil {
		t.Fatal(err)
	}
	want := streamTypes(t, in, id)
	eventually(t, 20*time.Second, "the connection's whole life at the receiver", func() bool { return len(r.got(id)) >= len(want) })
	if got := r.got(id); !slices.Equal(got, want) {
		t.Fatalf("receiver got %v, the stream has %v", got, want)
	}
	if got := r.got(blocked); len(got) != 0 {
		t.Fatalf("the failing connection's events were accepted: %v", got)
	}
	r.fail.Store(nil)
	eventually(t, 20*time.Second, "the held connection's events after the receiver recovers", func() bool {
		return slices.Equal(r.got(blocked), streamTypes(t, in, blocked))
	})
	r.mu.Lock()
	bad := r.bad
	r.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d deliveries failed verification", bad)
	}
	// The delivery log and the metrics show it (the log is written in
	// batches, within a fraction of a second).
	outcomes := map[string]bool{}
	eventually(t, 20*time.Second, "delivered and failed attempts in the delivery log", func() bool {
		d, err := apiClient(t, in).WebhookDeliveries(ctxT(t), hk.ID)
		if err != nil {
			t.Fatalf("deliveries: %+v %v", d, err)
		}
		for _, a := range d.Attempts {
			outcomes[a.Outcome] = true
		}
		return outcomes["delivered"] && outcomes["failed"]
	})
	// Pause, resume, rotate, delete through the API.
	c := apiClient(t, in)
	if w, err := c.PauseWebhook(ctxT(t), hk.ID); err != nil || w.State != "paused" {
		t.Fatalf("pause: %+v %v", w, err)
	}
	if w, err := c.ResumeWebhook(ctxT(t), hk.ID); err != nil || w.State != "active" {
		t.Fatalf("resume: %+v %v", w, err)
	}
	w, err := c.RotateWebhookSecret(ctxT(t), hk.ID)
	if err != nil || w.Secret == "" || w.Secret == hk.Secret {
		t.Fatalf("rotate: %v", err)
	}
	if _, err := c.CreateWebhook(ctxT(t), apitypes.WebhookCreateRequest{URL: "ftp://x"}); err == nil {
		t.Fatal("a bad URL was accepted")
	}
	if err := c.DeleteWebhook(ctxT(t), hk.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := c.ListWebhooks(ctxT(t)); len(l) != 0 {
		t.Fatalf("after delete: %+v", l)
	}
}

// Stopping tokenline in the middle of deliveries and starting it again on
// the same data directory loses nothing and keeps each connection's order.
func TestWebhooksSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *app.Config) { hooksOn(c); c.DataDir = dir }
	first := start(t, mod)
	r := newHookReceiver(t)
	subscribeHook(t, first, r, apitypes.WebhookCreateRequest{})
	var ids []string
	for range 4 {
		id := create(t, first, nil)
		authorise(t, first, id)
		ids = append(ids, id)
	}
	first.Close() // events may still be held: they go back to the consumer
	second := start(t, mod)
	for _, id := range ids {
		// The restarted sandbox forgot the grants: the refresh fails
		// (invalid_grant) and appends its events all the same.
		_ = refreshNow(t, second, id)
	}
	for _, id := range ids {
		want := streamTypes(t, second, id)
		eventually(t, 20*time.Second, "every event after the restart", func() bool { return len(r.got(id)) >= len(want) })
		if got := r.got(id); !slices.Equal(got, want) {
			t.Fatalf("%s: receiver got %v, the stream has %v", id, got, want)
		}
	}
}

// Two instances share each subscription's consumer: every event is
// delivered once (one request per event).
func TestWebhooksTwoInstancesDeliverOnce(t *testing.T) {
	a := start(t, hooksOn)
	b := start(t, func(c *app.Config) {
		hooksOn(c)
		c.NATSURL = a.NATSURL()
		c.NATSCreds = a.NATSCredsFile()
		c.VaultKeyFile = sharedKey(t, a)
		c.Provider, c.ProviderName = "custom", "sandbox"
		c.ClientID, c.ClientSecret = a.Sandbox.ClientID(), a.Sandbox.ClientSecret()
		c.AuthURL, c.TokenURL = a.BaseURL+"/sandbox/oauth/authorize", a.BaseURL+"/sandbox/oauth/token"
	})
	r := newHookReceiver(t)
	hk := subscribeHook(t, a, r, apitypes.WebhookCreateRequest{EventTypes: []string{"connection.created", "authorisation.completed", "refresh.succeeded"}})
	eventually(t, 10*time.Second, "b to see the subscription", func() bool {
		_, err := b.Webhooks.Get(hk.ID)
		return err == nil
	})
	var ids []string
	for i := range 6 {
		in := a
		if i%2 == 1 {
			in = b
		}
		id := create(t, in, nil)
		authorise(t, a, id)
		if err := refreshNow(t, in, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	want := []string{"connection.created", "authorisation.completed", "refresh.succeeded"}
	for _, id := range ids {
		eventually(t, 20*time.Second, "the filtered events", func() bool { return len(r.got(id)) >= len(want) })
		if got := r.got(id); !slices.Equal(got, want) {
			t.Fatalf("%s: got %v, want %v", id, got, want)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.receipts != len(ids)*len(want) || r.bad != 0 {
		t.Fatalf("%d requests (%d bad) for %d events: some were delivered twice", r.receipts, r.bad, len(ids)*len(want))
	}
	if w, _ := a.Webhooks.Get(hk.ID); w.State != domain.WebhookActive {
		t.Fatalf("state %s", w.State)
	}
}

// The UI's Webhooks page: the login page without a session, the page and
// its script with one.
func TestWebhooksUIPage(t *testing.T) {
	in := start(t, hooksOn)
	resp, err := http.Get(in.BaseURL + "/ui/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "Sign in") {
		t.Fatalf("without a session: %d\n%s", resp.StatusCode, b)
	}
	link, _ := in.LoginLink()
	jar := &cookieJar{}
	c := &http.Client{Jar: jar}
	resp, err = c.Get(link + "&next=/ui/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `data-page="webhooks"`) || !strings.Contains(string(b), "/ui/static/webhooks.js") {
		t.Fatalf("with a session: %d\n%s", resp.StatusCode, b)
	}
	resp, err = c.Get(in.BaseURL + "/ui/static/webhooks.js")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("script: %v %v", resp, err)
	}
	resp.Body.Close()
}

// cookieJar keeps the session cookie (one host).
type cookieJar struct {
	mu sync.Mutex
	cs []*http.Cookie
}

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cs = append(j.cs, cs...)
}

func (j *cookieJar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.cs)
}

// kill -9 of a real `tokenline serve` in the middle of deliveries, then a
// restart on the same data directory: every event still arrives, in order
// per connection (the events the dead process held are re-delivered after
// the ack wait, before their connections' later events).
func TestWebhooksKill9MidDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	args := []string{"--webhooks-allow-http", "--webhooks-allow-private", "--webhooks-ack-wait", "2s",
		"--webhooks-backoff-base", "10ms", "--webhooks-backoff-max", "200ms"}
	p := startProcArgs(t, bin, dir, args...)
	r := newHookReceiver(t)
	r.slow.Store(true)
	ctx := ctxT(t)
	api := p.api(t)
	hk, err := api.CreateWebhook(ctx, apitypes.WebhookCreateRequest{URL: r.srv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	r.secret.Store(&hk.Secret)
	var ids []string
	for range 20 {
		c, err := api.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.Authorize(ctx, c.ID); err != nil { // a second event per connection
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	eventually(t, 20*time.Second, "some deliveries", func() bool { return r.distinct.Load() >= 5 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	r.slow.Store(false)
	q := startProcArgs(t, bin, dir, args...)
	api = q.api(t)
	for _, id := range ids {
		evs, err := api.Events(ctx, id, client.EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, e := range evs {
			want = append(want, strings.TrimPrefix(e.Type, "tokenline."))
		}
		eventually(t, 30*time.Second, "every event after the crash", func() bool { return len(r.got(id)) >= len(want) })
		if got := r.got(id); !slices.Equal(got, want) {
			t.Fatalf("%s: receiver got %v, the stream has %v", id, got, want)
		}
	}
}

// startProcArgs is startProc (crash_test.go) with extra serve flags.
func startProcArgs(t *testing.T, bin, dir string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{"serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--sandbox-consent", "approve", "--log-level", "error"}, extra...)
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 32)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for p.baseURL == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("serve exited before it was ready")
			}
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "UI:" {
				p.baseURL = strings.TrimSuffix(f[1], "/ui/")
			}
		case <-deadline:
			t.Fatal("serve did not print its UI address in 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	b, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(b))
	return p
}
