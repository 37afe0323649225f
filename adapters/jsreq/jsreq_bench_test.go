package jsreq_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/adapters/natstest"
)

// BenchmarkLastMsg compares reading a subject's last message from the
// stream's leader (LastMsg, $JS.API.STREAM.MSG.GET) with a direct get
// (which any replica may answer) on one in-process server.
//
//	go test -run '^$' -bench LastMsg ./adapters/jsreq/
func BenchmarkLastMsg(b *testing.B) {
	nc := natstest.Start(b, "").Connect(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "B", Subjects: []string{"b.>"}, AllowDirect: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := js.Publish(ctx, "b."+string(rune('a'+i%26)), []byte("x")); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("leader", func(b *testing.B) {
		for b.Loop() {
			if _, err := jsreq.LastMsg(ctx, js, "B", "b.q"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.GetLastMsgForSubject(ctx, "b.q"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
