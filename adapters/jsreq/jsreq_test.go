package jsreq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/adapters/natstest"
)

// Do tries again while the error is worth it, each try with its own
// deadline, and stops at the first success, a final error or the end of
// the caller's context.
func TestDo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tries := 0
	err := jsreq.Do(ctx, func(ctx context.Context) error {
		tries++
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > jsreq.TryTimeout {
			t.Errorf("try %d has no deadline of its own", tries)
		}
		if tries < 3 {
			return nats.ErrNoResponders
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("%d tries: %v", tries, err)
	}
	final := errors.New("final")
	tries = 0
	if err := jsreq.Do(ctx, func(context.Context) error { tries++; return final }); err != final || tries != 1 {
		t.Fatalf("a final error: %d tries, %v", tries, err)
	}
	// A caller's context that ends stops the retries (the number of tries
	// is bounded by the context, not by Do).
	short, cancelShort := context.WithCancel(ctx)
	tries = 0
	err = jsreq.Do(short, func(context.Context) error {
		if tries++; tries == 4 {
			cancelShort()
		}
		return context.DeadlineExceeded
	})
	if !errors.Is(err, context.DeadlineExceeded) || tries != 4 {
		t.Fatalf("after the caller's context ended: %d tries, %v", tries, err)
	}
	for _, e := range []error{nats.ErrTimeout, jetstream.ErrNoStreamResponse, &jetstream.APIError{ErrorCode: 10008}, &jetstream.APIError{ErrorCode: 10164}} {
		if !jsreq.Retryable(e) {
			t.Errorf("%v not retryable", e)
		}
	}
	for _, e := range []error{jetstream.ErrMsgNotFound, &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, context.Canceled} {
		if jsreq.Retryable(e) {
			t.Errorf("%v retryable", e)
		}
	}
}

// LastMsg and Latest (both paths) read a subject's last message and its
// headers; a subject without messages is ErrMsgNotFound.
func TestLastMsg(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(natstest.Start(t, "").Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"one", "two"} {
		m := nats.NewMsg("s.a")
		m.Data = []byte(v)
		m.Header.Set("X-V", v)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	get := map[string]func(subject string) (*jsreq.Msg, error){
		"leader": func(s string) (*jsreq.Msg, error) { return jsreq.LastMsg(ctx, js, "S", s) },
		"direct": func(s string) (*jsreq.Msg, error) { return jsreq.Latest(ctx, js, "S", 1, s) },
	}
	for name, f := range get {
		m, err := f("s.a")
		if err != nil || string(m.Data) != "two" || m.Sequence != 2 || m.Header.Get("X-V") != "two" || m.Subject != "s.a" {
			t.Fatalf("%s: %+v %v", name, m, err)
		}
		if _, err := f("s.none"); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("%s: missing subject: %v", name, err)
		}
	}
	m, err := jsreq.NextMsg(ctx, js, "S", "s.a", 2)
	if err != nil || string(m.Data) != "two" {
		t.Fatalf("next: %+v %v", m, err)
	}
}
