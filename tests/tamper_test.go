package tests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/jsstore/tamper"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// offline runs a NATS server on a stopped tokenline's data dir, as someone
// with access to the store could, and hands fn a JetStream context on it.
func offline(t *testing.T, dir string, fn func(js jetstream.JetStream)) {
	t.Helper()
	srv, err := natsserver.Start(ctxT(t), natsserver.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	fn(js)
}

// getJSON calls the API with the instance's token.
func getJSON(t *testing.T, in *instance, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), "GET", in.BaseURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+in.APIToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// runVerify runs `tokenline verify` and returns its output and error.
func runVerify(t *testing.T, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := app.NewRootCommand(ctx, &out, &errOut)
	cmd.SetArgs(append([]string{"verify"}, args...))
	err := cmd.Execute()
	return out.String(), err
}

// Issue 9: someone with write access to the store forges history while
// tokenline is stopped: a connection.deleted "by the user" for connection
// A, a connection.updated with a bad redirect_uri for A, and an alteration
// of B's first event. After the restart nothing acts on them: A is not
// deleted, its tokens are not destroyed and are still handed out, its
// configuration is unchanged; B's tokens are kept; both connections are
// flagged in the API;
// `tokenline verify` names the first broken event of each.
func TestForgedHistoryIsDetectedAndHarmless(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *app.Config) { c.DataDir = dir }
	first := start(t, mod)
	a := create(t, first, map[string]string{"team": "finance"})
	authorise(t, first, a)
	b := create(t, first, map[string]string{"team": "sales"})
	authorise(t, first, b)
	tokenA, _, err := first.Lifecycle.Token(ctxT(t), a)
	if err != nil {
		t.Fatal(err)
	}
	var sk apitypes.SigningKey
	if st := getJSON(t, first, "/v1/signing-key", &sk); st != 200 || !strings.HasPrefix(sk.Key, events.KeyPrefix) || sk.CheckpointSubject != events.CheckpointSubject {
		t.Fatalf("signing key: %d %+v", st, sk)
	}
	seed, err := vault.LoadOrCreateKey(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if events.FormatKey(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)) != sk.Key {
		t.Fatal("the served key is not the data dir's")
	}
	if n, err := first.Store.WriteCheckpoint(ctxT(t), ed25519.NewKeyFromSeed(seed), time.Now()); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d %v", n, err)
	}
	// The reader reads the checkpoints (by direct get: it may not make
	// consumers on their stream).
	if out, err := runVerify(t, "--nats-url", first.NATSURL(), "--creds", first.NATSReaderFile(), "--public-key", sk.Key); err != nil || !strings.Contains(out, "OK: no break") ||
		!strings.Contains(out, "checkpoints; the last: number") {
		t.Fatalf("verify before tampering: %v\n%s", err, out)
	}
	first.Close()

	offline(t, dir, func(js jetstream.JetStream) {
		err := tamper.Rewrite(ctxT(t), js, jsstore.DefaultStream, func(ms []tamper.Msg) []tamper.Msg {
			for i, m := range ms {
				if m.Subject == events.Subject(b) { // B's first event: connection.created
					e, err := events.Decode(m.Data)
					if err != nil {
						t.Fatal(err)
					}
					e.Payload = domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"team": "evil"}}
					ms[i].Data, _ = events.Encode(e)
					break
				}
			}
			deleted, _ := events.Encode(domain.Event{ID: "forged-1", ConnectionID: a, Time: time.Now(), Actor: "user", Payload: domain.ConnectionDeleted{}})
			updated, _ := events.Encode(domain.Event{ID: "forged-2", ConnectionID: a, Time: time.Now(), Actor: "api",
				Payload: domain.ConnectionUpdated{Config: map[string]string{"redirect_uri": "http://evil.example/cb"}},
				Link:    domain.ChainLink{Prev: [32]byte{0xba, 0xd}, Chained: true}})
			return append(ms, tamper.Msg{Subject: events.Subject(a), Data: deleted}, tamper.Msg{Subject: events.Subject(a), Data: updated})
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	second := start(t, mod)
	ca := load(t, second, a)
	if ca.Deleted || ca.State != domain.StateActive || ca.Config["redirect_uri"] != "" || ca.ChainBreaks != 2 {
		t.Fatalf("A after forged events: %+v", ca)
	}
	if st, ok := second.Proj.Status.Connection(a); !ok || st.Deleted || st.ChainBreaks != 2 {
		t.Fatalf("A in the status projection: %+v", st)
	}
	if vaultEmpty(t, second, a) {
		t.Fatal("A's tokens were destroyed because of a forged event")
	}
	if got, _, err := second.Lifecycle.Token(ctxT(t), a); err != nil || got != tokenA {
		t.Fatalf("A's token: same=%v %v", got == tokenA, err)
	}
	var sa, sb apitypes.ConnectionStatus
	getJSON(t, second, "/v1/connections/"+a, &sa)
	getJSON(t, second, "/v1/connections/"+b, &sb)
	// B's altered first event is the root of its chain: it is applied (its
	// own link is the genesis), and every event after it is refused, so B
	// is flagged; its tokens are not touched.
	if !sa.ChainBroken || sa.ChainBreaks != 2 || sa.Deleted || !sb.ChainBroken || sb.ChainBreaks != 2 {
		t.Fatalf("API: A %+v\nB %+v", sa, sb)
	}
	if vaultEmpty(t, second, b) {
		t.Fatal("B's tokens were destroyed")
	}
	var ready apitypes.HealthResponse
	if st := getJSON(t, second, "/readyz", &ready); st != 200 {
		t.Fatalf("readyz: %d %+v", st, ready)
	}

	out, err := runVerify(t, "--nats-url", second.NATSURL(), "--creds", second.NATSReaderFile(), "--public-key", sk.Key)
	if err == nil || !strings.Contains(out, "FIRST BREAK: chain at seq") || !strings.Contains(out, "(connection "+b+")") ||
		!strings.Contains(out, "the event before it was altered") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	out, err = runVerify(t, "--nats-url", second.NATSURL(), "--creds", second.NATSReaderFile(), "--public-key", sk.Key, "--connection", a)
	if err == nil || !strings.Contains(out, "FIRST BREAK: chain at seq") || !strings.Contains(out, "connection.deleted does not extend the chain") ||
		!strings.Contains(out, "no prevhash") {
		t.Fatalf("verify A: %v\n%s", err, out)
	}

	// tokenline goes on: A's next event extends the real head, and the
	// forged ones stay refused.
	if _, err := second.Lifecycle.Update(ctxT(t), a, nil, map[string]string{"team": "ops"}); err != nil {
		t.Fatal(err)
	}
	if c := load(t, second, a); c.Config["team"] != "ops" || c.Deleted {
		t.Fatalf("A after an update: %+v", c)
	}
}

// Issue 9.3: someone relaxes the stream while tokenline is stopped; at
// start-up it leaves the stream as it is and is not ready, saying why.
func TestStreamReconfiguredIsNotReady(t *testing.T) {
	dir := t.TempDir()
	mod := func(c *app.Config) { c.DataDir = dir }
	first := start(t, mod)
	create(t, first, nil)
	first.Close()
	offline(t, dir, func(js jetstream.JetStream) {
		cfg := jsstore.StreamConfig(jsstore.Config{})
		cfg.MaxAge, cfg.MaxMsgs = 24*time.Hour, 100
		if _, err := js.UpdateStream(ctxT(t), cfg); err != nil {
			t.Fatal(err)
		}
	})
	second := start(t, mod)
	var ready apitypes.HealthResponse
	if st := getJSON(t, second, "/readyz", &ready); st != 503 || !strings.Contains(strings.Join(ready.Reasons, " "), "stream: ") ||
		!strings.Contains(strings.Join(ready.Reasons, " "), "max_msgs is 100") {
		t.Fatalf("readyz: %d %+v", st, ready)
	}
	if !strings.Contains(second.logs.String(), "stream configuration changed") {
		t.Fatal("no log line says the stream changed")
	}
	info, err := second.Store.Stream().Info(ctxT(t))
	if err != nil || info.Config.MaxMsgs != 100 {
		t.Fatalf("start-up changed the stream back (it must leave it for the operator): %v %+v", err, info.Config)
	}
}
