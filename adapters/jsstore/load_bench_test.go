package jsstore_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

// BenchmarkLoad measures reading one connection of loadPerConn events among
// many: the stream holds TOKENLINE_BENCH_MESSAGES messages (default
// 1,000,000; e.g. TOKENLINE_BENCH_MESSAGES=200000 for a quicker run), the
// events of connections of loadPerConn chained events each, interleaved
// (round robin), so that the connection read is spread over the whole
// stream, on a file-backed stream created as production creates it. The
// stream is built with asynchronous publishes (about 10 s per million).
// Every sub-benchmark runs tokenline's operation and its baseline in turn,
// in the same loop, and prints both medians and their ratio:
//
//   - cached: Load of a connection the store has cached (one direct get of
//     the subject's last message to check it is current), against that
//     direct get alone (jetstream's GetLastMsgForSubject).
//
//   - cold: Load by a store that has never seen the connection (the
//     subject's last sequence, then its events by batched direct get,
//     decoded and folded), against GetLastMsgForSubject. Target: <= 3x.
//
//   - seeded: Load by a store that has not cached the connection, seeded as
//     production seeds it (Config.Seed: the status projection's confirmed
//     aggregate, which the projection folded from the stream), against
//     GetLastMsgForSubject: the cold Load of a running instance, which
//     reads the events only when the projection is behind. Target: <= 3x.
//
//   - audit: the audit query of the connection (projections.AuditEvents,
//     as GET /v1/connections/{id}/events runs it), against a raw ordered
//     consumer filtered on the subject reading the same messages without
//     decoding them. Target: <= 1.2x.
//
//     go test -run '^$' -bench Load -benchtime 400x ./adapters/jsstore/
func BenchmarkLoad(b *testing.B) {
	const loadPerConn = 50
	total := benchSize(1_000_000, 2000)
	if v := os.Getenv("TOKENLINE_BENCH_MESSAGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2*loadPerConn {
			b.Fatalf("TOKENLINE_BENCH_MESSAGES=%q: want a number of messages >= %d", v, 2*loadPerConn)
		}
		total = n
	}
	srv := natstest.StartOn(b, b.TempDir(), -1)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	st, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ids := publishInterleaved(b, st.JetStream(), total/loadPerConn, loadPerConn)
	stream, err := st.JetStream().Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		b.Fatal(err)
	}
	target, other := ids[len(ids)/2], ids[len(ids)/2+1]
	lastMsg := func(id string) {
		if _, err := stream.GetLastMsgForSubject(ctx, events.Subject(id)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cached", func(b *testing.B) {
		if _, err := st.Load(ctx, target); err != nil {
			b.Fatal(err)
		}
		interleave(b, "cached Load", "GetLastMsgForSubject", func() {
			if _, err := st.Load(ctx, target); err != nil {
				b.Fatal(err)
			}
		}, func() { lastMsg(target) })
	})
	b.Run("cold", func(b *testing.B) {
		// A store that caches one aggregate, loading two connections of the
		// same shape in turn: every Load is cold.
		cold, err := jsstore.Open(ctx, nc, jsstore.Config{CacheSize: 1})
		if err != nil {
			b.Fatal(err)
		}
		pair, i := [2]string{target, other}, 0
		interleave(b, "cold Load", "GetLastMsgForSubject", func() {
			c, err := cold.Load(ctx, pair[i%2])
			if err != nil || c.Events != loadPerConn {
				b.Fatalf("%v %d", err, c.Events)
			}
			i++
		}, func() { lastMsg(pair[i%2]) })
	})
	b.Run("seeded", func(b *testing.B) {
		// The projection's aggregates, as Status.Confirmed returns them.
		confirmed := map[string]domain.Connection{}
		for _, id := range []string{target, other} {
			c, err := st.Load(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			confirmed[id] = c
		}
		seeded, err := jsstore.Open(ctx, nc, jsstore.Config{CacheSize: 1, Seed: func(id string) (domain.Connection, bool) {
			c, ok := confirmed[id]
			return c.Clone(), ok
		}})
		if err != nil {
			b.Fatal(err)
		}
		pair, i := [2]string{target, other}, 0
		interleave(b, "seeded cold Load", "GetLastMsgForSubject", func() {
			c, err := seeded.Load(ctx, pair[i%2])
			if err != nil || c.Events != loadPerConn {
				b.Fatalf("%v %d", err, c.Events)
			}
			i++
		}, func() { lastMsg(pair[i%2]) })
	})
	b.Run("audit", func(b *testing.B) {
		interleave(b, "audit query", "raw filtered consumer", func() {
			n := 0
			err := projections.AuditEvents(ctx, st, projections.AuditQuery{ConnectionID: target}, func(domain.Event, time.Time) error {
				n++
				return nil
			})
			if err != nil || n != loadPerConn {
				b.Fatalf("%v %d", err, n)
			}
		}, func() {
			cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Subject(target)}})
			if err != nil {
				b.Fatal(err)
			}
			batch, err := cons.Fetch(loadPerConn)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for range batch.Messages() {
				n++
			}
			if batch.Error() != nil || n != loadPerConn {
				b.Fatalf("%v %d", batch.Error(), n)
			}
		})
	})
}

// interleave runs op and its baseline in turn b.N times each, timing each
// call, and reports and prints both medians and their ratio.
func interleave(b *testing.B, name, baseName string, op, base func()) {
	b.Helper()
	ops, bases := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	op() // warm up both
	base()
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		op()
		ops = append(ops, time.Since(t))
		t = time.Now()
		base()
		bases = append(bases, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(ops)
	slices.Sort(bases)
	p50, q50 := ops[len(ops)/2], bases[len(bases)/2]
	ratio := float64(p50) / float64(q50)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(q50.Microseconds()), "baseline-p50-µs")
	b.ReportMetric(ratio, "x-baseline")
	fmt.Printf("%s: p50 %s (p90 %s); %s: p50 %s (p90 %s); ratio %.2fx (%d each)\n", name, p50.Round(time.Microsecond),
		ops[len(ops)*9/10].Round(time.Microsecond), baseName, q50.Round(time.Microsecond), bases[len(bases)*9/10].Round(time.Microsecond), ratio, b.N)
}

// publishInterleaved publishes conns connections of perConn chained events
// each (connection.created, then connection.updated), round robin, with
// asynchronous publishes carrying the headers the store's appends carry, and
// returns the connection ids.
func publishInterleaved(b *testing.B, js jetstream.JetStream, conns, perConn int) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	now := start.UTC()
	ids := make([]string, conns)
	heads := make([]domain.ChainHead, conns)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	wait := func() {
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("publish timed out")
		}
	}
	for n := range perConn {
		for i, id := range ids {
			var p domain.Payload = domain.ConnectionUpdated{Config: map[string]string{"team": "finance", "round": strconv.Itoa(n)}}
			if n == 0 {
				p = domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"team": "finance"}}
			}
			e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: now, Actor: "instance/bench", Payload: p}
			events.Chain(&e, heads[i])
			body, err := events.Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			heads[i].Hash = events.HashOf(body)
			m := nats.NewMsg(events.Subject(id))
			m.Data = body
			m.Header.Set(jetstream.MsgIDHeader, e.ID)
			if _, err := js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
			if (n*conns+i)%2000 == 1999 { // within the client's limit on outstanding publishes
				wait()
			}
		}
	}
	wait()
	fmt.Printf("setup: published %d messages (%d connections of %d events) in %s\n", conns*perConn, conns, perConn, time.Since(start).Round(time.Millisecond))
	return ids
}
