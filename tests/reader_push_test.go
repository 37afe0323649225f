package tests

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/events"
)

// The reader identity may read the streams and make its own consumers on
// them, and write nothing. A push consumer delivers to any subject its
// creator names, as the account: named after a subject another stream
// stores, while someone subscribes to it (a reader's core subscription is
// enough), it would copy one stream into the other. TOKENLINE and
// TOKENLINE_CHECKPOINTS refuse deletes and purges: such copies would stay.
func TestReaderCannotWriteThroughAPushConsumer(t *testing.T) {
	in := start(t, func(c *app.Config) { c.CheckpointInterval = time.Second })
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := in.Store.JetStream()
	count := func(stream string) uint64 {
		t.Helper()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	cps := in.Store.StreamName() + "_CHECKPOINTS"
	eventually(t, 10*time.Second, "a checkpoint", func() bool { return count(cps) > 0 })
	eventsBefore, cpsBefore := count(in.Store.StreamName()), count(cps)

	reader, err := natsserver.Connect(ctx, in.NATSURL(), natsserver.ConnectOptions{CredsFile: in.NATSReaderFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	// Interest on both subjects, where the reader may have it.
	for _, s := range []string{events.Subject(id), events.CheckpointSubject} {
		if _, err := reader.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := reader.Flush(); err != nil {
		t.Fatal(err)
	}
	rjs, err := jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ stream, name, deliver string }{
		{in.Store.StreamName(), "copy-events", events.CheckpointSubject},
		{cps, "copy-checkpoints", events.Subject(id)},
	} {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second) // a refused request is never answered
		_, err := rjs.CreateOrUpdatePushConsumer(cctx, c.stream, jetstream.ConsumerConfig{Durable: c.name, DeliverSubject: c.deliver, AckPolicy: jetstream.AckNonePolicy})
		ccancel()
		t.Logf("reader's push consumer on %s delivering to %s: %v", c.stream, c.deliver, err)
	}
	time.Sleep(2 * time.Second)
	if n := count(in.Store.StreamName()); n != eventsBefore {
		t.Errorf("the event stream went from %d to %d messages", eventsBefore, n)
	}
	if n := count(cps); n > cpsBefore+2 { // checkpoints of their own go on every second (at most one per new event)
		t.Errorf("the checkpoint stream went from %d to %d messages", cpsBefore, n)
	}
}

// The checkpoint stream's subject is literal, and a stream listening on a
// literal subject is itself the interest a push consumer waits for: a
// reader's consumer on the event stream delivering to
// tokenline.checkpoints sends it events with no subscriber at all. Each
// carries the subject sequence its append expected, so the first events of
// a connection land on an empty checkpoint subject unless the message also
// names the stream it is for (Nats-Expected-Stream).
func TestReaderPushConsumerCannotCopyEventsIntoTheCheckpoints(t *testing.T) {
	in := start(t, func(c *app.Config) { c.CheckpointInterval = time.Hour })
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := in.Store.JetStream()
	cps, err := js.Stream(ctx, in.Store.StreamName()+"_CHECKPOINTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cps.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("the checkpoint stream holds %d messages before the test: an append expecting 0 would not land", info.State.Msgs)
	}

	reader, err := natsserver.Connect(ctx, in.NATSURL(), natsserver.ConnectOptions{CredsFile: in.NATSReaderFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rjs, err := jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rjs.CreateOrUpdatePushConsumer(ctx, in.Store.StreamName(), jetstream.ConsumerConfig{
		Durable: "copy-into-checkpoints", DeliverSubject: events.CheckpointSubject, AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	// The consumer delivers every event (the stream is the interest).
	eventually(t, 10*time.Second, "the consumer's deliveries", func() bool {
		ci, err := c.Info(ctx)
		return err == nil && ci.Delivered.Stream >= 3
	})
	time.Sleep(200 * time.Millisecond)
	if info, err = cps.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("a reader's push consumer copied %d events into the checkpoint stream", info.State.Msgs)
	}
}
