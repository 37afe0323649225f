package jsstore_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// AppendThen calls sent once per publish, after the event's request is on
// its way and before it returns: a message published from sent on the
// same connection reaches a subscriber behind the event. An append
// refused before anything is published does not call it; a conflict (the
// request went out) does.
func TestAppendThenCallsSentBehindTheRequest(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st := open(t, nc)
	id := create(t, st)
	peer := srv.Connect(t)
	// One channel for both subjects: the peer's reader fills it in the
	// order the server delivered.
	msgs := make(chan *nats.Msg, 10)
	for _, subj := range []string{events.Subject(id), "after.sent"} {
		if _, err := peer.ChanSubscribe(subj, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := st.Load(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := domain.Decide(&c, domain.StartAuthorisation{AttemptID: "a1", ExpiresAt: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	sent := func() {
		calls.Add(1)
		if err := nc.Publish("after.sent", nil); err != nil {
			t.Error(err)
		}
	}
	e, err := st.AppendThen(ctxT(t), id, c.Version, ev(p), sent)
	if err != nil || e.Seq <= c.Version {
		t.Fatalf("append: %v (seq %d)", err, e.Seq)
	}
	if calls.Load() != 1 {
		t.Fatalf("sent called %d times, want 1 before AppendThen returned", calls.Load())
	}
	for _, want := range []string{events.Subject(id), "after.sent"} {
		select {
		case m := <-msgs:
			if got := m.Subject; got != want {
				t.Fatalf("the subscriber saw %s, want %s (the event first)", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not seen", want)
		}
	}

	// A stale expected version: the request went out, the server refused it.
	if _, err := st.AppendThen(ctxT(t), id, c.Version, ev(p), sent); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append: %v", err)
	}
	if calls.Load() != 2 {
		t.Fatalf("sent called %d times after a refused publish, want 2", calls.Load())
	}
	// Refused before anything was published.
	if _, err := st.AppendThen(ctxT(t), "not.an.id", 0, ev(p), sent); err == nil {
		t.Fatal("an invalid connection id was appended")
	}
	if calls.Load() != 2 {
		t.Fatalf("sent called for an append that published nothing")
	}
}
