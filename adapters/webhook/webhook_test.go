package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
)

// receiver is a real HTTP receiver on loopback that verifies every
// signature and de-duplicates on webhook-id, recording each connection's
// events in the order they first arrived.
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret atomic.Pointer[string]
	// status, if set, answers a status for a connection's event (0: 204).
	status atomic.Pointer[func(conn string) int]

	mu       sync.Mutex
	seen     map[string]bool
	order    map[string][]int // connection -> the events' n, first arrivals
	receipts int
	badSig   int
	total    atomic.Int64
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{t: t, seen: map[string]bool{}, order: map[string][]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

type body struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Data    struct {
		N int `json:"n"`
	} `json:"data"`
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	var ev body
	_ = json.Unmarshal(b, &ev)
	if f := r.status.Load(); f != nil {
		if code := (*f)(ev.Subject); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	id := req.Header.Get("webhook-id")
	s := r.secret.Load()
	err := webhook.Verify(*s, id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), b, time.Now(), 5*time.Minute)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.receipts++
	if err != nil || id != ev.ID || req.Header.Get("Content-Type") != "application/cloudevents+json" {
		r.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !r.seen[id] {
		r.seen[id] = true
		r.order[ev.Subject] = append(r.order[ev.Subject], ev.Data.N)
		r.total.Add(1)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setStatus(f func(conn string) int) { r.status.Store(&f) }

// wait waits (bounded) until n distinct events arrived.
func (r *receiver) wait(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < 6000 && r.total.Load() < int64(n); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.total.Load(); got < int64(n) {
		t.Fatalf("receiver got %d distinct events, want %d", got, n)
	}
}

// checkOrder checks that each connection's events arrived as 0..n-1.
func (r *receiver) checkOrder(t testing.TB, conns []string, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.badSig > 0 {
		t.Errorf("%d requests with a bad signature or id", r.badSig)
	}
	for _, c := range conns {
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(r.order[c], want) {
			t.Errorf("connection %s: events arrived as %v, want %v", c, r.order[c], want)
		}
	}
}

type env struct {
	mu   sync.Mutex
	last map[string]uint64 // connection -> last sequence
	srv  *natstest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	key  []byte
}

func newEnv(t testing.TB) *env {
	s := natstest.Start(t, "")
	nc := s.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TOKENLINE", Subjects: []string{"tokenline.conn.*"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	return &env{srv: s, nc: nc, js: js, key: make([]byte, 32), last: map[string]uint64{}}
}

// publish appends n events of a connection, numbered from 0.
func (e *env) publish(t testing.TB, conn string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		typ := "tokenline.refresh.succeeded"
		if i == 0 {
			typ = "tokenline.connection.created"
		}
		b := fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/tokenline","type":%q,"subject":%q,"time":"2026-12-02T00:00:00Z","datacontenttype":"application/json","schemaversion":1,"data":{"n":%d}}`,
			uuid.NewString(), typ, conn, i)
		// As the store appends: with the subject's expected last sequence.
		e.mu.Lock()
		ack, err := e.js.Publish(context.Background(), "tokenline.conn."+conn, b, jetstream.WithExpectLastSequencePerSubject(e.last[conn]))
		if err == nil {
			e.last[conn] = ack.Sequence
		}
		e.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) open(t testing.TB, mod func(*webhook.Config)) *webhook.Manager {
	t.Helper()
	cfg := webhook.Config{SecretsKey: e.key, Safety: webhook.Safety{AllowHTTP: true, AllowPrivate: true},
		BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, MaxAttempts: 1000, AckWait: 2 * time.Second,
		PinnedTTL: 2 * time.Second, Instance: "test"}
	if mod != nil {
		mod(&cfg)
	}
	m, err := webhook.Open(context.Background(), e.js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func subscribe(t testing.TB, m *webhook.Manager, r *receiver, req webhook.CreateRequest) domain.Webhook {
	t.Helper()
	req.URL = r.srv.URL + "/hook"
	w, secret, err := m.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r.secret.Store(&secret)
	return w
}

func conns(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = uuid.NewString()
	}
	return out
}

func TestDeliversEveryEventOnceInOrderSigned(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	m := e.open(t, nil)
	subscribe(t, m, r, webhook.CreateRequest{})
	cs := conns(4)
	for _, c := range cs {
		e.publish(t, c, 0, 25)
	}
	r.wait(t, 100)
	r.checkOrder(t, cs, 25)
}

func TestFailingConnectionDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cs := conns(3)
	bad := cs[0]
	r.setStatus(func(c string) int {
		if c == bad {
			return http.StatusInternalServerError
		}
		return 0
	})
	m := e.open(t, nil)
	subscribe(t, m, r, webhook.CreateRequest{})
	for _, c := range cs {
		e.publish(t, c, 0, 10)
	}
	// The two healthy connections' events all arrive while every attempt
	// for the failing one is refused.
	r.wait(t, 20)
	r.mu.Lock()
	got := len(r.order[bad])
	r.mu.Unlock()
	if got != 0 {
		t.Fatalf("the failing connection had %d events accepted", got)
	}
	r.checkOrder(t, cs[1:], 10)
	r.setStatus(func(string) int { return 0 })
	r.wait(t, 30)
	r.checkOrder(t, cs, 10)
}

// More failing connections than workers: a connection whose attempt failed
// waits for its retry in a goroutine of its own, not in a worker, so the
// healthy connections' events all go through meanwhile (with the retries a
// second apart, a worker held by each failing connection would hold them
// back for the whole test).
func TestFailingConnectionsDoNotHoldTheWorkers(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cs := conns(6)
	bad := map[string]bool{cs[0]: true, cs[1]: true, cs[2]: true, cs[3]: true}
	var failing atomic.Bool
	failing.Store(true)
	r.setStatus(func(c string) int {
		if failing.Load() && bad[c] {
			return http.StatusInternalServerError
		}
		return 0
	})
	m := e.open(t, func(c *webhook.Config) { c.Concurrency = 2; c.BackoffBase, c.BackoffMax = time.Second, time.Second })
	subscribe(t, m, r, webhook.CreateRequest{})
	for i := range 10 {
		for _, c := range cs {
			e.publish(t, c, i, 1)
		}
	}
	r.wait(t, 20)
	r.mu.Lock()
	for c := range bad {
		if n := len(r.order[c]); n != 0 {
			t.Errorf("failing connection %s had %d events accepted", c, n)
		}
	}
	r.mu.Unlock()
	r.checkOrder(t, cs[4:], 10)
	failing.Store(false)
	r.wait(t, 60)
	r.checkOrder(t, cs, 10)
}

func TestReceiverDownThenBackLosesNothing(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	r.setStatus(func(string) int { return http.StatusServiceUnavailable })
	m := e.open(t, nil)
	subscribe(t, m, r, webhook.CreateRequest{})
	cs := conns(3)
	for _, c := range cs {
		e.publish(t, c, 0, 10)
	}
	time.Sleep(200 * time.Millisecond) // let attempts fail (not an assertion)
	r.setStatus(func(string) int { return 0 })
	r.wait(t, 30)
	r.checkOrder(t, cs, 10)
}

func TestRestartMidDeliveryLosesNothing(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	var slow atomic.Bool
	slow.Store(true)
	r.setStatus(func(string) int {
		if slow.Load() {
			time.Sleep(2 * time.Millisecond)
		}
		return 0
	})
	m := e.open(t, nil)
	w := subscribe(t, m, r, webhook.CreateRequest{})
	cs := conns(5)
	for _, c := range cs {
		e.publish(t, c, 0, 40)
	}
	for i := 0; i < 1000 && r.total.Load() < 20; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	m.Close() // mid-delivery
	m2 := e.open(t, nil)
	if got, err := m2.Get(w.ID); err != nil || got.State != domain.WebhookActive {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	slow.Store(false)
	r.wait(t, 200)
	r.checkOrder(t, cs, 40)
}

func TestTwoInstancesDeliverEachEventOnce(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	m1 := e.open(t, func(c *webhook.Config) { c.Instance = "a" })
	m2 := e.open(t, func(c *webhook.Config) { c.Instance = "b" })
	w := subscribe(t, m1, r, webhook.CreateRequest{})
	for i := 0; i < 500; i++ {
		if _, err := m2.Get(w.ID); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := m2.Get(w.ID); err != nil {
		t.Fatal("the second instance never saw the subscription")
	}
	cs := conns(4)
	for _, c := range cs {
		e.publish(t, c, 0, 50)
	}
	r.wait(t, 200)
	r.checkOrder(t, cs, 50)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.receipts != 200 {
		t.Fatalf("receiver got %d requests for 200 events: some were delivered twice", r.receipts)
	}
}

func TestDeadLetterAfterBoundedAttempts(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cs := conns(2)
	r.setStatus(func(c string) int {
		if c == cs[0] {
			return http.StatusBadRequest
		}
		return 0
	})
	m := e.open(t, func(c *webhook.Config) { c.MaxAttempts = 3 })
	w := subscribe(t, m, r, webhook.CreateRequest{})
	e.publish(t, cs[0], 0, 2)
	e.publish(t, cs[1], 0, 2)
	r.wait(t, 2)
	var dl []webhook.DeadLetter
	for i := 0; i < 500 && len(dl) < 2; i++ {
		var err error
		if dl, err = m.DeadLetters(context.Background(), w.ID, 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(dl) != 2 || dl[0].Attempts != 3 || dl[0].LastStatus != 400 || dl[0].Connection != cs[0] {
		t.Fatalf("dead letters: %+v", dl)
	}
	// Every attempt is logged (in batches, written within a fraction of a
	// second): 3 per event of the failing connection, the last one
	// dead_letter, and the other connection's 2 deliveries.
	var log []webhook.Attempt
	for i := 0; i < 500 && len(log) < 8; i++ {
		var err error
		if log, err = m.Log(context.Background(), w.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	outcomes := map[string]int{}
	for _, a := range log {
		outcomes[a.Outcome]++
	}
	if len(log) != 8 || outcomes["failed"] != 4 || outcomes["dead_letter"] != 2 || outcomes["delivered"] != 2 {
		t.Fatalf("log: %d entries, outcomes %v", len(log), outcomes)
	}
}

func TestGoneDisablesAndResumeDelivers(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	r.setStatus(func(string) int { return http.StatusGone })
	m := e.open(t, nil)
	w := subscribe(t, m, r, webhook.CreateRequest{})
	cs := conns(1)
	e.publish(t, cs[0], 0, 5)
	for i := 0; i < 1000; i++ {
		if got, _ := m.Get(w.ID); got.State == domain.WebhookDisabled {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, _ := m.Get(w.ID); got.State != domain.WebhookDisabled || got.Reason != "gone" {
		t.Fatalf("after 410: %+v", got)
	}
	r.setStatus(func(string) int { return 0 })
	if _, err := m.Resume(context.Background(), w.ID, "test"); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 5)
	r.checkOrder(t, cs, 5)
}

func TestFiltersAndRotation(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	m := e.open(t, nil)
	cs := conns(2)
	w := subscribe(t, m, r, webhook.CreateRequest{EventTypes: []string{"connection.created"}, Connection: cs[1]})
	e.publish(t, cs[0], 0, 3)
	e.publish(t, cs[1], 0, 3)
	r.wait(t, 1)
	_, secret, err := m.RotateSecret(context.Background(), w.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get(w.ID); got.SecretFingerprint != webhook.Fingerprint(secret) {
		t.Fatal("fingerprint not rotated")
	}
	r.secret.Store(&secret)
	cs2 := uuid.NewString()
	e.publish(t, cs[1], 3, 1) // not a created event: filtered out
	e.publish(t, cs2, 0, 1)   // another connection: filtered out
	res, err := m.Replay(context.Background(), w.ID, time.Now().Add(-time.Hour), time.Time{})
	if err != nil || res.Matched != 1 || res.Delivered != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) != 1 || !slices.Equal(r.order[cs[1]], []int{0}) || r.badSig != 0 {
		t.Fatalf("filtered deliveries: %v (bad %d)", r.order, r.badSig)
	}
}

func TestCommandsRefuseBadInput(t *testing.T) {
	e := newEnv(t)
	m := e.open(t, func(c *webhook.Config) { c.Safety = webhook.Safety{} })
	ctx := context.Background()
	for _, u := range []string{"http://example.com/x", "https://127.0.0.1/x", "https://localhost/x", "https://u:p@example.com/", "ftp://x", "not a url", "https://10.1.2.3/"} {
		if _, _, err := m.Create(ctx, webhook.CreateRequest{URL: u}); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	if _, _, err := m.Create(ctx, webhook.CreateRequest{URL: "https://example.com/", EventTypes: []string{"nope"}}); err == nil {
		t.Error("unknown event type accepted")
	}
	if len(m.List()) != 0 {
		t.Fatal("a refused request recorded a subscription")
	}
	w, _, err := m.Create(ctx, webhook.CreateRequest{URL: "https://example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resume(ctx, w.ID, ""); err == nil {
		t.Error("resume of an active subscription accepted")
	}
	if _, err := m.Delete(ctx, w.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pause(ctx, w.ID, ""); err == nil {
		t.Error("pause of a deleted subscription accepted")
	}
}

// The private-target refusal happens when dialling, after resolution.
func TestPrivateTargetRefusedAtDial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c := webhook.Safety{AllowHTTP: true}.Client(time.Second)
	// localhost resolves to loopback: refused by the dialer.
	_, err := c.Get("http://localhost:" + srv.URL[len("http://127.0.0.1:"):])
	if err == nil {
		t.Fatal("dial to loopback accepted")
	}
	// Redirects are not followed.
	red := httptest.NewServer(http.RedirectHandler("https://example.com/", http.StatusFound))
	defer red.Close()
	resp, err := webhook.Safety{AllowHTTP: true, AllowPrivate: true}.Client(time.Second).Get(red.URL)
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("redirect: %v %v", resp, err)
	}
	resp.Body.Close()
}

// The Standard Webhooks specification's own test vector.
func TestSignMatchesTheSpecVector(t *testing.T) {
	key, err := webhook.SecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := webhook.Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if got != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" {
		t.Fatal(got)
	}
	if err := webhook.Verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
		"v1,bogus "+got, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// A delete racing another instance: that instance, not having seen the
// deletion yet, (re)creates the subscription's consumer after the deleting
// one removed it. The sweep (at start, then every minute) deletes it; a
// live subscription's consumer stays.
func TestDeletedSubscriptionsLeftoverConsumerIsSwept(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	ctx := context.Background()
	m := e.open(t, nil)
	live := subscribe(t, m, r, webhook.CreateRequest{})
	gone := subscribe(t, m, r, webhook.CreateRequest{})
	if _, err := m.Delete(ctx, gone.ID, "test"); err != nil {
		t.Fatal(err)
	}
	// As the other instance's late create request would: once the
	// server has finished closing the consumer Delete removed (until then
	// it refuses the name, "consumer closed", JSErrCodeConsumerCreate).
	for i := 0; ; i++ {
		_, err := e.js.CreateOrUpdateConsumer(ctx, "TOKENLINE", jetstream.ConsumerConfig{Durable: webhook.ConsumerPrefix + gone.ID,
			FilterSubject: "tokenline.conn.*", AckPolicy: jetstream.AckExplicitPolicy})
		var apiErr *jetstream.APIError
		if err == nil {
			break
		} else if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeConsumerCreate || i == 200 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 500; i++ { // the live one's deliverer creates its consumer
		if _, err := e.js.Consumer(ctx, "TOKENLINE", webhook.ConsumerPrefix+live.ID); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.open(t, func(c *webhook.Config) { c.Instance = "b" }) // sweeps at start
	if _, err := e.js.Consumer(ctx, "TOKENLINE", webhook.ConsumerPrefix+gone.ID); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the deleted subscription's consumer: %v, want it gone", err)
	}
	if _, err := e.js.Consumer(ctx, "TOKENLINE", webhook.ConsumerPrefix+live.ID); err != nil {
		t.Fatalf("the live subscription's consumer: %v", err)
	}
}

// Delivery's own requests: a redirect is a failed attempt (its target gets
// nothing) and an attempt the receiver does not answer ends at Timeout,
// recorded as "timeout", its connection closed.
func TestDeliveryNeitherFollowsRedirectsNorOutwaitsTimeout(t *testing.T) {
	var followed atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		followed.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()
	var hungUp atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body) // then the server sees the client hang up
		select {                           // never answers within the attempt's Timeout
		case <-r.Context().Done():
			hungUp.Add(1)
		case <-time.After(10 * time.Second):
		}
	}))
	defer recv.Close()
	e := newEnv(t)
	m := e.open(t, func(c *webhook.Config) { c.MaxAttempts = 2; c.Timeout = 200 * time.Millisecond })
	red, _, err := m.Create(context.Background(), webhook.CreateRequest{URL: recv.URL + "/redirect"})
	if err != nil {
		t.Fatal(err)
	}
	slow, _, err := m.Create(context.Background(), webhook.CreateRequest{URL: recv.URL + "/slow"})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, conns(1)[0], 0, 1)
	last := func(id string) webhook.DeadLetter {
		t.Helper()
		for i := 0; i < 1000; i++ {
			dl, err := m.DeadLetters(context.Background(), id, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(dl) > 0 {
				return dl[len(dl)-1]
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no dead letter for %s", id)
		return webhook.DeadLetter{}
	}
	if dl := last(red.ID); dl.LastStatus != http.StatusTemporaryRedirect || dl.Attempts != 2 {
		t.Fatalf("redirecting receiver: %+v", dl)
	}
	if followed.Load() != 0 {
		t.Fatalf("the redirect was followed %d times", followed.Load())
	}
	if dl := last(slow.ID); dl.LastError != "timeout" || dl.Attempts != 2 {
		t.Fatalf("silent receiver: %+v", dl)
	}
	// Each timed-out attempt closed its connection.
	for i := 0; i < 500 && hungUp.Load() < 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if hungUp.Load() != 2 {
		t.Fatalf("the receiver saw %d of 2 timed-out attempts hang up", hungUp.Load())
	}
}
