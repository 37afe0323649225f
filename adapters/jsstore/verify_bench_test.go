package jsstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// BenchmarkVerify measures `tokenline verify`: the whole stream read,
// decoded, hashed and folded per connection, with a signed checkpoint to
// check. The stream holds verifyConns connections of verifyPerConn
// chained events each (a connection created, authorised and refreshed),
// published untimed. It prints events/s; the target is >= 200k/s.
//
//	go test -run '^$' -bench Verify -benchtime 3x ./adapters/jsstore/
func BenchmarkVerify(b *testing.B) {
	const verifyConns, verifyPerConn = 2500, 120
	srv := natstest.Start(b, "")
	nc := srv.Connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	js := st.JetStream()
	now := time.Now().UTC()
	tokens := domain.TokenInfo{AccessTokenFP: "sha256:ae1b75e2580a", RefreshTokenFP: "sha256:9ad50a31977d", AccessTokenExpiresAt: now.Add(time.Hour), Scopes: []string{"users:read"}}
	payload := func(i int) domain.Payload {
		switch {
		case i == 0:
			return domain.ConnectionCreated{Provider: "pleo", Scopes: []string{"users:read"}, Config: map[string]string{"team": "finance"}}
		case i == 1:
			return domain.AuthorisationStarted{AttemptID: "att", Scopes: []string{"users:read"}, ExpiresAt: now.Add(10 * time.Minute)}
		case i == 2:
			return domain.AuthorisationCompleted{AttemptID: "att", Tokens: tokens}
		case i%2 == 1:
			return domain.RefreshStarted{Attempt: 1, LeaseUntil: now.Add(30 * time.Second), Trigger: domain.TriggerSchedule, RefreshTokenFP: tokens.RefreshTokenFP}
		default:
			return domain.RefreshSucceeded{Attempt: 1, Tokens: tokens, Rotated: true}
		}
	}
	ids := make([]string, verifyConns)
	heads := make([]domain.ChainHead, verifyConns)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	var pending []jetstream.PubAckFuture
	for n := range verifyPerConn {
		for i, id := range ids {
			e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: now, Actor: "instance/bench", Payload: payload(n)}
			events.Chain(&e, heads[i])
			body, err := events.Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			heads[i].Hash = events.HashOf(body)
			f, err := js.PublishAsync(events.Subject(id), body)
			if err != nil {
				b.Fatal(err)
			}
			pending = append(pending, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("publish timed out")
		}
	}
	for _, f := range pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	key := signingKey(b)
	if _, err := st.WriteCheckpoint(ctx, key, now); err != nil {
		b.Fatal(err)
	}
	total := verifyConns * verifyPerConn
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		r, err := jsstore.OpenReader(ctx, nc, jsstore.Config{})
		if err != nil {
			b.Fatal(err)
		}
		rep, err := r.Verify(ctx, events.NewVerifier(pubOf(key), ""), "")
		if err != nil || len(rep.Breaks) != 0 || rep.Events != total || rep.Refused != 0 || rep.Checkpoints != 1 {
			b.Fatalf("verify: %v %+v", err, rep)
		}
	}
	rate := float64(total*b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "events/s")
	fmt.Printf("verify: %d events of %d connections, %.0f events/s\n", total, verifyConns, rate)
}
