package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
)

// The Standard Webhooks specification's own test vector.
func TestVerifiesTheSpecVector(t *testing.T) {
	r, err := NewReceiver("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return time.Unix(1614265330, 0) }
	body := []byte(`{"test": 2432232314}`)
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 1}`)); err == nil {
		t.Fatal("an altered body verified")
	}
	r.now = func() time.Time { return time.Unix(1614265330, 0).Add(10 * time.Minute) }
	if err := r.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body); err == nil {
		t.Fatal("a stale timestamp verified")
	}
}

// What tokenline signs, this receiver (written from the spec alone)
// verifies; it de-duplicates on webhook-id and refuses a bad signature.
func TestReceivesTokenlineDeliveries(t *testing.T) {
	secret := webhook.NewSecret()
	var out bytes.Buffer
	r, err := NewReceiver(secret, &out)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	key, _ := webhook.SecretKey(secret)
	body := []byte(`{"specversion":"1.0","id":"e1","type":"tokenline.refresh.failed","subject":"c1","time":"2026-12-02T00:00:00Z"}`)
	send := func(sig string) int {
		ts := time.Now().Unix()
		if sig == "" {
			sig = webhook.Sign(key, "e1", ts, body)
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("webhook-id", "e1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", "v1,bm9wZQ== "+sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(""); got != http.StatusNoContent {
		t.Fatalf("status %d", got)
	}
	if got := send(""); got != http.StatusNoContent { // a retry: accepted, not printed again
		t.Fatalf("status %d", got)
	}
	if got := send("v1,AAAA"); got != http.StatusUnauthorized {
		t.Fatalf("bad signature: status %d", got)
	}
	if strings.Count(out.String(), "refresh.failed") != 1 || !strings.Contains(out.String(), "c1") {
		t.Fatalf("printed:\n%s", out.String())
	}
}

// The receiver against real deliveries: a tokenline (app.Main, embedded
// NATS, sandbox) delivers a connection's events to it over loopback; it
// verifies and prints each once; after a rotation it still verifies with
// the secret it was started with (the previous secret signs during the
// grace); a replay of the window (same webhook-ids) prints nothing new; a
// receiver with another secret refuses the deliveries (tokenline logs 401).
func TestReceivesRealDeliveries(t *testing.T) {
	m := app.NewMain()
	c := &m.Config
	c.DataDir = t.TempDir()
	c.NATSListen, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	c.SandboxConsent = "approve"
	c.LogLevel = "error"
	c.Webhooks.AllowHTTP, c.Webhooks.AllowPrivate = true, true
	c.Webhooks.BackoffBase, c.Webhooks.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
	m.LogOutput = &porttest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })

	// The receiver's address is known before the subscription (and its
	// secret) exists; deliveries wait in the listener's backlog or retry.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w, secret, err := m.Webhooks.Create(ctx, webhook.CreateRequest{URL: "http://" + ln.Addr().String() + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	out := &porttest.LogBuffer{}
	r, err := NewReceiver(secret, out)
	if err != nil {
		t.Fatal(err)
	}
	var handler atomic.Pointer[http.Handler]
	var h http.Handler = r
	handler.Store(&h)
	mux := http.NewServeMux()
	mux.Handle("POST /hook", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { (*handler.Load()).ServeHTTP(w, req) }))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	printed := func(conn, typ string) func() bool {
		return func() bool { return strings.Contains(out.String(), " "+conn+" "+typ+"\n") }
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for i := 0; i < 1200 && !ok(); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if !ok() {
			t.Fatalf("timed out waiting for %s; the receiver printed:\n%s", what, out.String())
		}
	}
	from := time.Now().Add(-time.Second)
	conn, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor("connection.created printed", printed(conn.ID, "connection.created"))
	if err := m.Lifecycle.Delete(ctx, conn.ID); err != nil {
		t.Fatal(err)
	}
	waitFor("connection.deleted printed", printed(conn.ID, "connection.deleted"))

	// Rotated: the receiver still holds the previous secret, which signs
	// too during the grace.
	if _, _, err := m.Webhooks.RotateSecret(ctx, w.ID, "test"); err != nil {
		t.Fatal(err)
	}
	conn2, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor("the event after the rotation printed", printed(conn2.ID, "connection.created"))

	// A replay re-sends with the same webhook-ids: nothing printed twice.
	before := out.String()
	res, err := m.Webhooks.Replay(ctx, w.ID, from, time.Time{})
	if err != nil || res.Matched < 3 || res.Delivered != res.Matched {
		t.Fatalf("replay: %+v, %v; want the 3 events delivered", res, err)
	}
	if got := out.String(); got != before || strings.Count(got, "\n") != 3 {
		t.Fatalf("after the replay the receiver printed:\n%s\nbefore:\n%s", got, before)
	}

	// A receiver with another secret refuses tokenline's deliveries.
	other, err := NewReceiver(webhook.NewSecret(), out)
	if err != nil {
		t.Fatal(err)
	}
	var h2 http.Handler = other
	handler.Store(&h2)
	conn3, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor("a 401 in the delivery log", func() bool {
		log, err := m.Webhooks.Log(ctx, w.ID)
		for _, a := range log {
			if err == nil && a.Connection == conn3.ID && a.Status == http.StatusUnauthorized && a.Outcome == "failed" {
				return true
			}
		}
		return false
	})
	if strings.Contains(out.String(), conn3.ID) {
		t.Fatalf("a delivery with another secret was printed:\n%s", out.String())
	}
}
