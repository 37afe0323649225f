package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// rawStream returns every message of the stream, headers and data.
func rawStream(t *testing.T, in *instance) [][]byte {
	t.Helper()
	js := in.Store.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := in.Store.Stream().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, in.Store.StreamName(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for uint64(len(out)) < info.State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for k, vs := range m.Headers() {
			for _, v := range vs {
				b.WriteString(k + ": " + v + "\n")
			}
		}
		b.Write(m.Data())
		out = append(out, b.Bytes())
	}
	return out
}

// A whole lifecycle — authorise, rotate through refreshes, API rejection,
// revocation, terminal failure, invalidation, reauthorisation — and a grep of
// the entire stream and every log line finds no access token, refresh token,
// client secret, PKCE verifier or state value.
func TestNoSecretsInStreamOrLogs(t *testing.T) {
	in := start(t, nil)
	secrets := map[string]string{"client secret": in.Sandbox.ClientSecret()}
	collect := func(id string) {
		if toks, err := in.Vault.Get(ctxT(t), id); err == nil {
			secrets["access token "+domain.Fingerprint(toks.AccessToken)] = toks.AccessToken
			secrets["refresh token "+domain.Fingerprint(toks.RefreshToken)] = toks.RefreshToken
		}
	}
	authoriseCapturing := func(id string) {
		u, err := in.Lifecycle.StartAuthorisation(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		pu, _ := url.Parse(u)
		secrets["state "+id] = pu.Query().Get("state")
		// Peek at the sealed attempt to learn its verifier, and put it back.
		sum := sha256.Sum256([]byte(pu.Query().Get("state")))
		key := hex.EncodeToString(sum[:])
		at, err := in.Attempts.Take(ctxT(t), key)
		if err != nil {
			t.Fatal(err)
		}
		secrets["verifier "+at.AttemptID] = at.Verifier
		if err := in.Attempts.Put(ctxT(t), key, at); err != nil {
			t.Fatal(err)
		}
		q := consent(t, u)
		secrets["code "+id] = q.Get("code")
		if err := callback(t, in, q); err != nil {
			t.Fatal(err)
		}
		collect(id)
	}
	id := create(t, in, map[string]string{"team": "finance"})
	authoriseCapturing(id)
	for i := 0; i < 3; i++ {
		if err := refreshNow(t, in, id); err != nil {
			t.Fatal(err)
		}
		collect(id)
	}
	if _, err := in.Lifecycle.ReportRejection(ctxT(t), id, lifecycle.Rejection{Status: 401, WWWAuthenticate: `Bearer error="invalid_token"`}); err != nil {
		t.Fatal(err)
	}
	collect(id)
	admin(t, in, "revoke-grants", nil, nil)
	_ = refreshNow(t, in, id)
	if c := load(t, in, id); c.State != domain.StateUnauthenticated {
		t.Fatalf("state %s", c.State)
	}
	authoriseCapturing(id)

	if len(secrets) < 12 {
		t.Fatalf("collected only %d secrets", len(secrets))
	}
	logs := in.logs.String()
	if len(logs) < 1000 {
		t.Fatalf("suspiciously few logs: %d bytes", len(logs))
	}
	msgs := rawStream(t, in)
	if len(msgs) < 15 {
		t.Fatalf("only %d messages in the stream", len(msgs))
	}
	for name, secret := range secrets {
		if len(secret) < 8 {
			t.Fatalf("%s is too short to grep for: %q", name, secret)
		}
		for i, m := range msgs {
			if bytes.Contains(m, []byte(secret)) {
				t.Errorf("%s found in stream message %d", name, i+1)
			}
		}
		if bytes.Contains([]byte(logs), []byte(secret)) {
			t.Errorf("%s found in the logs", name)
		}
	}
	// The events do identify the tokens, by fingerprint.
	toks, _ := in.Vault.Get(ctxT(t), id)
	found := false
	for _, m := range msgs {
		found = found || bytes.Contains(m, []byte(domain.Fingerprint(toks.AccessToken)))
	}
	if !found {
		t.Fatal("no event carries the current access token's fingerprint")
	}
}
