package jsstore_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
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
// published untimed. It prints events/s (the target is >= 200k/s), and,
// interleaved with it, the rate of a raw ordered consumer reading the same
// messages and of the store's Read with the full decode.
//
// With TOKENLINE_NATS_SERVER naming a nats-server binary, the server runs as
// a process of its own, as `tokenline verify` meets it (serve's embedded
// server, or a cluster); otherwise in the benchmark's process, where the
// server's work and verify's share one process's CPU figure.
//
//	go test -run '^$' -bench Verify -benchtime 3x ./adapters/jsstore/
//	go build -o /tmp/nats-server github.com/nats-io/nats-server/v2
//	TOKENLINE_NATS_SERVER=/tmp/nats-server go test -run '^$' -bench Verify -benchtime 3x ./adapters/jsstore/
func BenchmarkVerify(b *testing.B) {
	verifyConns, verifyPerConn := benchSize(2000, 50), 100
	var nc *nats.Conn
	where := "in this process"
	if p := natstest.StartProcess(b); p != nil {
		var err error
		if nc, err = nats.Connect(p.URL); err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		where = "a process of its own"
	} else {
		nc = natstest.Start(b, "").Connect(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
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
	var last []jetstream.PubAckFuture // the last round: each connection's head
	for n := range verifyPerConn {
		last = last[:0]
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
			last = append(last, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("publish timed out")
		}
	}
	// A checkpoint over every head, signed as WriteCheckpoint signs it (whose
	// first run would Load every connection without the status projection
	// the production store is seeded from).
	cp := events.Checkpoint{Number: 1, Prev: events.GenesisHash, Stream: jsstore.DefaultStream, Time: now}
	for i, f := range last {
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
		cp.Heads = append(cp.Heads, events.CheckpointHead{Connection: ids[i], Seq: ack.Sequence, Head: events.FormatHash(heads[i].Hash)})
		cp.UpTo = max(cp.UpTo, ack.Sequence)
	}
	fmt.Printf("verify setup: published %d events in %s\n", verifyConns*verifyPerConn, time.Since(now).Round(time.Millisecond))
	key := signingKey(b)
	body, _, err := events.SignCheckpoint(cp, key)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.CheckpointSubject, body); err != nil {
		b.Fatal(err)
	}
	total := verifyConns * verifyPerConn
	// Each round runs verify, then its baseline: a raw ordered consumer
	// taking every message off the stream without looking at it (what
	// the stream delivers on this machine), then the store's Read with the
	// full decode (what projection rebuilds and verify before its link
	// check read).
	var verifyTime, rawTime, readTime time.Duration
	var verifyCPU, rawCPU, readCPU time.Duration
	b.ResetTimer()
	for range b.N {
		cpu := cpuTime()
		start := time.Now()
		r, err := jsstore.OpenReader(ctx, nc, jsstore.Config{})
		if err != nil {
			b.Fatal(err)
		}
		rep, err := r.Verify(ctx, events.NewVerifier(pubOf(key), ""), "")
		if err != nil || len(rep.Breaks) != 0 || rep.Events != total || rep.Refused != 0 || rep.Checkpoints != 1 {
			b.Fatalf("verify: %v %+v", err, rep)
		}
		verifyTime += time.Since(start)
		verifyCPU += cpuTime() - cpu
		cpu, start = cpuTime(), time.Now()
		rawConsume(b, ctx, js, total)
		rawTime += time.Since(start)
		rawCPU += cpuTime() - cpu
		cpu, start = cpuTime(), time.Now()
		if n, err := st.Read(ctx, events.Range{}, func(*events.Record) error { return nil }); err != nil || n != uint64(total) {
			b.Fatalf("read: %d %v", n, err)
		}
		readTime += time.Since(start)
		readCPU += cpuTime() - cpu
	}
	b.StopTimer()
	rate := float64(total*b.N) / verifyTime.Seconds()
	rawRate := float64(total*b.N) / rawTime.Seconds()
	readRate := float64(total*b.N) / readTime.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(readRate, "read-decode-events/s")
	perEvent := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(total*b.N) / 1e3 }
	fmt.Printf("verify: nats-server in %s\n", where)
	fmt.Printf("verify: %d events of %d connections: %.0f events/s; raw ordered consumer %.0f msgs/s (verify at %.2fx of it); Read with decode %.0f events/s (%d rounds)\n",
		total, verifyConns, rate, rawRate, rate/rawRate, readRate, b.N)
	fmt.Printf("verify: CPU of this process (with the server when it runs here) per event: verify %.2f µs, raw consumer %.2f µs, Read with decode %.2f µs\n",
		perEvent(verifyCPU), perEvent(rawCPU), perEvent(readCPU))
}

// rawConsume takes n messages off the event stream with an ordered consumer,
// without decoding them, and deletes the consumer.
func rawConsume(b *testing.B, ctx context.Context, js jetstream.JetStream, n int) {
	cons, err := js.OrderedConsumer(ctx, jsstore.DefaultStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(8192))
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		if _, err := it.Next(); err != nil {
			b.Fatal(err)
		}
	}
	it.Stop()
	if info := cons.CachedInfo(); info != nil {
		_ = js.DeleteConsumer(ctx, jsstore.DefaultStream, info.Name)
	}
}

// cpuTime is the CPU time this process has used (user and system): on a
// shared machine, a fairer measure of work than the elapsed time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
