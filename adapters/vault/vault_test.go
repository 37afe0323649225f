package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
)

// startJetStream runs a real nats-server with JetStream in the test process
// (file store in a temporary directory) and returns a JetStream client.
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// newVault starts a JetStream server and opens a vault with a new key on it.
func newVault(t *testing.T) (*Vault, jetstream.JetStream) {
	t.Helper()
	js := startJetStream(t)
	return openVault(t, js, newKey(t)), js
}

func openVault(t *testing.T, js jetstream.JetStream, key []byte) *Vault {
	t.Helper()
	v, err := Open(t.Context(), js, Config{Key: key})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return v
}

func rawKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

const (
	connA = "0b6f2c4e-9a51-4f3e-8d2a-6c1e5b7a9f10"
	connB = "7d3a1e9c-2b84-4c6f-a015-3e9d8b2c4a71"
)

var sample = domain.Tokens{
	AccessToken:  "at-SECRET-access-0123456789abcdef",
	RefreshToken: "rt-SECRET-refresh-fedcba9876543210",
	TokenType:    "Bearer",
	Expiry:       time.Date(2031, 4, 5, 6, 7, 8, 9000, time.FixedZone("CEST", 2*3600)),
	Scopes:       []string{"expenses:read", "users:write"},
}

func mustPut(t *testing.T, v *Vault, id string, tok domain.Tokens) {
	t.Helper()
	if err := v.Put(t.Context(), id, tok); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

// rawEntry reads the connection's stored (encrypted) entry from the KV.
func rawEntry(t *testing.T, kv jetstream.KeyValue, id string) jetstream.KeyValueEntry {
	t.Helper()
	e, err := kv.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// expectTokens checks that the vault returns want for the connection.
func expectTokens(t *testing.T, v *Vault, id string, want domain.Tokens, what string) {
	t.Helper()
	if got, err := v.Get(t.Context(), id); err != nil || !sameTokens(got, want) {
		t.Errorf("%s: %v", what, err)
	}
}

func sameTokens(a, b domain.Tokens) bool {
	return a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken &&
		a.TokenType == b.TokenType && a.Expiry.Equal(b.Expiry) && slices.Equal(a.Scopes, b.Scopes)
}

// assertNoSecret fails if s contains a token of sample or key material.
func assertNoSecret(t *testing.T, s string, key []byte) {
	t.Helper()
	for _, secret := range []string{sample.AccessToken, sample.RefreshToken, "SECRET", hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key)} {
		if strings.Contains(s, secret) {
			t.Errorf("%q leaks a secret", s)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := t.Context()
	v, _ := newVault(t)
	mustPut(t, v, connA, sample)
	got, err := v.Get(ctx, connA)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !sameTokens(got, sample) {
		t.Errorf("round trip changed the tokens") // %v would be redacted anyway
	}
	if got.Expiry.Location() != time.UTC {
		t.Errorf("expiry location = %v, want UTC", got.Expiry.Location())
	}

	// Minimal set: access token only, no expiry, no scopes.
	min := domain.Tokens{AccessToken: "only-access"}
	mustPut(t, v, connB, min)
	if got, err := v.Get(ctx, connB); err != nil || !sameTokens(got, min) || !got.Expiry.IsZero() {
		t.Errorf("minimal round trip: %v, expiry %v", err, got.Expiry)
	}

	if _, err := v.Get(ctx, "5f0c7e1a-0000-4000-8000-000000000000"); !errors.Is(err, domain.ErrNoTokens) {
		t.Errorf("Get of unknown connection: err = %v, want ErrNoTokens", err)
	}
	if err := v.Put(ctx, connA, domain.Tokens{TokenType: "Bearer"}); err == nil {
		t.Error("Put without any token accepted")
	}
}

func TestStoredValueIsCiphertext(t *testing.T) {
	js := startJetStream(t)
	key := newKey(t)
	v := openVault(t, js, key)
	kv := rawKV(t, js)

	mustPut(t, v, connA, sample)
	e1 := rawEntry(t, kv, connA)
	raw := e1.Value()
	if raw[0] != formatVersion {
		t.Errorf("version byte = %d, want %d", raw[0], formatVersion)
	}
	for _, tok := range []string{sample.AccessToken, sample.RefreshToken} {
		for _, form := range []string{
			tok,
			base64.StdEncoding.EncodeToString([]byte(tok)),
			base64.RawStdEncoding.EncodeToString([]byte(tok)),
			base64.URLEncoding.EncodeToString([]byte(tok)),
			hex.EncodeToString([]byte(tok)),
		} {
			if bytes.Contains(raw, []byte(form)) {
				t.Errorf("stored value contains a token (as %q)", form)
			}
		}
	}
	for _, clue := range []string{"SECRET", "access_token", "Bearer", "expenses"} {
		if bytes.Contains(raw, []byte(clue)) {
			t.Errorf("stored value contains plaintext %q", clue)
		}
	}

	// The same tokens written again encrypt differently (fresh nonce).
	mustPut(t, v, connA, sample)
	e2 := rawEntry(t, kv, connA)
	if bytes.Equal(e2.Value()[9:9+nonceSize], raw[9:9+nonceSize]) || bytes.Equal(e2.Value(), raw) {
		t.Error("nonce reused across writes")
	}
}

func TestWrongKeyCannotRead(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	key := newKey(t)
	mustPut(t, openVault(t, js, key), connA, sample)
	other := newKey(t)
	got, err := openVault(t, js, other).Get(ctx, connA)
	if !errors.Is(err, ErrUndecryptable) {
		t.Fatalf("Get with another key: err = %v, want ErrUndecryptable", err)
	}
	if got.AccessToken != "" || got.RefreshToken != "" {
		t.Error("tokens returned alongside the error")
	}
	msg := err.Error()
	if !strings.Contains(msg, connA) {
		t.Errorf("error %q does not name the connection", msg)
	}
	assertNoSecret(t, msg, key)
	assertNoSecret(t, msg, other)
}

func TestValueMovedToAnotherConnectionFails(t *testing.T) {
	ctx := t.Context()
	v, js := newVault(t)
	kv := rawKV(t, js)
	mustPut(t, v, connA, sample)
	e := rawEntry(t, kv, connA)
	if _, err := kv.Put(ctx, connB, e.Value()); err != nil {
		t.Fatal(err)
	}
	_, err := v.Get(ctx, connB)
	if !errors.Is(err, ErrUndecryptable) || !strings.Contains(err.Error(), connB) {
		t.Errorf("Get of a value copied from %s: err = %v, want ErrUndecryptable naming %s", connA, err, connB)
	}

	// Tampering is detected too, as are foreign or truncated values.
	for name, bad := range map[string][]byte{
		"flipped bit": func() []byte { b := bytes.Clone(e.Value()); b[len(b)-1] ^= 1; return b }(),
		"version 2":   append([]byte{2}, e.Value()[1:]...),
		"short":       e.Value()[:10],
		"plaintext":   []byte(`{"access_token":"x"}`),
	} {
		if _, err := kv.Put(ctx, connB, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Get(ctx, connB); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("%s: err = %v, want ErrUndecryptable", name, err)
		}
	}
	expectTokens(t, v, connA, sample, "original value damaged")
}

func TestDeletePurgesEveryRevision(t *testing.T) {
	ctx := t.Context()
	v, js := newVault(t)
	kv := rawKV(t, js)

	mustPut(t, v, connA, sample)
	first, _ := kv.Get(ctx, connA)
	mustPut(t, v, connA, domain.Tokens{AccessToken: "at-2", RefreshToken: "rt-2"})
	second, _ := kv.Get(ctx, connA)

	if err := v.Delete(ctx, connA); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := v.Get(ctx, connA); !errors.Is(err, domain.ErrNoTokens) {
		t.Errorf("Get after Delete: err = %v, want ErrNoTokens", err)
	}
	hist, err := kv.History(ctx, connA)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatal(err)
	}
	for _, h := range hist {
		if h.Operation() == jetstream.KeyValuePut || len(h.Value()) > 0 {
			t.Errorf("history keeps revision %d (%s, %d bytes)", h.Revision(), h.Operation(), len(h.Value()))
		}
	}
	// Nothing is left in the underlying stream either.
	st, err := js.Stream(ctx, "KV_"+DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []uint64{first.Revision(), second.Revision()} {
		if m, err := st.GetMsg(ctx, rev); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("stream still holds revision %d: %v (%d bytes)", rev, err, len(m.Data))
		}
	}

	// Deleting nothing, or twice, is fine.
	if err := v.Delete(ctx, connA); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if err := v.Delete(ctx, connB); err != nil {
		t.Errorf("Delete of a connection without tokens: %v", err)
	}
	// And the connection can get tokens again.
	mustPut(t, v, connA, sample)
	expectTokens(t, v, connA, sample, "Put after Delete")
}

func TestPutReplacesBothTokens(t *testing.T) {
	ctx := t.Context()
	v, js := newVault(t)
	mustPut(t, v, connA, sample)
	next := domain.Tokens{AccessToken: "at-new", RefreshToken: "rt-new", TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}
	mustPut(t, v, connA, next)
	if got, err := v.Get(ctx, connA); err != nil || !sameTokens(got, next) {
		t.Errorf("after replacing: %v, access changed %v, refresh changed %v", err, got.AccessToken == next.AccessToken, got.RefreshToken == next.RefreshToken)
	}
	// No merging: a set without refresh token clears the old one.
	accessOnly := domain.Tokens{AccessToken: "at-3"}
	mustPut(t, v, connA, accessOnly)
	expectTokens(t, v, connA, accessOnly, "refresh token survived a replacing Put")
	hist, err := rawKV(t, js).History(ctx, connA)
	if err != nil || len(hist) != 1 {
		t.Errorf("history holds %d revisions (%v), want 1", len(hist), err)
	}
}

func TestInvalidConnectionIDs(t *testing.T) {
	ctx := t.Context()
	v, _ := newVault(t)
	for _, id := range []string{"", "a.b", "a*", "a>", "*", ">", "a b", " ", "a/b", "a=b", "a\nb", "ä", strings.Repeat("x", 129)} {
		if err := v.Put(ctx, id, sample); !errors.Is(err, ErrInvalidConnectionID) {
			t.Errorf("Put(%q): err = %v", id, err)
		}
		if _, err := v.Get(ctx, id); !errors.Is(err, ErrInvalidConnectionID) {
			t.Errorf("Get(%q): err = %v", id, err)
		}
		if err := v.Delete(ctx, id); !errors.Is(err, ErrInvalidConnectionID) {
			t.Errorf("Delete(%q): err = %v", id, err)
		}
	}
	for _, id := range []string{"conn_1", "ABC-def", strings.Repeat("x", 128)} {
		if err := v.Put(ctx, id, sample); err != nil {
			t.Errorf("Put(%q): %v", id, err)
		}
	}
}

func TestOpen(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := Open(ctx, js, Config{Key: make([]byte, n)}); err == nil {
			t.Errorf("Open with a %d-byte key succeeded", n)
		}
	}
	if _, err := Open(ctx, nil, Config{Key: newKey(t)}); err == nil {
		t.Error("Open with nil JetStream succeeded")
	}
	if _, err := Open(ctx, js, Config{Key: newKey(t), Replicas: -1}); err == nil {
		t.Error("Open with negative replicas succeeded")
	}

	key := newKey(t)
	v := openVault(t, js, key)
	mustPut(t, v, connA, sample)
	clear(key) // Open copied the key
	if _, err := v.Get(ctx, connA); err != nil {
		t.Errorf("vault depends on the caller's key slice: %v", err)
	}

	st, err := rawKV(t, js).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.BackingStore() != "JetStream" {
		t.Errorf("history %d, backing %s", st.History(), st.BackingStore())
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 {
		t.Errorf("storage %v, replicas %d", info.Config.Storage, info.Config.Replicas)
	}

	// Reopening the existing bucket (create or update) keeps its contents,
	// and a custom bucket is separate.
	if got, err := openVault(t, js, newKey(t)).Get(ctx, connA); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("reopen with another key: %v, %v", got.AccessToken == "", err)
	}
	custom, err := Open(ctx, js, Config{Bucket: "other_tokens", Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := custom.Get(ctx, connA); !errors.Is(err, domain.ErrNoTokens) {
		t.Errorf("custom bucket shares keys: %v", err)
	}
	if _, err := Open(ctx, js, Config{Bucket: "bad.name", Key: newKey(t)}); err == nil {
		t.Error("invalid bucket name accepted")
	}
}

func TestConcurrentPutGet(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	v, _ := newVault(t)
	ids := []string{connA, connB, "c3", "c4"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				id := ids[(w+i)%len(ids)]
				if (w+i)%3 == 0 {
					n := fmt.Sprintf("%d-%d", w, i)
					if err := v.Put(ctx, id, domain.Tokens{AccessToken: "at-" + n, RefreshToken: "rt-" + n}); err != nil {
						errs <- err
						return
					}
					continue
				}
				got, err := v.Get(ctx, id)
				if errors.Is(err, domain.ErrNoTokens) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				// Both tokens always come from the same Put.
				if strings.TrimPrefix(got.AccessToken, "at-") != strings.TrimPrefix(got.RefreshToken, "rt-") {
					errs <- fmt.Errorf("torn token set for %s", id)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
